"""A CSV parsed as it arrives, a block of whole lines at a time.

:class:`CsvStream` takes a file's bytes in pieces of any size (an upload as it streams in, a
file read from disk) and parses each block of about ``_BLOCK`` bytes of whole lines as soon as
it is complete, so the per-byte work and the text held never span the file. A block is cut
after a line ending outside quotes, so a row split across pieces, a quoted cell holding a line
break or a CRLF split between two pieces is read whole.

A plain block (no quotes, LF or CRLF endings) is parsed once, where it was received, by Arrow's
CSV reader, which gives its rows (one per line: its blank lines are found among the rows missing
in every cell), and converted to float64 by Arrow; anything it does not take as numbers of the
header's width (a ragged row, a non-numeric cell, bad UTF-8, quotes, CR-only lines) is parsed
by the exact reader (pandas, after a count of each line's fields), which names the line and the
column at fault. Both give the same float64 values. Line numbers are the file's, counted across
blocks (the header is line 1; blank lines are skipped but counted).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from federation.errors import InputError

# pandas is imported by the functions that need it (text columns, the exact reader, errors):
# a plain numeric file is read by Arrow alone, and fip starts without pandas' import.

MISSING_TOKENS = ("", "NA", "NaN", "nan", "N/A", "NULL")
"""Cell texts read as missing. R writes NA, pandas writes an empty cell."""
TEXT_HINT = " (only a factor, carried or categorical target column may hold text)"
ROW_NAMES = "\x00row names"
"""The name a row-name column (R's ``write.csv``: a first column whose header is "") is read
under before it is left out; no header can spell it."""

_BLOCK = 2 << 20
"""Bytes of whole lines parsed at a time: the per-byte work never spans the whole file."""


class Rows(NamedTuple):
    """A block's rows: float64 values (NaN for missing), each row's line in the file, and the
    cells of the columns read as text (by position), as written, None where missing; a text
    column's entries in ``values`` are its cells that read as numbers, NaN for the others."""

    values: np.ndarray
    lines: np.ndarray
    texts: dict[int, np.ndarray]


@dataclass(frozen=True)
class Layout:
    columns: tuple[str, ...]
    """The header's names; a row-name column is named :data:`ROW_NAMES`."""
    newline: bytes
    """b"\\n" (with or without a carriage return before it), or b"\\r" for CR-only files."""
    body_start: int
    """Offset of the first byte after the header line."""


class CsvStream:
    """A CSV read as it arrives, a block of whole lines at a time, never held whole.

    ``feed`` takes the next bytes and returns the :class:`Rows` of the blocks it completed;
    ``finish`` returns the rest. Columns named in ``text`` may hold text (any other must be
    numeric); with ``all_text`` every column may (central's wizard proposes roles from the
    cells): a block that is not all numbers is read with every column as text.
    """

    def __init__(self, *, label: str, text: Collection[str] = (), all_text: bool = False) -> None:
        self.label = label
        self.text = frozenset(text)
        self.all_text = all_text
        self.rows = 0
        self.layout: Layout | None = None
        self._textual: frozenset[int] = frozenset()
        self._pending = bytearray()
        self._line = 2
        self._next_cut = _BLOCK

    @property
    def columns(self) -> tuple[str, ...]:
        return self.layout.columns if self.layout is not None else ()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Rows]:
        self._pending += data
        if self.layout is None:
            if not _header_complete(self._pending):
                return []
            self._start()
        assert self.layout is not None
        parsed: list[Rows] = []
        while len(self._pending) >= self._next_cut:  # a block at a time, however much came in
            cut = _last_cut(self._pending, self.layout.newline, self._next_cut)
            if cut <= 0:  # one long line, or quotes open: try again when twice as much is in
                self._next_cut *= 2
                continue
            self._next_cut = _BLOCK
            parsed += self._parse(cut)
            # the rest in a new buffer: Arrow's threads may still hold a view of this one
            self._pending = bytearray(memoryview(self._pending)[cut:])
        return parsed

    def finish(self) -> list[Rows]:
        if self.layout is None:
            self._start()
        parsed = self._parse(len(self._pending))
        self._pending = bytearray()
        pa.default_memory_pool().release_unused()  # what Arrow's allocator kept of the blocks
        if self.rows == 0:
            raise InputError(f"{self.label}: the file has a header but no data rows")
        return parsed

    def _start(self) -> None:
        self.layout = layout_of(self._pending, self.label)
        del self._pending[: self.layout.body_start]
        self._textual = frozenset(
            j
            for j, name in enumerate(self.layout.columns)
            if name in self.text or name == ROW_NAMES
        )

    def _parse(self, size: int) -> list[Rows]:
        """The rows of the first ``size`` bytes held (whole lines), read where they are."""
        assert self.layout is not None
        if not size:
            return []
        first, block = self._line, _Block(self._pending, size)
        try:  # the named text columns only first: the common case, several times faster
            rows, endings = _rows_of(block, first, self.layout, self.label, self._textual)
        except InputError:
            if not self.all_text:
                raise
            every = frozenset(range(len(self.layout.columns)))
            rows, endings = _rows_of(block, first, self.layout, self.label, every)
        self._line += endings
        if rows is None:
            return []
        self.rows += rows.lines.size
        return [rows]


