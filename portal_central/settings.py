"""Central's settings: environment variables prefixed ``FIP_CENTRAL_``, and a few flags.

The secret key is never a default in code: it is generated on first start and kept in the data
directory (mode 0600).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CentralSettings(BaseSettings):
    """Every setting of the central portal; each is ``FIP_CENTRAL_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="FIP_CENTRAL_", extra="ignore")

    data_dir: Path = Path("central-data")
    """Where the database (SQLite by default), the secret key and the logs live. No data sets."""
    database_url: str | None = None
    """SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db; default SQLite in data_dir."""
    host: str = "127.0.0.1"
    port: int = 8443
    certfile: Path | None = None
    keyfile: Path | None = None
    public_url: str | None = None
    """The address sites and users reach central at, written in mails; default from host/port."""

    site_install: str | None = None
    """What a site passes to ``pip install`` to get ``fip`` (a wheel's URL, ``git+https://...``);
    written in approval mails. Without it the mail says to install from the repository or from
    the wheel the admin sends."""

    smtp_host: str | None = None
    """With no SMTP host, mail goes to the outbox that admins read in the portal."""
    smtp_port: int = 587
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    mail_from: str = "fip@localhost"

    access_token_minutes: int = 15
    refresh_token_days: int = 30
    session_hours: int = 12
    account_free_failures: int = Field(default=5, ge=1)
    """Failed sign-ins for one username before each further attempt must wait."""
    account_max_delay_seconds: float = Field(default=60, ge=0)
    """The longest wait one username's failures impose, whoever made them: kept short, because
    a stranger can make them (the attacker's own address waits far longer)."""
    client_free_failures: int = Field(default=10, ge=1)
    """Failed sign-ins from one client address, for any username, before it must wait."""
    client_max_delay_seconds: float = Field(default=900, ge=0)
    """The longest wait of one client address."""
    sign_in_first_delay_seconds: float = Field(default=1, ge=0)
    """The first wait; it doubles with each further failure, up to the maxima above."""
    sign_in_forget_minutes: float = Field(default=60, gt=0)
    """Failures are forgotten after this long without another one (a success forgets the
    username's at once, never the address's)."""
    token_requests_per_minute: int = Field(default=30, ge=1)
    """Requests to /api/auth/token (and the sign-in form) per client address, then 429."""
    register_requests_per_hour: int = Field(default=10, ge=1)
    """Registrations (API and form) per client address, then 429."""
    reset_requests_per_hour: int = Field(default=10, ge=1)
    """"Forgot password" requests (API and form) per client address, then 429."""
    password_reset_minutes: float = Field(default=30, gt=0)
    """How long a password reset link works (once)."""
    site_grace_seconds: float = Field(default=60, ge=0)
    """A site whose connection drops mid-job has this long to reconnect before the job fails."""
    request_deadline_seconds: float = Field(default=300, gt=0, allow_inf_nan=False)
    """A site has this long to answer one request of a job (a reconnect included); past it the
    job fails naming the site and the request."""
    allow_insecure_websocket: bool = False
    """Accept sites over plain ws:// (without TLS) from this machine only: for development."""
    result_expiry_minutes: float = Field(default=60, gt=0)
    """Imputed results stay in memory this long after a job completes, unless downloaded; central's
    CSV this long after it was last used while its job waits for the sites or for a retry."""
    download_grace_seconds: float = Field(default=300, ge=0)
    """After a download starts, the results stay this long (for the other format), then go."""
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=64)
    max_upload_bytes: int = Field(default=1_000_000_000, ge=1)
    """The largest data upload (central's CSV for a job, the wizard's CSV): held in memory, so
    this bounds the memory one upload takes (at most about 2.5 times its size while it is read)."""
    max_form_bytes: int = Field(default=1 << 20, ge=1)
    """The largest body of every other request: forms, JSON, algorithm files."""

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    @property
    def url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'central.db'}"

    def prepare(self) -> CentralSettings:
        """Create the data directory (owner-only) if it does not exist yet."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    def secret_key(self) -> bytes:
        """The signing key: read from data_dir/secret.key, created there on first use."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / "secret.key"
        if not path.exists():
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(32))
        return bytes.fromhex(path.read_text().strip())
