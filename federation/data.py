"""Reading a site's CSV into memory, and checking it against a job.

A table is a header row of unique column names and numeric cells. Missing cells are
empty or one of ``MISSING_TOKENS``. Every error names the file (its label), and the
column or line, and shows an example of the offending value.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from federation.errors import InputError

MISSING_TOKENS = ("", "NA", "NaN", "nan", "N/A", "NULL")
"""Cell texts read as missing. R writes NA, pandas writes an empty cell."""

_EXAMPLES = 3


@dataclass(frozen=True)
class Table:
    """A site's data in memory: column names and an (n, p) float64 matrix, NaN for missing."""

    label: str
    columns: tuple[str, ...]
    values: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    def column(self, name: str) -> int:
        """0-based position of a column by name."""
        try:
            return self.columns.index(name)
        except ValueError:
            raise InputError(f"{self.label}: no column named '{name}'") from None


def read_csv(source: Path | bytes, *, label: str | None = None) -> Table:
    """Read a CSV file (a path, or its bytes for uploads) into a :class:`Table`."""
    if label is None:
        label = str(source) if isinstance(source, Path) else "uploaded file"
    columns = _read_header(source, label)
    buffer = source if isinstance(source, Path) else io.BytesIO(source)
    try:
        frame = pd.read_csv(
            buffer,
            dtype=np.float64,
            na_values=list(MISSING_TOKENS),
            keep_default_na=False,
            encoding="utf-8-sig",
            header=0,
            names=list(columns),
        )
    except ValueError as error:
        if isinstance(error, pd.errors.ParserError):
            raise InputError(f"{label}: {_explain_parser_error(error, len(columns))}") from None
        raise InputError(_explain_non_numeric(source, columns, label)) from None
    if len(frame) == 0:
        raise InputError(f"{label}: the file has a header but no data rows")
    values = np.ascontiguousarray(frame.to_numpy(dtype=np.float64))
    _reject_infinite(values, columns, label)
    return Table(label=label, columns=columns, values=values)


def check_columns(table: Table, expected: Sequence[str]) -> None:
    """The table's header must be exactly ``expected``; the message shows the difference."""
    if tuple(expected) == table.columns:
        return
    missing = [c for c in expected if c not in table.columns]
    extra = [c for c in table.columns if c not in expected]
    parts = []
    if missing:
        parts.append(f"missing {_names(missing)}")
    if extra:
        parts.append(f"unexpected {_names(extra)}")
    if not parts:
        parts.append(f"same columns in another order; expected {_names(expected)}")
    raise InputError(f"{table.label}: columns differ from the job's: " + "; ".join(parts))


def check_binary(table: Table, column: int) -> None:
    """A binary (logistic) target may hold only 0, 1 and missing cells."""
    cells = table.values[:, column]
    bad = np.flatnonzero(~np.isnan(cells) & (cells != 0) & (cells != 1))
    if bad.size:
        examples = ", ".join(f"{_number(cells[i])} (line {i + 2})" for i in bad[:_EXAMPLES])
        raise InputError(
            f"{table.label}: column '{table.columns[column]}' is a binary target but "
            f"{bad.size} cell(s) are not 0 or 1, e.g. {examples}"
        )


def _read_header(source: Path | bytes, label: str) -> tuple[str, ...]:
    if isinstance(source, Path):
        try:
            with source.open("r", encoding="utf-8-sig", newline="") as handle:
                first = handle.readline()
        except FileNotFoundError:
            raise InputError(f"{label}: no such file") from None
        except UnicodeDecodeError:
            raise InputError(f"{label}: not a UTF-8 text file") from None
    else:
        try:
            first = source.split(b"\n", 1)[0].decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InputError(f"{label}: not a UTF-8 text file") from None
    if not first.strip():
        raise InputError(f"{label}: the file is empty; expected a header row of column names")
    names = [name.strip() for name in next(csv.reader([first]))]
    for position, name in enumerate(names, start=1):
        if not name:
            raise InputError(f"{label}: column {position} of the header has no name")
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if name in seen:
            raise InputError(
                f"{label}: duplicate column name '{name}' (columns {seen[name]} and {position})"
            )
        seen[name] = position
    return tuple(names)


def _explain_non_numeric(source: Path | bytes, columns: tuple[str, ...], label: str) -> str:
    """Find the first non-numeric cell of each offending column; slow path, errors only."""
    buffer = source if isinstance(source, Path) else io.BytesIO(source)
    text = pd.read_csv(
        buffer,
        dtype=str,
        keep_default_na=False,
        encoding="utf-8-sig",
        header=0,
        names=list(columns),
    )
    problems = []
    for name in columns:
        cells = text[name].str.strip()
        numeric = pd.to_numeric(cells.where(~cells.isin(MISSING_TOKENS)), errors="coerce")
        bad = np.flatnonzero(numeric.isna().to_numpy() & ~cells.isin(MISSING_TOKENS).to_numpy())
        if bad.size:
            first = int(bad[0])
            problems.append(
                f"column '{name}' is not numeric: line {first + 2} has {text[name].iloc[first]!r}"
                + (f" ({bad.size} such cells)" if bad.size > 1 else "")
            )
    if not problems:
        return f"{label}: the file could not be read as numbers"
    return f"{label}: " + "; ".join(problems)


def _explain_parser_error(error: Exception, width: int) -> str:
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(error))
    if found:
        line, saw = found.group(2), found.group(3)
        return f"line {line} has {saw} fields but the header has {width} columns"
    return f"the file is not a well-formed CSV ({error})"


def _reject_infinite(values: np.ndarray, columns: tuple[str, ...], label: str) -> None:
    rows, cols = np.nonzero(np.isinf(values))
    if rows.size:
        raise InputError(
            f"{label}: column '{columns[cols[0]]}' has an infinite value on line {rows[0] + 2}"
        )


def _names(names: Sequence[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
