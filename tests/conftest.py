"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.demo import write_demo_data

pytest_plugins = ["tests.central_fixtures", "tests.federation_env"]


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo hospitals' CSVs (central, north, south), written once per session."""
    return write_demo_data(tmp_path_factory.mktemp("demo"))
