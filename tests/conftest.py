"""Shared fixtures, and the tiers of the test suite.

A bare ``pytest`` runs the quick tier: everything in process, on SQLite, on two pytest-xdist
workers (pyproject's addopts), in under a minute. ``scripts/test`` (and so CI) runs every tier
(``-m "slow or not slow" --dist loadgroup``) on the same two workers. The tiers:

- ``slow``: statistical or large tests, R as the reference; marked by hand.
- ``process``: starts real processes or servers (``fip central``, ``fip site``, any ``fip``
  command, uvicorn on a socket). Marked here, from what the test reaches.
- ``browser``: drives chromium through Playwright. Marked here, likewise.
- ``postgres``: the PostgreSQL run of a test marked ``EVERY_DATABASE``
  (tests/central_fixtures.py). Marked here, from the ``database_url`` parameter.

Nobody needs to mark ``process`` or ``browser`` tests: a test is in the tier when the test, one
of its fixtures, or a helper of the tests package that either of them calls (followed through
the code, helpers of helpers too) uses one of the process starters or ``BROWSER_STARTERS``.
A test that uses the shared ``network`` federation, ``start_federation``, ``Process``,
``subprocess`` or ``uvicorn.Server`` is in ``process`` wherever it is written.

**Which tests run on PostgreSQL.** Central's database is SQLite in every test unless the test
(or its module) is marked ``EVERY_DATABASE``; then it runs on both. Those are the tests whose
outcome depends on the database, because they exercise:

- the migrations (tests/test_migrations.py, and the refresh-token family migration in
  tests/test_central_sign_in.py);
- dialect-specific code: the sign-in throttle's upsert (``INSERT ... ON CONFLICT``, one
  statement per dialect), the read-only check of ``/health``, a trigger that refuses a write
  (tests/test_central_sign_in.py, tests/test_central_hardening.py);
- constraints and types the dialects enforce differently: unique usernames and site ids, token
  cascades (tests/test_central_accounts.py), PostgreSQL's 32-bit INTEGER against huge ids, the
  64-bit seed, JSON columns and the comparison's self-referencing parent (tests named in
  tests/test_central_hardening.py, tests/test_central_jobs.py, tests/test_comparison_jobs.py,
  tests/test_central_algorithms.py), and the whole app starting on PostgreSQL
  (tests/test_central_smoke.py).

The other tests drive central through its API, pages and WebSocket, where the database is a
store behind SQLAlchemy: running them on PostgreSQL as well doubled their cost and tested
SQLAlchemy, not us. The site portal's database is SQLite by design.

**Every tier on two workers.** The tests are safe side by side: each has its own tmp_path
and SQLite file (``_migrated_sqlite`` and the session fixtures are made once per worker), its
own PostgreSQL database (a new name each time), holds any port it binds (port 0, kept open), or
takes a port from ``free_port`` (tests/processes.py), which reserves it against the other worker
(and any other test run on the machine) until the server it is for has bound it. Quick tests
sleep for real only for tens of milliseconds (a throttle's waits use a clock the test moves).
The tests that use the session's shared ``network`` federation are one ``xdist_group``, so that
with ``--dist loadgroup`` (scripts/test) one worker runs them all and starts it once.

**Bytecode caches.** The run writes Python's ``__pycache__`` (ignored by git) even where
``PYTHONDONTWRITEBYTECODE`` is set, as it is in some shells and CI images: without the caches
every worker compiles the product again and pytest rewrites every test module again, about 3 s
of CPU per worker per run, and every ``fip`` process the process tier starts compiles the portal
again (those read the caches written here). ``tests/__init__.py`` says so, before any import.

**Garbage.** A test process builds a few hundred apps, each some 37,000 objects, where a portal
builds one. Three settings keep Python's collector from walking them again and again (it took
14 s of a 100 s single-worker run, and 1.4 s in one collection at the end of each worker):
the objects of imports and collection are frozen once collected; young objects are collected
after 20,000 allocations instead of 700; and after each test FastAPI's caches of how to call an
endpoint are emptied. Those caches hold up to 4,096 endpoint functions, and ours are closures
over their app, so they kept some forty finished apps alive with their databases and caches.
"""

from __future__ import annotations

import gc
import inspect
import subprocess
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.dependencies import models as fastapi_models
from playwright.sync_api import sync_playwright

