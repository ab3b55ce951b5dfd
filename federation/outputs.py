"""The imputed datasets and the report as files: a zip of CSVs, one long CSV, report.json.

The long CSV is the layout of R mice's ``complete(imp, "long", include = TRUE)``: columns
``.imp`` (0 = the original with its missing cells, then 1..M) and ``.id`` (row number from 1),
then the data columns in their original order. Missing cells are written as ``NA``; a column
whose values are all whole numbers is written without decimals, any other value in the
shortest text that reads back to the same float64. Same inputs and seed, same bytes.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from federation.runtime import JobResult

ZIP_NAME = "imputations.zip"
LONG_NAME = "imputations_long.csv"
REPORT_NAME = "report.json"
COMPARISON_NAME = "comparison.json"
COMPARISON_TABLE_NAME = "comparison.txt"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def dataset_csv(columns: tuple[str, ...], values: np.ndarray) -> bytes:
    """One dataset as CSV bytes."""
    return _to_csv(_frame(columns, values))


def long_csv(result: JobResult) -> bytes:
    """All datasets, the original first, stacked with ``.imp`` and ``.id`` columns."""
    m_total = len(result.imputed_cells)
    rows = result.table.rows
    stacked = np.vstack([result.dataset(m) for m in range(m_total + 1)])
    frame = _frame(result.table.columns, stacked)
    frame.insert(0, ".id", np.tile(np.arange(1, rows + 1), m_total + 1))
    frame.insert(0, ".imp", np.repeat(np.arange(m_total + 1), rows))
    return _to_csv(frame)


def zip_bytes(result: JobResult) -> bytes:
    """A zip holding ``imputation_<m>.csv`` for m = 1..M, with fixed timestamps."""
    m_total = len(result.imputed_cells)
    width = len(str(m_total))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for m in range(1, m_total + 1):
            info = zipfile.ZipInfo(f"imputation_{m:0{width}d}.csv", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, dataset_csv(result.table.columns, result.dataset(m)))
    return buffer.getvalue()


def report_json(report: dict[str, Any]) -> bytes:
    return (json.dumps(report, indent=2, allow_nan=False) + "\n").encode()


def write_outputs(result: JobResult, out_dir: Path) -> list[Path]:
    """Write the three files into ``out_dir``: all of them, or (on any error) none."""
    return _write_all(
        out_dir,
        {
            ZIP_NAME: zip_bytes(result),
            LONG_NAME: long_csv(result),
            REPORT_NAME: report_json(result.report),
        },
    )


def write_plots(result: JobResult, out_dir: Path) -> list[Path]:
    """Each target's plausibility plot (``plausibility_<column>.svg``) and its numbers
    (``plausibility_<column>.csv``) into ``out_dir``: all of them, or none."""
    from federation.plots import file_stem, plausibility  # matplotlib only when asked for

    contents: dict[str, bytes] = {}
    taken: list[str] = []
    for plot in plausibility(result):
        stem = file_stem(plot.name, taken)
        taken.append(stem)
        contents[f"{stem}.svg"] = plot.svg
        contents[f"{stem}.csv"] = plot.numbers.csv().encode()
    return _write_all(out_dir, contents)


def write_comparison(comparison: dict[str, Any], table: str, out_dir: Path) -> list[Path]:
    """Write ``comparison.json`` and the same as a text table, ``comparison.txt``."""
    return _write_all(
        out_dir,
        {COMPARISON_NAME: report_json(comparison), COMPARISON_TABLE_NAME: (table + "\n").encode()},
    )


def _write_all(out_dir: Path, contents: dict[str, bytes]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, content in contents.items():
            temporary = out_dir / f".{name}.partial"
            temporary.write_bytes(content)
            staged.append((temporary, out_dir / name))
    except OSError:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
        raise
    for temporary, final in staged:
        os.replace(temporary, final)
    return [final for _, final in staged]


def _frame(columns: tuple[str, ...], values: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(values, columns=list(columns))
    for name in columns:
        column = frame[name].to_numpy()
        observed = column[~np.isnan(column)]
        if np.all(observed == np.round(observed)) and np.all(np.abs(observed) < 2**53):
            frame[name] = frame[name].astype("Int64")
    return frame


def _to_csv(frame: pd.DataFrame) -> bytes:
    text: str = frame.to_csv(index=False, na_rep="NA", lineterminator="\n")
    return text.encode()
