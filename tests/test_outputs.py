"""Output files: R mice's long layout, exact numbers, whole numbers kept whole, all or nothing."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation.job import JobSpec, Target
from federation.outputs import (
    LONG_NAME,
    REPORT_NAME,
    ZIP_NAME,
    long_csv,
    write_outputs,
    zip_bytes,
)
from federation.runtime import JobResult
from tests.helpers import table

AWKWARD = [0.1, 1 / 3, 1e-300, 123456789.123456789, -2.5e-8]


def _result() -> JobResult:
    values = np.array(
        [
            [1.0, np.nan, 0.0],
            [2.0, 0.5, np.nan],
            [3.0, np.nan, 1.0],
        ]
    )
    spec = JobSpec(
        job_id="j",
        algorithm="SIMI",
        version="1",
        digest="d",
        columns=("id", "x", "flag"),
        targets=(Target(2, "x", "gaussian"),),
        params={"imputations": 2},
        seed=1,
        sites=(),
    )
    # Missing cells in row-major order: x of row 1, flag of row 2, x of row 3.
    cells = [np.array([AWKWARD[0], 1.0, AWKWARD[1]]), np.array([AWKWARD[2], 0.0, AWKWARD[3]])]
    return JobResult(
        spec=spec,
        table=table("central.csv", spec.columns, values),
        imputed_cells=cells,
        report={"algorithm": "SIMI", "seconds": 0.5},
    )


def test_long_csv_has_the_mice_layout() -> None:
    """.imp 0 is the original with NA, then 1..M; .id counts rows from 1; columns in order."""
    frame = pd.read_csv(io.BytesIO(long_csv(_result())))

    assert list(frame.columns) == [".imp", ".id", "id", "x", "flag"]
    assert frame[".imp"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert frame[".id"].tolist() == [1, 2, 3] * 3
    assert frame.loc[frame[".imp"] == 0, "x"].isna().tolist() == [True, False, True]
    assert not frame.loc[frame[".imp"] > 0, ["x", "flag"]].isna().any().any()


def test_numbers_read_back_exactly_and_whole_columns_stay_whole() -> None:
    text = long_csv(_result()).decode()

    frame = pd.read_csv(io.StringIO(text))

    imputed = frame.loc[frame[".imp"] > 0, "x"].to_numpy()
    assert imputed.tolist() == [AWKWARD[0], 0.5, AWKWARD[1], AWKWARD[2], 0.5, AWKWARD[3]]
    assert text.splitlines()[1] == "0,1,1,NA,0"


def test_zip_holds_one_csv_per_imputation_and_is_deterministic() -> None:
    result = _result()

    first = zip_bytes(result)

    assert first == zip_bytes(result)
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        assert archive.namelist() == ["imputation_1.csv", "imputation_2.csv"]
        second = pd.read_csv(archive.open("imputation_2.csv"))
    assert list(second.columns) == ["id", "x", "flag"]
    assert second["x"].tolist() == [AWKWARD[2], 0.5, AWKWARD[3]]
    assert second["flag"].tolist() == [0, 0, 1]


def test_write_outputs_writes_the_three_files(tmp_path: Path) -> None:
    written = write_outputs(_result(), tmp_path / "out")

    assert sorted(p.name for p in written) == sorted([ZIP_NAME, LONG_NAME, REPORT_NAME])
    assert json.loads((tmp_path / "out" / REPORT_NAME).read_text())["algorithm"] == "SIMI"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in written)


def test_write_outputs_is_all_or_nothing(tmp_path: Path) -> None:
    """When a file cannot be written, earlier results stay and no new file appears."""
    out = tmp_path / "out"
    out.mkdir()
    (out / ZIP_NAME).write_bytes(b"previous results")
    (out / f".{LONG_NAME}.partial").mkdir()  # makes the second write fail

    with pytest.raises(OSError):
        write_outputs(_result(), out)

    assert (out / ZIP_NAME).read_bytes() == b"previous results"
    assert sorted(p.name for p in out.iterdir()) == [f".{LONG_NAME}.partial", ZIP_NAME]
