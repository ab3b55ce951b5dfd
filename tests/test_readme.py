"""The README stays true: every setting is documented, and its commands exist."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from federation.job import JobSpec, Target
from federation.outputs import zip_bytes
from federation.runtime import JobResult
from portal_central.methods import METHODS
from portal_central.settings import CentralSettings
from portal_site.settings import SiteSettings
from tests.helpers import table

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
ALGORITHMS = Path(__file__).resolve().parents[1] / "algorithms"


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


def test_the_imputation_files_are_named_as_the_readme_says() -> None:
    """``imputation_01.csv`` ... ``imputation_10.csv`` when M = 10 (the README's example)."""
    spec = JobSpec(
        job_id="j",
        algorithm="SIMI",
        version="1",
        digest="d",
        columns=("x",),
        targets=(Target(0, "x", "gaussian"),),
        params={"imputations": 10},
        seed=1,
        sites=(),
    )
    result = JobResult(
        spec=spec,
        table=table("central.csv", spec.columns, np.array([[np.nan], [1.0]])),
        imputed_cells=[np.array([float(m)]) for m in range(10)],
        report={},
    )

    with zipfile.ZipFile(io.BytesIO(zip_bytes(result))) as archive:
        names = archive.namelist()

    assert names[0] == "imputation_01.csv" and names[9] == "imputation_10.csv"
    assert "(`imputation_01.csv` … `imputation_10.csv` when M = 10" in README


def test_every_built_in_is_spelled_out_with_when_to_use_it() -> None:
    builtins = {p.parent.name for p in ALGORITHMS.glob("*/params.json")}

    assert set(METHODS) == builtins, "each built-in has a name spelled out, and only they"
    for name, method in METHODS.items():
        assert f"| {name} | {method.title} |" in README, name
        assert f"| {method.when} |" in README, name
