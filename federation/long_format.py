"""Reading back mice's long layout (``imputations_long.csv``) as M datasets for an analysis.

The file has ``.imp`` (0 = the original with its missing cells, then 1..M) and ``.id``, then
the data columns. A column whose cells are all numbers (or missing) is read as float64 with NaN
for missing; any other column as text (a factor), ``None`` for missing. Cells that are empty,
NA, NaN, nan, N/A or NULL are missing, as in every CSV ``fip`` reads.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from federation.csv_stream import MISSING_TOKENS
from federation.errors import InputError, unreadable


def read_long(source: Path | bytes, *, label: str | None = None) -> list[dict[str, np.ndarray]]:
    """The imputed datasets (``.imp`` 1..M, in order), each a dict of column name -> cells."""
    if label is None:
        label = str(source) if isinstance(source, Path) else "long CSV"
    content = _read(source, label)
    try:
        frame = pd.read_csv(io.BytesIO(content), dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{label}: not a UTF-8 text file") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{label}: the file is empty") from None
    except pd.errors.ParserError as error:
        raise InputError(f"{label}: the file is not a well-formed CSV ({error})") from None
    for name in (".imp", ".id"):
        if name not in frame.columns:
            raise InputError(
                f"{label}: no '{name}' column; expected mice's long layout (.imp, .id, then the "
                "data columns), as fip writes imputations_long.csv"
            )
    imp = pd.to_numeric(frame[".imp"], errors="coerce").to_numpy()
    bad = np.flatnonzero(np.isnan(imp) | (imp != np.round(imp)) | (imp < 0))
    if bad.size:
        raise InputError(
            f"{label}: column '.imp' must hold whole numbers 0, 1, ..., M; line {int(bad[0]) + 2} "
            f"has {frame['.imp'].iloc[int(bad[0])]!r}"
        )
    numbers = sorted({int(v) for v in imp if v > 0})
    if not numbers:
        raise InputError(f"{label}: no imputed datasets (no rows with .imp 1 or more)")
    columns = {name: _column(frame[name]) for name in frame.columns if name not in (".imp", ".id")}
    return [{name: cells[imp == number] for name, cells in columns.items()} for number in numbers]


def _column(text: pd.Series) -> np.ndarray:
    missing = text.isin(MISSING_TOKENS).to_numpy()
    values: np.ndarray = pd.to_numeric(text.where(~missing), errors="coerce").to_numpy(
        dtype=np.float64
    )
    if np.all(missing | ~np.isnan(values)):
        return values
    return np.array(
        [None if gone else cell for cell, gone in zip(text, missing, strict=True)], dtype=object
    )


def _read(source: Path | bytes, label: str) -> bytes:
    if not isinstance(source, Path):
        return source
    try:
        return source.read_bytes()
    except OSError as error:
        raise unreadable(label, error) from None