def layout_of(content: bytes | bytearray, label: str) -> Layout:
    """The header's names, the line ending (from the header line's) and where the rows start."""
    lf = content.find(b"\n")
    cr = content.find(b"\r", 0, lf if lf >= 0 else len(content))
    if cr >= 0 and content[cr + 1 : cr + 2] != b"\n":
        end, newline = cr, b"\r"
    else:
        end, newline = (lf if lf >= 0 else len(content)), b"\n"
    try:
        first = bytes(content[:end]).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{label}: not a UTF-8 text file") from None
    if not first.strip():
        raise InputError(f"{label}: the file is empty; expected a header row of column names")
    names = [name.strip() for name in next(csv.reader([first]))]
    if len(names) > 1 and not names[0]:
        names[0] = ROW_NAMES
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
    return Layout(columns=tuple(names), newline=newline, body_start=min(end + 1, len(content)))


def _header_complete(content: bytes | bytearray) -> bool:
    """The header line's end is known: a LF, or a CR with the byte after it (CRLF or not)."""
    cr, lf = content.find(b"\r"), content.find(b"\n")
    return (lf >= 0 and (cr < 0 or cr > lf)) or 0 <= cr < len(content) - 1


def _last_cut(content: bytes | bytearray, newline: bytes, stop: int) -> int:
    """The offset just after the last line ending before ``stop`` that is outside quotes."""
    cut = content.rfind(newline, 0, stop) + 1
    while cut > 0 and content.find(b'"', 0, cut) >= 0 and content.count(b'"', 0, cut) % 2:
        cut = content.rfind(newline, 0, cut - 1) + 1
    return cut


class _Block:
    """The first ``size`` bytes of ``data``: a block parsed where it was received, without a
    copy (a fresh copy of each block cost more than its parsing by Arrow, in page faults)."""

    __slots__ = ("data", "size")

    def __init__(self, data: bytes | bytearray, size: int) -> None:
        self.data, self.size = data, size

    def view(self) -> memoryview:
        return memoryview(self.data)[: self.size]

    def find(self, sub: bytes) -> int:
        return self.data.find(sub, 0, self.size)

    def count(self, sub: bytes) -> int:
        return self.data.count(sub, 0, self.size)

    def endswith(self, suffix: bytes) -> bool:
        return self.data.endswith(suffix, 0, self.size)


def _rows_of(
    block: _Block, first: int, layout: Layout, label: str, textual: frozenset[int]
) -> tuple[Rows | None, int]:
    """A block of whole lines parsed (None if it holds blank lines only), and the count of
    its line endings; ``first`` is the file's line number of its first line.

    A plain block is parsed once, by Arrow, which also gives its lines: it reads a row per
    line, a blank line as a row of missing cells (:func:`_blank_rows` takes those out, from
    the bytes of the few rows missing in every cell). A CR alone, which Arrow takes as a line
    ending, is caught by comparing its rows with the block's LFs. Any other block takes the
    exact reader."""
    unterminated = not block.endswith(layout.newline)
    parsed = None
    if layout.newline == b"\n" and block.find(b'"') < 0:
        parsed = _parse_plain(block.view(), layout, textual)
    if parsed is not None and block.find(b"\r") >= 0:
        if parsed[0].shape[0] != block.count(b"\n") + unterminated:
            parsed = None  # a CR alone ended a line: the exact reader names it
    if parsed is None:
        endings = block.count(layout.newline)
        whole = bytes(block.view())
        lines = _data_lines(whole, first, layout, label)
        if not lines.size:
            return None, endings
        values, texts = _parse_exact(whole, lines, layout, label, textual)
    else:
        values, texts = parsed
        endings = values.shape[0] - unterminated
        lines = np.arange(first, first + values.shape[0], dtype=np.int64)
        blank = _blank_rows(block.view(), values, texts)
        if blank is not None:
            kept = ~blank
            values, lines = values[kept], lines[kept]
            texts = {j: cells[kept] for j, cells in texts.items()}
            if not lines.size:
                return None, endings
    if np.isinf(values).any():
        rows, cols = np.nonzero(np.isinf(values))
        raise InputError(
            f"{label}: column '{layout.columns[cols[0]]}' has an infinite value on line "
            f"{lines[int(rows[0])]}"
        )
    return Rows(values, lines, texts), endings


def _blank_rows(
    block: bytes | memoryview, values: np.ndarray, texts: dict[int, np.ndarray]
) -> np.ndarray | None:
    """Which rows of a plain block (one per line) are blank lines, or None if none is: of
    the rows missing in every cell (few, found from the values), those whose line is empty
    (or a lone CR before its LF)."""
    rows = np.flatnonzero(np.isnan(values[:, 0]))
    if rows.size:
        rows = rows[np.isnan(values[rows]).all(axis=1)]
    for cells in texts.values():
        rows = rows[np.array([cell is None for cell in cells[rows]], dtype=bool)]
    if not rows.size:
        return None
    buffer = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(buffer == ord("\n"))  # one int64 per line, not per byte
    starts = np.concatenate(([0], ends + 1))[rows]
    lengths = np.concatenate((ends, [buffer.size]))[rows] - starts
    carriage = buffer[np.minimum(starts, buffer.size - 1)] == ord("\r")
    blank = (lengths == 0) | ((lengths == 1) & carriage)
    if not blank.any():
        return None
    found = np.zeros(values.shape[0], dtype=bool)
    found[rows[blank]] = True
    return found


def _parse_plain(
    block: bytes | memoryview, layout: Layout, textual: frozenset[int]
) -> tuple[np.ndarray, dict[int, np.ndarray]] | None:
    """The values (and the text columns' cells) of a plain block by Arrow's reader (its
    threads take a quarter of the block each), with the missing tokens as nulls; None where
    it refuses the block (the exact reader says why). A blank line is a row of missing cells
    (:func:`_blank_rows` finds it)."""
    names = [f"c{j}" for j in range(len(layout.columns))]
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(block),
            read_options=pa_csv.ReadOptions(
                column_names=names, encoding="utf8", block_size=_BLOCK // 4
            ),
            parse_options=pa_csv.ParseOptions(
                newlines_in_values=False, quote_char=False, ignore_empty_lines=False
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types={
                    name: pa.string() if j in textual else pa.float64()
                    for j, name in enumerate(names)
                },
                null_values=list(MISSING_TOKENS),
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid:
        return None
    numeric = [j for j in range(len(names)) if j not in textual]
    numbers = _float64_matrix(table.select(numeric)) if numeric else None
    if numbers is not None and not textual:
        return numbers, {}
    values = np.empty((table.num_rows, len(names)), dtype=np.float64)
    if numbers is not None:
        values[:, numeric] = numbers
    texts: dict[int, np.ndarray] = {}
    for j in sorted(textual):
        texts[j] = _as_text(table.column(j).to_numpy())
        values[:, j] = _numbers_of(texts[j])
    return values, texts


def _float64_matrix(table: pa.Table) -> np.ndarray:
    """An Arrow table of float64 columns as one C-ordered (rows, columns) array, NaN where
    null, converted by Arrow (a row-major tensor of each record batch); pyarrow's
    ``to_numpy`` and ``to_pandas`` would import pandas, a large part of fip's start-up."""
    parts = [
        np.asarray(batch.to_tensor(null_to_nan=True, row_major=True))
        for batch in table.to_batches()
        if batch.num_rows
    ]
    if not parts:
        return np.zeros((0, table.num_columns))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _data_lines(block: bytes, first: int, layout: Layout, label: str) -> np.ndarray:
    """Line numbers of a block's data rows (blank lines skipped), refusing rows of the wrong
    width; ``first`` is the file's line number of the block's first line.

    Vectorised over the bytes: fields per line = commas + 1, from the positions of the line
    endings and the commas (no per-byte array but the comparison's). Blocks with quoted cells
    take a slower exact path through the csv module (a row is on the line where it starts).
    """
    width = len(layout.columns)
    if b'"' in block:  # lines as the blocks count them; a row is on the line it starts on
        newline = layout.newline.decode()
        *ended, last = block.decode("utf-8", errors="replace").split(newline)
        reader = csv.reader([*(line + newline for line in ended), *([last] if last else [])])
        counts: list[int] = []
        begins: list[int] = []
        consumed = 0
        try:
            for row in reader:
                counts.append(len(row))
                begins.append(consumed)
                consumed = reader.line_num
        except csv.Error as error:
            raise InputError(
                f"{label}: the file is not a well-formed CSV (line {first + consumed}: {error})"
            ) from None
        fields = np.array(counts, dtype=np.int64)
        blank = fields == 0
        numbers = first + np.array(begins, dtype=np.int64)
    else:
        buffer = np.frombuffer(block, dtype=np.uint8)
        ends = np.flatnonzero(buffer == layout.newline[0])
        starts = np.concatenate(([0], ends + 1))
        stops = np.concatenate((ends, [buffer.size]))
        if starts[-1] == buffer.size:
            starts, stops = starts[:-1], stops[:-1]
        lengths = stops - starts
        carriage = np.zeros(starts.size, dtype=bool)
        if layout.newline == b"\n":
            carriage = (lengths > 0) & (buffer[np.maximum(stops - 1, 0)] == ord("\r"))
        blank = (lengths - carriage) == 0
        positions = np.flatnonzero(buffer == ord(","))  # one int64 per comma, not per byte
        commas = np.searchsorted(positions, stops) - np.searchsorted(positions, starts)
        fields = commas + 1
        numbers = np.arange(first, blank.size + first, dtype=np.int64)
    wrong = np.flatnonzero(~blank & (fields != width))
    if wrong.size:
        at = int(wrong[0])
        more = f" ({wrong.size} such lines)" if wrong.size > 1 else ""
        raise InputError(
            f"{label}: line {numbers[at]} has {fields[at]} fields but the header has "
            f"{width} columns{more}"
        )
    kept: np.ndarray = numbers[~blank]
    return kept


def _parse_exact(
    block: bytes, lines: np.ndarray, layout: Layout, label: str, textual: frozenset[int]
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """The numbers of a block of whole lines by pandas, one row per entry of ``lines``, and
    the cells of its text columns; a non-numeric cell is named with its column and line."""
    import pandas as pd

    types = {
        name: (object if j in textual else np.float64) for j, name in enumerate(layout.columns)
    }
    try:
        frame = pd.read_csv(io.BytesIO(block), dtype=types, **_pandas_options(layout))
    except UnicodeDecodeError:
        raise InputError(f"{label}: not a UTF-8 text file") from None
    except ValueError as error:
        if isinstance(error, pd.errors.ParserError):
            raise InputError(f"{label}: the file is not a well-formed CSV ({error})") from None
        raise InputError(_explain_non_numeric(block, layout, lines, label, textual)) from None
    if len(frame) != lines.size:
        raise InputError(
            f"{label}: the file is not a well-formed CSV (lines {lines[0]} to {lines[-1]} give "
            f"{len(frame)} rows instead of {lines.size})"
        )
    if not textual:
        values: np.ndarray = frame.to_numpy(dtype=np.float64)
        return values, {}
    values = np.empty((len(frame), len(layout.columns)), dtype=np.float64)
    texts: dict[int, np.ndarray] = {}
    for j, name in enumerate(layout.columns):
        if j in textual:
            texts[j] = _as_text(frame[name].to_numpy(dtype=object))
            values[:, j] = _numbers_of(texts[j])
        else:
            values[:, j] = frame[name].to_numpy(dtype=np.float64)
    return values, texts


def _pandas_options(layout: Layout) -> dict[str, Any]:
    return {
        "na_values": list(MISSING_TOKENS),
        "keep_default_na": False,
        "skipinitialspace": True,
        "encoding": "utf-8",
        "header": None,
        "names": list(layout.columns),
        "index_col": False,
    }


def _explain_non_numeric(
    block: bytes, layout: Layout, lines: np.ndarray, label: str, textual: frozenset[int]
) -> str:
    """Find the first non-numeric cell of each offending column; slow path, errors only."""
    import pandas as pd

    options = {**_pandas_options(layout), "na_values": None}
    text = pd.read_csv(io.BytesIO(block), dtype=str, **options)
    problems = []
    for j, name in enumerate(layout.columns):
        if j in textual:
            continue
        cells = text[name]
        is_missing = cells.isin(MISSING_TOKENS).to_numpy()
        numeric = pd.to_numeric(cells.where(~is_missing), errors="coerce")
        bad = np.flatnonzero(numeric.isna().to_numpy() & ~is_missing)
        if bad.size:
            first = int(bad[0])
            problems.append(
                f"column '{name}' is not numeric: line {lines[first]} has {cells.iloc[first]!r}"
                + (f" ({bad.size} such cells)" if bad.size > 1 else "")
                + TEXT_HINT
            )
    if not problems:
        return f"{label}: the file could not be read as numbers"
    return f"{label}: " + "; ".join(problems)


def _as_text(cells: np.ndarray) -> np.ndarray:
    """Text cells as an object array, None where missing (a missing token, or NaN)."""
    import pandas as pd

    result = np.array(cells, dtype=object)
    result[pd.isna(result)] = None
    return result


def _numbers_of(cells: np.ndarray) -> np.ndarray:
    """The cells of a text column that read as numbers; NaN for the others."""
    import pandas as pd

    numbers: np.ndarray = pd.to_numeric(
        pd.Series(cells, dtype=object).str.strip(), errors="coerce"
    ).to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    numbers[np.isinf(numbers)] = np.nan
    return numbers