from federation.demo import write_demo_data

pytest_plugins = ["tests.central_fixtures", "tests.federation_env"]


def _process_starters() -> frozenset[object]:
    """What starts a process or a server on a socket: a test reaching one is in the process
    tier. (Imported here, not at the top: the plugins above must be imported by pytest first,
    so that their asserts are rewritten.)"""
    from tests.federation_env import start_federation, start_site_portal
    from tests.processes import Process

    return frozenset(
        {
            start_federation,
            start_site_portal,
            Process,
            subprocess.Popen,
            subprocess.run,
            subprocess.call,
            subprocess.check_call,
            subprocess.check_output,
            uvicorn.Server,
            uvicorn.run,
        }
    )


BROWSER_STARTERS: frozenset[object] = frozenset({sync_playwright})
"""What starts a browser: a test reaching one is in the browser tier."""


def _code_objects(code: types.CodeType) -> list[types.CodeType]:
    """``code`` and every function, lambda or comprehension nested in it."""
    found = [code]
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            found += _code_objects(constant)
    return found


def _ours(value: object) -> bool:
    """A function or class of the tests package (a helper to follow), not of the product."""
    return (inspect.isfunction(value) or inspect.isclass(value)) and str(
        getattr(value, "__module__", "")
    ).startswith("tests")


class Reach:
    """Which of some starters a function reaches, through the helpers of the tests package."""

    def __init__(self, starters: frozenset[object]) -> None:
        self.starters = starters
        self._known: dict[object, bool] = {}

    def __call__(self, value: object) -> bool:
        if inspect.isfunction(value):
            value = inspect.unwrap(value)  # a @contextmanager's function, not contextlib's
        if not isinstance(value, types.FunctionType | type | types.BuiltinFunctionType):
            return False
        if value in self.starters:
            return True
        if not _ours(value):
            return False
        if value not in self._known:
            self._known[value] = False  # a helper that calls itself reaches nothing new
            self._known[value] = any(self(callee) for callee in _callees(value))
        return self._known[value]


def _callees(value: object) -> list[object]:
    """What the code of a test-package function (or of a class's methods) names: its globals
    and, for a module it names, that module's attributes it names."""
    if inspect.isclass(value):
        return [f for f in vars(value).values() if inspect.isfunction(f)]
    function: Callable[..., Any] = value  # type: ignore[assignment]
    namespace = function.__globals__
    found: list[object] = []
    for code in _code_objects(function.__code__):
        names = set(code.co_names)
        for name in names:
            if name not in namespace:
                continue
            target = namespace[name]
            found.append(target)
            if isinstance(target, types.ModuleType):
                with warnings.catch_warnings():  # numpy warns of some names it once had
                    warnings.simplefilter("ignore")
                    found += [getattr(target, n) for n in names if hasattr(target, n)]
    return found


def pytest_collection_finish(session: pytest.Session) -> None:
    """See "Garbage" above."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


FASTAPI_CALLABLE_CACHES = (
    "_is_gen_callable_cached",
    "_is_async_gen_callable_cached",
    "_is_coroutine_callable_cached",
)
"""FastAPI's caches of endpoint functions (fastapi.dependencies.models); should a release
rename them, the suite is only slower."""


def pytest_runtest_teardown(item: pytest.Item) -> None:
    """See "Garbage" above."""
    for name in FASTAPI_CALLABLE_CACHES:
        cache = getattr(fastapi_models, name, None)
        if cache is not None:
            cache.cache_clear()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put every test in its tiers (see the module's docstring)."""
    reaches = {"process": Reach(_process_starters()), "browser": Reach(BROWSER_STARTERS)}
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        functions: list[object] = [item.function]
        for definitions in item._fixtureinfo.name2fixturedefs.values():
            functions += [definition.func for definition in definitions]
        for tier, reach in reaches.items():
            if any(reach(function) for function in functions):
                item.add_marker(tier)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("database_url") == "postgresql":
            item.add_marker("postgres")
        if "network" in item.fixturenames:  # one worker starts the shared federation, not each
            item.add_marker(pytest.mark.xdist_group("network"))


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo hospitals' CSVs (central, north, south), written once per session."""
    return write_demo_data(tmp_path_factory.mktemp("demo"))
