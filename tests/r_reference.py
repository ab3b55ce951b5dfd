"""R as the outside reference: run a short R script and read what it wrote.

R and the packages the statistical tests compare against (mice, mitml, nnet; MASS comes
with R) install from Debian's packages in ``scripts/test``. Tests that need R are marked ``slow``,
which a bare ``pytest`` deselects.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

R_SECONDS = 600


def require_r() -> str:
    """The path of Rscript; a missing R fails the test (scripts/test installs it), never skips."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        pytest.fail("Rscript is not installed: scripts/test installs r-base-core and r-cran-mice")
    return rscript


def run_r(script: str, *, cwd: Path) -> str:
    """Run ``script`` with Rscript in ``cwd`` and return what it printed; an R error fails the
    test with R's own message."""
    rscript = require_r()
    path = cwd / "reference.R"
    path.write_text(script, encoding="utf-8")
    done = subprocess.run(
        [rscript, "--vanilla", str(path)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=R_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"R failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout
