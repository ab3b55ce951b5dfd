"""Reading a site's CSV into memory, and checking it against a job.

A table is a header row of unique column names and numeric cells. Missing cells are
empty or one of ``MISSING_TOKENS``. Every error names the file (its label), and the
column or line, and shows an example of the offending value.
"""

from __future__ import annotations

import csv
import io
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
    """A site's data in memory: column names and an (n, p) float64 matrix, NaN for missing.

    ``lines`` holds the file's line number of each row, for messages (blank lines are skipped).
    """

    label: str
    columns: tuple[str, ...]
    values: np.ndarray
    lines: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    def line(self, row: int) -> int:
        """The file's line number of a 0-based row (the header is line 1)."""
        return int(self.lines[row]) if self.lines is not None else row + 2

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
    content = _read_bytes(source, label)
    columns = _read_header(content, label)
    lines = _data_lines(content, len(columns), label)
    try:
        frame = pd.read_csv(
            io.BytesIO(content),
            dtype=np.float64,
            na_values=list(MISSING_TOKENS),
            keep_default_na=False,
            skipinitialspace=True,
            encoding="utf-8-sig",
            header=0,
            names=list(columns),
            index_col=False,
        )
    except UnicodeDecodeError:
        raise InputError(f"{label}: not a UTF-8 text file") from None
    except ValueError as error:
        if isinstance(error, pd.errors.ParserError):
            raise InputError(f"{label}: the file is not a well-formed CSV ({error})") from None
        raise InputError(_explain_non_numeric(content, columns, lines, label)) from None
    if len(frame) == 0:
        raise InputError(f"{label}: the file has a header but no data rows")
    values = np.ascontiguousarray(frame.to_numpy(dtype=np.float64))
    table = Table(label=label, columns=columns, values=values, lines=lines)
    _reject_infinite(table)
    return table


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
        examples = ", ".join(
            f"{_number(cells[i])} (line {table.line(int(i))})" for i in bad[:_EXAMPLES]
        )
        raise InputError(
            f"{table.label}: column '{table.columns[column]}' is a binary target but "
            f"{bad.size} cell(s) are not 0 or 1, e.g. {examples}"
        )


def _read_bytes(source: Path | bytes, label: str) -> bytes:
    if not isinstance(source, Path):
        return source
    try:
        return source.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{label}: is a folder, not a CSV file") from None
    except OSError as error:
        raise InputError(f"{label}: cannot be read ({error.strerror})") from None


def _read_header(content: bytes, label: str) -> tuple[str, ...]:
    try:
        first = content.split(b"\n", 1)[0].decode("utf-8-sig")
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


def _data_lines(content: bytes, width: int, label: str) -> np.ndarray:
    """Line numbers of the data rows (blank lines skipped), refusing rows of the wrong width.

    Vectorised over the bytes: fields per line = commas + 1. Files with quoted cells take a
    slower exact path through the csv module.
    """
    header_end = content.find(b"\n")
    if header_end < 0:
        return np.zeros(0, dtype=np.int64)
    body = content[header_end + 1 :]
    if b'"' in body:
        text = body.decode("utf-8", errors="replace")
        counts = np.array([len(row) for row in csv.reader(io.StringIO(text))], dtype=np.int64)
        blank = counts == 0
        fields = counts
    else:
        buffer = np.frombuffer(body, dtype=np.uint8)
        ends = np.flatnonzero(buffer == ord("\n"))
        starts = np.concatenate(([0], ends + 1))
        stops = np.concatenate((ends, [buffer.size]))
        if starts[-1] == buffer.size:
            starts, stops = starts[:-1], stops[:-1]
        lengths = stops - starts
        carriage = (lengths > 0) & (buffer[np.maximum(stops - 1, 0)] == ord("\r"))
        blank = (lengths - carriage) == 0
        commas = np.zeros(starts.size, dtype=np.int64)
        if buffer.size and starts.size:
            sums = np.add.reduceat(
                buffer == ord(","), np.minimum(starts, buffer.size - 1), dtype=np.int64
            )
            commas = np.where(lengths > 0, sums, 0)
        fields = commas + 1
    numbers = np.arange(2, blank.size + 2, dtype=np.int64)
    wrong = np.flatnonzero(~blank & (fields != width))
    if wrong.size:
        first = int(wrong[0])
        more = f" ({wrong.size} such lines)" if wrong.size > 1 else ""
        raise InputError(
            f"{label}: line {numbers[first]} has {fields[first]} fields but the header has "
            f"{width} columns{more}"
        )
    kept: np.ndarray = numbers[~blank]
    return kept


def _explain_non_numeric(
    content: bytes, columns: tuple[str, ...], lines: np.ndarray, label: str
) -> str:
    """Find the first non-numeric cell of each offending column; slow path, errors only."""
    text = pd.read_csv(
        io.BytesIO(content),
        dtype=str,
        keep_default_na=False,
        skipinitialspace=True,
        encoding="utf-8-sig",
        header=0,
        names=list(columns),
        index_col=False,
    )
    problems = []
    for name in columns:
        cells = text[name]
        is_missing = cells.isin(MISSING_TOKENS).to_numpy()
        numeric = pd.to_numeric(cells.where(~is_missing), errors="coerce")
        bad = np.flatnonzero(numeric.isna().to_numpy() & ~is_missing)
        if bad.size:
            first = int(bad[0])
            problems.append(
                f"column '{name}' is not numeric: line {lines[first]} has {cells.iloc[first]!r}"
                + (f" ({bad.size} such cells)" if bad.size > 1 else "")
            )
    if not problems:
        return f"{label}: the file could not be read as numbers"
    return f"{label}: " + "; ".join(problems)


def _reject_infinite(table: Table) -> None:
    rows, cols = np.nonzero(np.isinf(table.values))
    if rows.size:
        raise InputError(
            f"{table.label}: column '{table.columns[cols[0]]}' has an infinite value on line "
            f"{table.line(int(rows[0]))}"
        )


def _names(names: Sequence[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
