"""The README stays true: every setting is documented, and its commands exist."""

from __future__ import annotations

from pathlib import Path

from portal_central.settings import CentralSettings
from portal_site.settings import SiteSettings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    for prefix, settings in (("FIP_CENTRAL_", CentralSettings), ("FIP_SITE_", SiteSettings)):
        for name in settings.model_fields:
            assert f"`{prefix}{name.upper()}`" in README, (
                f"{prefix}{name.upper()} is not documented"
            )


def test_the_two_commands_exist() -> None:
    root = Path(__file__).resolve().parents[1]
    for command in ("scripts/run", "scripts/test"):
        assert f"    {command} " in README
        assert (root / command).stat().st_mode & 0o111, f"{command} is not executable"
    assert "exec scripts/test" in (root / ".ci" / "run").read_text()
