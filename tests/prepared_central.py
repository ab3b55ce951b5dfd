"""Central portals that start on a copy of a database prepared once per test run (per worker):
the admin and MEANDRAW (the third-party example) uploaded through the JSON API, with its trial
run. For the tests where MEANDRAW is there to be used, not under test: each upload runs the
pair on synthetic data (about 0.5 s), and seven tests did so before anything they check. The
upload itself (its checks, versions, the trial run, the pages) is tested in
tests/test_central_algorithms.py on a fresh database.

A copy is a fresh portal like the ``central`` fixture's: its own data folder and secret key, its
own SQLite file, no jobs and no sites; only the admin and the algorithm are there already."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from portal_central.app import create_app
from tests.central_fixtures import create_admin, make_settings, meandraw_files, upload_algorithm


@functools.cache
def _with_meandraw() -> Path:
    """A SQLite database holding the admin and MEANDRAW 1.0.0, made once per test run."""
    folder = Path(tempfile.mkdtemp(prefix="fip-meandraw-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "central.db"
    with TestClient(create_app(make_settings(folder / "central", f"sqlite:///{path}"))) as client:
        create_admin(client)
        upload_algorithm(client, meandraw_files())
    # The portal disposed of its engine when it stopped: the file holds everything, no -wal.
    assert not path.with_name("central.db-wal").exists()
    return path


@contextmanager
def central_with_meandraw(folder: Path, **overrides: object) -> Iterator[TestClient]:
    """Central (TestClient) on a copy of the prepared database, in ``folder``; ``overrides``
    are settings, as for ``make_settings``."""
    database = folder / "central.db"
    shutil.copyfile(_with_meandraw(), database)
    settings = make_settings(folder / "central", f"sqlite:///{database}", **overrides)
    with TestClient(create_app(settings)) as client:
        yield client
