"""The engine knows nothing of the web, and ``fip`` imports a portal only for its own commands.

Each check runs in a fresh interpreter (a test process has long since imported everything) and
reads ``sys.modules`` there: what a command or an import loads, directly or through anything
it imports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WEB = ("fastapi", "starlette", "sse_starlette", "jinja2", "sqlalchemy", "alembic", "uvicorn")
PORTALS = ("portal_central", "portal_site", "portal_common")

LOADED = """
import json, sys
print(json.dumps(sorted(sys.modules)))
"""


def _modules(script: str) -> set[str]:
    """The modules loaded once ``script`` has run in a new interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", script + LOADED],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return set(loaded)


def _top_level_modules(script: str) -> set[str]:
    """The top-level packages loaded once ``script`` has run in a new interpreter."""
    return {name.split(".")[0] for name in _modules(script)}


def test_every_engine_module_imports_no_web_framework_and_no_portal() -> None:
    loaded = _top_level_modules(
        "import importlib, pkgutil\n"
        "import algorithms, federation\n"
        "for package in (federation, algorithms):\n"
        "    for module in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "        importlib.import_module(module.name)\n"
        # the built-ins' own halves, loaded as a job loads them
        "from federation.registry import Registry\n"
        "for algorithm in Registry.with_builtins().all():\n"
        "    algorithm.central, algorithm.remote\n"
    )

    assert "federation" in loaded and "scipy" in loaded  # the walk did import the engine
    assert loaded.isdisjoint(WEB + PORTALS), sorted(loaded & set(WEB + PORTALS))


def test_fip_simulate_runs_without_a_web_framework_or_a_portal(tmp_path: Path) -> None:
    loaded = _top_level_modules(
        "import sys\n"
        "from pathlib import Path\n"
        "from federation.cli import main\n"
        f"out = Path({str(tmp_path)!r})\n"
        "assert main(['demo-data', '--out', str(out / 'data')]) == 0\n"
        "code = main(['simulate', '--algorithm', 'SIMICE', '--central', str(out / 'data' / "
        "'central.csv'), '--site', str(out / 'data' / 'north.csv'), '--target', 'bmi:gaussian', "
        "'--target', 'smoker:logistic', '--imputations', '2', '--seed', '3', '--plots', "
        "'--analysis', 'bmi ~ age', '--out', str(out / 'results')])\n"
        "assert code == 0, code\n"
        "assert main(['algorithms']) == 0\n"
    )

    assert (tmp_path / "results" / "imputations_long.csv").is_file()
    assert loaded.isdisjoint(WEB + PORTALS), sorted(loaded & set(WEB + PORTALS))


def test_fip_help_imports_neither_the_engine_nor_a_portal() -> None:
    loaded = _top_level_modules(
        "import contextlib, io\n"
        "from federation.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as shown:\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit as done:\n"
        "        assert done.code == 0\n"
        "assert 'central' in shown.getvalue() and 'simulate' in shown.getvalue()\n"
    )

    assert loaded.isdisjoint(WEB + PORTALS + ("numpy", "scipy", "pandas", "algorithms"))


def _help_of(command: str) -> str:
    return (
        "import contextlib, io\n"
        "from federation.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as shown:\n"
        "    try:\n"
        f"        main([{command!r}, '--help'])\n"
        "    except SystemExit as done:\n"
        "        assert done.code == 0\n"
        "assert '--data-dir' in shown.getvalue()\n"
    )


def test_a_portal_command_imports_its_own_portal_only() -> None:
    site = _modules(_help_of("site"))
    central = _modules(_help_of("central"))

    assert "portal_site.cli" in site and "portal_central.cli" in central
    # the site's pages find central's templates by its package: nothing of central runs
    assert not any(name.startswith("portal_central.") for name in site)
    assert not any(name.startswith("portal_site") for name in central)


def test_fip_simulate_of_numeric_files_imports_neither_pandas_nor_scipy_stats(
    tmp_path: Path,
) -> None:
    """Their imports were most of a small job's time: a numeric file is read by Arrow alone,
    the site checks and R-hat use scipy.special; pandas stays for text, pooling and analysis."""
    loaded = _modules(
        "import numpy as np\n"
        "from pathlib import Path\n"
        "from federation.cli import main\n"
        f"out = Path({str(tmp_path)!r})\n"
        "rng = np.random.default_rng(5)\n"
        "for name in ('central', 'north'):\n"
        "    x = rng.standard_normal((60, 2))\n"
        "    y = x @ [1.0, -0.5] + rng.standard_normal(60)\n"
        "    rows = np.column_stack([x, y]).tolist()\n"
        "    lines = [f'{a!r},{b!r},' + ('NA' if k % 4 == 0 else repr(c))\n"
        "             for k, (a, b, c) in enumerate(rows)]\n"
        "    (out / f'{name}.csv').write_text('x1,x2,y\\n' + '\\n'.join(lines) + '\\n')\n"
        "for algorithm in ('SIMI', 'SIMICE'):\n"
        "    code = main(['simulate', '--algorithm', algorithm, '--central', str(out / "
        "'central.csv'), '--site', str(out / 'north.csv'), '--target', 'y:gaussian', "
        "'--imputations', '2', '--seed', '3', '--out', str(out / algorithm)])\n"
        "    assert code == 0, code\n"
    )

    assert (tmp_path / "SIMICE" / "imputations_long.csv").is_file()
    assert "pandas" not in loaded
    assert not any(name.startswith("scipy.stats") for name in loaded), "scipy.stats loaded"
