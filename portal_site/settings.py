"""The site portal's settings: environment variables prefixed ``FIP_SITE_``, and flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SiteSettings(BaseSettings):
    """Every setting of the site portal; each is ``FIP_SITE_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="FIP_SITE_", extra="ignore")

    data_dir: Path = Path("site-data")
    """The site's small database (central URL, site_id, refresh token, approvals, the ledger)
    and logs. Never the data: CSVs stay in memory."""
    host: str = "127.0.0.1"
    """The local UI listens here; keep it on this machine."""
    port: int = 8001
    min_rows: int = Field(default=10, ge=1)
    """This site answers no job on fewer usable rows than this, whatever the job's min_rows."""
    heartbeat_seconds: float = Field(default=10, gt=0)
    reconnect_max_seconds: float = Field(default=30, gt=0)
    """Reconnection waits grow 1, 2, 4, ... seconds up to this."""

    def prepare(self) -> SiteSettings:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    @property
    def database(self) -> str:
        return f"sqlite:///{self.data_dir / 'site.db'}"
