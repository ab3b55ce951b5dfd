"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

The compose file must parse; every service built here must name a stage of the Dockerfile;
every `fip` command must be one the CLI accepts; every FIP_ variable must be a real setting;
every volume must be declared; and what the Dockerfile copies must exist.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from federation.cli import _parser
from portal_central.settings import CentralSettings
from portal_site.settings import SiteSettings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SERVICES: dict[str, Any] = COMPOSE["services"]
STAGES = set(re.findall(r"^FROM \S+ AS (\S+)$", DOCKERFILE, flags=re.MULTILINE))


def test_the_compose_file_has_central_postgres_mail_and_two_sites() -> None:
    assert {"central", "postgres", "mail", "site-north", "site-south"} <= set(SERVICES)
    central = SERVICES["central"]["environment"]
    assert central["FIP_CENTRAL_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert central["FIP_CENTRAL_SMTP_HOST"] == "mail"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_services_build_existing_stages_and_run_existing_commands(name: str) -> None:
    service = SERVICES[name]
    if "build" in service:
        assert service["build"]["target"] in STAGES, (
            f"{name}: no stage {service['build']['target']}"
        )
        command = service.get("command")
        assert command and command[0] == "fip", f"{name} runs fip"
        _parser(command[1:]).parse_args(command[1:])  # exits (fails the test) on an unknown flag
    else:
        assert "image" in service
    assert "healthcheck" in service or "build" in service, f"{name} has no health check"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_environment_names_real_settings(name: str) -> None:
    known = {f"FIP_CENTRAL_{f.upper()}" for f in CentralSettings.model_fields}
    known |= {f"FIP_SITE_{f.upper()}" for f in SiteSettings.model_fields}
    for variable in SERVICES[name].get("environment", {}):
        if variable.startswith("FIP_"):
            assert variable in known, f"{name}: {variable} is not a setting"


def test_volumes_are_declared_and_are_data_directories_only() -> None:
    declared = set(COMPOSE["volumes"])
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            assert source in declared, f"{name}: volume {source} is not declared"
            assert target in ("/data", "/ca", "/var/lib/postgresql/data"), f"{name}: {target}"


def test_the_documented_first_steps_are_real_commands() -> None:
    header = (ROOT / "docker-compose.yml").read_text().split("services:")[0]
    for line in header.splitlines():
        if "compose run --rm central fip " in line:
            words = line.split("central fip ", 1)[1].split()
            _parser(words).parse_args(words)


def test_the_dockerfile_copies_what_exists_and_has_both_stages() -> None:
    assert {"central", "site"} <= STAGES
    for source in re.findall(r"^COPY (\S+)", DOCKERFILE, flags=re.MULTILINE):
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    assert DOCKERFILE.count("HEALTHCHECK") == 2
    assert "/health" in DOCKERFILE
