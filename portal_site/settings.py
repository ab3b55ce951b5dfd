"""The site portal's settings: environment variables prefixed ``FIP_SITE_``, and flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from portal_common.web import allowed_hosts, host_entry


class SiteSettings(BaseSettings):
    """Every setting of the site portal; each is ``FIP_SITE_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="FIP_SITE_", extra="ignore")

    data_dir: Path = Path("site-data")
    """The site's small database (central URL, site_id, refresh token, approvals, the ledger)
    and logs. Never the data: CSVs stay in memory."""
    host: str = "127.0.0.1"
    """The local UI listens here; keep it on this machine."""
    port: int = Field(default=8001, ge=1, le=65535)
    allowed_hosts: str = ""
    """Comma-separated ``name`` or ``name:port`` the UI also answers for (the port defaults to
    ``port``); it always answers 127.0.0.1, localhost and [::1] at ``port``, and the address in
    ``host`` when that is one address. Any other Host header is refused (DNS rebinding)."""
    local_password: SecretStr | None = None
    """The site portal's own password, set on first start when none is stored yet (for
    automation); otherwise the first visit asks for one. Ignored once one is stored."""
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=64)
    min_rows: int = Field(default=10, ge=1)
    """This site answers no job on fewer usable rows than this, whatever the job's min_rows."""
    heartbeat_seconds: float = Field(default=10, gt=0)
    reconnect_max_seconds: float = Field(default=30, gt=0)
    """Reconnection waits grow 1, 2, 4, ... seconds up to this."""
    max_upload_bytes: int = Field(default=1_000_000_000, ge=1)
    """The largest CSV upload: held in memory (at most about 2.5 times its size while read)."""
    max_form_bytes: int = Field(default=1 << 20, ge=1)
    """The largest body of every other request (forms, JSON)."""
    sandbox_memory_mb: int | None = Field(default=None, ge=64)
    """The most memory (MiB of data: its heap and the arrays it makes) the process running an
    uploaded remote half may take; past it, the half fails with MemoryError. Unset: no limit of
    its own (the kernel still ends that process first, not the portal, when memory runs out).
    It holds a copy of the site's table, so allow a few times the table's size."""

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: str) -> str:
        for entry in value.split(","):
            if entry.strip():
                try:
                    host_entry(entry, 1)
                except ValueError as error:
                    raise ValueError(f"FIP_SITE_ALLOWED_HOSTS: {error}") from None
        return value

    @field_validator("local_password")
    @classmethod
    def _password(cls, value: SecretStr | None) -> SecretStr | None:
        from portal_site.local_auth import password_problem

        problem = None if value is None else password_problem(value.get_secret_value())
        if problem:
            raise ValueError(f"FIP_SITE_LOCAL_PASSWORD: {problem}")
        return value

    @property
    def hosts(self) -> frozenset[str]:
        """Every Host header value (``name:port``) the UI answers."""
        extra = [entry for entry in self.allowed_hosts.split(",") if entry.strip()]
        return allowed_hosts(self.port, bound=self.host, extra=extra)

    def prepare(self) -> SiteSettings:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    @property
    def sandbox_memory_bytes(self) -> int | None:
        return None if self.sandbox_memory_mb is None else self.sandbox_memory_mb * 2**20

    @property
    def database(self) -> str:
        return f"sqlite:///{self.data_dir / 'site.db'}"
