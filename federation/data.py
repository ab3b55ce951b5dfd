"""Reading a site's CSV into memory, and checking it against a job.

A table is a header row of unique column names and numeric cells; the columns named in
``read_csv(text=...)`` (a job's factor, carried and text-target columns: ``federation.roles``)
may hold text too. Missing cells are empty or one of ``MISSING_TOKENS``. A first column with an
empty name is R's ``write.csv`` row names: it is left out, with a note. Every error names the
file (its label), and the column or line, and shows an example of the offending value.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from algorithms import methods
from federation.errors import InputError

# pandas is imported by the functions that need it (text columns, the exact reader, errors):
# a plain numeric file is read by Arrow alone, and fip starts without pandas' import.

MISSING_TOKENS = ("", "NA", "NaN", "nan", "N/A", "NULL")
TEXT_HINT = " (only a factor, carried or categorical target column may hold text)"
"""Cell texts read as missing. R writes NA, pandas writes an empty cell."""

_EXAMPLES = 3
_BLOCK = 2 << 20
"""Bytes of whole lines parsed at a time: the per-byte work never spans the whole file."""
_LF, _CR = ord("\n"), ord("\r")
ROW_NAMES = "\x00row names"
"""The name a row-name column (R's ``write.csv``: a first column whose header is "") is read
under before it is left out; no header can spell it."""
ROW_NAMES_NOTE = (
    "the first column has no name, as R's write.csv writes row names: it was left out "
    "(write.csv(..., row.names = FALSE) leaves it out)"
)


@dataclass(frozen=True)
class Table:
    """A site's data in memory: column names and an (n, p) float64 matrix, NaN for missing.

    ``lines`` holds the file's line number of each row, for messages (blank lines are skipped).
    """

    label: str
    columns: tuple[str, ...]
    values: np.ndarray
    lines: np.ndarray | None = None
    text: Mapping[str, np.ndarray] = field(default_factory=dict)
    """The cells of the columns read as text, as written (object arrays, None where missing);
    their entries in ``values`` are the cells that read as numbers, NaN for the others."""
    notes: tuple[str, ...] = ()
    """What reading did that the user should know (a row-name column left out)."""
    layout: tuple[str, ...] = ()
    """The file's columns in its order, when ``columns`` are a job's (``federation.roles``):
    outputs write them back in this order, carried columns included."""
    coded: bool = False
    """The table is in a job's layout (``federation.roles.code_table``)."""

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


def read_csv(
    source: Path | bytes | bytearray, *, label: str | None = None, text: Collection[str] = ()
) -> Table:
    """Read a CSV file (a path, or its bytes for uploads) into a :class:`Table`.

    Columns named in ``text`` may hold text: their cells are kept as written in
    :attr:`Table.text` (and as numbers in ``values`` where they read as one); any other column
    must be numeric.

    A plain file (no quotes, LF or CRLF line endings) is parsed in one pass by Arrow's CSV
    reader, batch by batch straight into the preallocated float64 matrix, with the missing
    tokens as nulls. Anything it does not take as plain numbers of the header's width (a
    ragged row, a non-numeric cell, bad UTF-8, quotes, CR-only lines) is read by the exact
    reader, which names the line and column at fault. Either way the peak memory is about the
    file plus its matrix.
    """
    if label is None:
        label = str(source) if isinstance(source, Path) else "uploaded file"
    content = _read_bytes(source, label)
    layout = _layout(content, label)
    textual = frozenset(
        j for j, name in enumerate(layout.columns) if name in text or name == ROW_NAMES
    )
    plain = _read_plain(content, layout, textual)
    if plain is None:
        return _without_row_names(_read_exact(content, layout, label, textual))
    values, strings = plain
    if values.shape[0] == 0:
        raise InputError(f"{label}: the file has a header but no data rows")
    lines = None
    if values.shape[0] != _line_count(content, layout.body_start)[0]:  # blank lines skipped
        lines = np.concatenate(
            [
                _data_lines(content[start:stop], first, layout, label)
                for start, stop, first in _numbered(content, layout)
            ]
        )
    table = Table(label=label, columns=layout.columns, values=values, lines=lines, text=strings)
    step = _BLOCK // 8
    for start in range(0, table.rows, step):
        rows, cols = np.nonzero(np.isinf(values[start : start + step]))
        if rows.size:
            raise InputError(
                f"{label}: column '{layout.columns[cols[0]]}' has an infinite value on line "
                f"{table.line(start + int(rows[0]))}"
            )
    return _without_row_names(table)


def _without_row_names(table: Table) -> Table:
    """The table without R's row-name column (a note says so), or as it is."""
    if ROW_NAMES not in table.columns:
        return table
    position = table.columns.index(ROW_NAMES)
    return Table(
        label=table.label,
        columns=tuple(c for c in table.columns if c != ROW_NAMES),
        values=np.delete(table.values, position, axis=1),
        lines=table.lines,
        text={k: v for k, v in table.text.items() if k != ROW_NAMES},
        notes=(*table.notes, f"{table.label}: {ROW_NAMES_NOTE}"),
    )


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


def _read_exact(
    content: bytes | bytearray, layout: _Layout, label: str, textual: frozenset[int] = frozenset()
) -> Table:
    """The exact reader: blocks of whole lines, their widths checked line by line, each parsed
    by pandas into the preallocated matrix; every error names its line."""
    blocks = list(_blocks(content, layout))
    lines: list[np.ndarray] = []
    first = 2
    for start, stop in blocks:
        lines.append(_data_lines(content[start:stop], first, layout, label))
        first += content.count(layout.newline, start, stop)
    numbers = np.concatenate(lines) if lines else np.zeros(0, dtype=np.int64)
    if numbers.size == 0:
        raise InputError(f"{label}: the file has a header but no data rows")
    values = np.empty((numbers.size, len(layout.columns)), dtype=np.float64)
    strings: dict[int, list[np.ndarray]] = {j: [] for j in textual}
    row = 0
    for (start, stop), block_lines in zip(blocks, lines, strict=True):
        if block_lines.size:
            part = values[row : row + block_lines.size]
            part[...], texts = _parse_block(
                content[start:stop], block_lines, layout, label, textual
            )
            _reject_infinite(label, layout.columns, part, block_lines)
            for j, cells in texts.items():
                strings[j].append(cells)
            row += block_lines.size
    return Table(
        label=label,
        columns=layout.columns,
        values=values,
        lines=numbers,
        text={layout.columns[j]: np.concatenate(parts) for j, parts in strings.items()},
    )


def _read_plain(
    content: bytes | bytearray, layout: _Layout, textual: frozenset[int] = frozenset()
) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """The matrix (and the text columns' cells) of a plain file by Arrow's reader, or None
    where the exact reader must read it (Arrow refused it, or it has quotes or CR-only lines)."""
    if layout.newline != b"\n" or b'"' in content:
        return None
    names = [f"c{j}" for j in range(len(layout.columns))]
    lines, lone_cr = _line_count(content, layout.body_start)
    if lone_cr:  # a CR that ends no CRLF: the exact reader says where
        return None
    upper = lines + 1
    values = np.empty((upper, len(names)), dtype=np.float64)
    strings: dict[int, list[np.ndarray]] = {j: [] for j in textual}
    row = 0
    try:
        reader = pa_csv.open_csv(
            pa.BufferReader(pa.py_buffer(content)),
            read_options=pa_csv.ReadOptions(
                column_names=names, skip_rows=1, block_size=_BLOCK, encoding="utf8"
            ),
            parse_options=pa_csv.ParseOptions(newlines_in_values=False, quote_char=False),
            convert_options=pa_csv.ConvertOptions(
                column_types={
                    name: pa.string() if j in textual else pa.float64()
                    for j, name in enumerate(names)
                },
                null_values=list(MISSING_TOKENS),
                strings_can_be_null=True,
            ),
        )
        for batch in reader:
            stop = row + batch.num_rows
            if stop > upper:  # cannot happen: every row ends a line
                return None
            for j in range(len(names)):
                column = batch.column(j)
                if j in textual:
                    cells = _as_text(column.to_numpy(zero_copy_only=False))
                    strings[j].append(cells)
                    values[row:stop, j] = _numbers_of(cells)
                else:
                    values[row:stop, j] = _float64s(column)
            row = stop
    except pa.ArrowInvalid:
        return None
    text = {
        layout.columns[j]: np.concatenate(parts) if parts else np.zeros(0, dtype=object)
        for j, parts in strings.items()
    }
    return values[:row], text


def _float64s(column: pa.Array) -> np.ndarray:
    """A float64 column's cells, NaN where null, read from its Arrow buffers (pyarrow's
    ``to_numpy`` imports pandas, a large part of fip's start-up)."""
    size, offset = len(column), column.offset
    validity, data = column.buffers()
    if data is None or column.null_count == size:
        return np.full(size, np.nan)
    values = np.frombuffer(data, dtype=np.float64, count=size, offset=8 * offset)
    if not column.null_count:
        return values
    bits = np.frombuffer(validity, dtype=np.uint8)
    valid = np.unpackbits(bits, count=offset + size, bitorder="little")[offset:]
    return np.where(valid.view(bool), values, np.nan)


def _line_count(content: bytes | bytearray, start: int) -> tuple[int, bool]:
    """Lines after ``start`` (the last counted whether or not it ends with a LF), and whether
    a CR stands anywhere but before a LF."""
    buffer = np.frombuffer(content, dtype=np.uint8)[start:]
    any_cr = b"\r" in content
    count, lone_cr = 0, False
    for first in range(0, buffer.size, _BLOCK):
        block = buffer[first : first + _BLOCK + 1]  # one byte more: what follows a CR
        count += int(np.count_nonzero(block[:_BLOCK] == _LF))
        if any_cr:
            after = np.flatnonzero(block[:_BLOCK] == _CR) + 1
            lone_cr |= bool((after >= block.size).any())
            lone_cr |= bool((block[after[after < block.size]] != _LF).any())
    if buffer.size and buffer[-1] != _LF:
        count += 1
    return count, lone_cr


def _numbered(content: bytes | bytearray, layout: _Layout) -> Iterator[tuple[int, int, int]]:
    """The exact reader's blocks, each with the file's line number of its first line."""
    first = 2
    for start, stop in _blocks(content, layout):
        yield start, stop, first
        first += content.count(layout.newline, start, stop)


class CsvStream:
    """A CSV read as it arrives, a block of whole lines at a time, never held whole.

    ``feed`` takes the next bytes and returns the rows of the blocks it completed, as pairs of
    values and line numbers; ``finish`` returns the rest. Its errors are those of
    :func:`read_csv`, with the same line numbers.
    """

    def __init__(self, *, label: str, text: bool = False) -> None:
        self.label = label
        self.text = text
        """Every column may hold text: :attr:`texts` collects, for each block that is not all
        numbers, its cells as written (central's header scan proposes roles from them)."""
        self.texts: list[dict[int, np.ndarray]] = []
        self.rows = 0
        self._pending = bytearray()
        self._layout: _Layout | None = None
        self._line = 2
        self._next_cut = _BLOCK

    @property
    def columns(self) -> tuple[str, ...]:
        return self._layout.columns if self._layout is not None else ()

    def feed(self, data: bytes) -> list[tuple[np.ndarray, np.ndarray]]:
        self._pending += data
        if self._layout is None:
            if not _header_complete(self._pending):
                return []
            self._layout = _layout(bytes(self._pending), self.label)
            del self._pending[: self._layout.body_start]
        parsed: list[tuple[np.ndarray, np.ndarray]] = []
        while len(self._pending) >= self._next_cut:  # a block at a time, however much came in
            window = bytes(self._pending[: self._next_cut])
            cut = _last_cut(window, self._layout.newline, len(window))
            if cut <= 0:  # one long line, or quotes open: try again when twice as much is in
                self._next_cut = 2 * len(window)
                continue
            self._next_cut = _BLOCK
            del self._pending[:cut]
            parsed += self._parse(window[:cut])
        return parsed

    def finish(self) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._layout is None:
            self._layout = _layout(bytes(self._pending), self.label)
            del self._pending[: self._layout.body_start]
        parsed = self._parse(bytes(self._pending))
        self._pending.clear()
        if self.rows == 0:
            raise InputError(f"{self.label}: the file has a header but no data rows")
        return parsed

    def _parse(self, block: bytes) -> list[tuple[np.ndarray, np.ndarray]]:
        assert self._layout is not None
        lines = _data_lines(block, self._line, self._layout, self.label)
        self._line += block.count(self._layout.newline)
        if not lines.size:
            return []
        try:  # numbers first: the common case, several times faster than text
            values, texts = _parse_block(block, lines, self._layout, self.label)
        except InputError:
            if not self.text:
                raise
            every = frozenset(range(len(self._layout.columns)))
            values, texts = _parse_block(block, lines, self._layout, self.label, every)
        if self.text:
            self.texts.append(texts)
        _reject_infinite(self.label, self._layout.columns, values, lines)
        self.rows += lines.size
        return [(values, lines)]


def check_columns(table: Table, expected: Sequence[str], *, ignore: Iterable[str] = ()) -> None:
    """The table's header must hold the ``expected`` columns, in any order (matched by name),
    and no other but those in ``ignore`` (a job's carried columns, which a site may hold or
    not); the message shows the difference."""
    if tuple(expected) == table.columns:
        return
    ignored = set(ignore)
    missing = [c for c in expected if c not in table.columns]
    extra = [c for c in table.columns if c not in expected and c not in ignored]
    parts = []
    if missing:
        parts.append(f"missing {_names(missing)}")
    if extra:
        parts.append(f"unexpected {_names(extra)}")
    if not parts:
        return
    raise InputError(f"{table.label}: columns differ from the job's: " + "; ".join(parts))


def check_target_values(
    table: Table,
    column: int,
    method: str,
    *,
    show_values: bool = True,
    levels: Sequence[float] = (),
) -> None:
    """A target's observed cells must be values its method takes (a binary target: 0 and 1;
    a categorical or ordinal one: the job's ``levels``; ``algorithms.methods`` says which).

    The message gives the first few offending cells with their lines, or with
    ``show_values=False`` their lines only.
    """
    chosen = methods.get(method, field=f"target '{table.columns[column]}'")
    cells = table.values[:, column]
    bad = np.flatnonzero(chosen.invalid(cells, levels))
    if bad.size and chosen.levels and levels:
        where = ""
        if show_values:
            where = ", e.g. " + ", ".join(
                f"{_number(cells[i])} (line {table.line(int(i))})" for i in bad[:_EXAMPLES]
            )
        raise InputError(
            f"{table.label}: column '{table.columns[column]}' holds {bad.size} cell(s) outside "
            f"the job's levels ({', '.join(f'{v:g}' for v in levels)}){where}; recode them or "
            "ask central to add the level to the job"
        )
    if bad.size:
        if show_values:
            examples = ", ".join(
                f"{_number(cells[i])} (line {table.line(int(i))})" for i in bad[:_EXAMPLES]
            )
        else:
            examples = "on line(s) " + ", ".join(str(table.line(int(i))) for i in bad[:_EXAMPLES])
        raise InputError(
            f"{table.label}: column '{table.columns[column]}' is a {chosen.label} target "
            f"({chosen.name}) but {bad.size} cell(s) are not {chosen.expects}, e.g. {examples}"
        )


def check_for_job(
    table: Table,
    columns: Sequence[str],
    targets: Iterable[tuple[str, str] | tuple[str, str, Sequence[float]]],
    *,
    show_values: bool = True,
    alone: bool = False,
) -> None:
    """Everything a job needs of a table, checked when it is uploaded, at central and at sites:
    the job's columns in order, and in each target (name, method) only values its method
    takes. A target that this table never observes is fine where others take part (the pooled
    fit imputes it: that is what federation is for); ``alone`` (central's table in a job
    of no site) refuses it, since nothing could fit it.

    ``show_values=False`` keeps cell values out of the messages (lines and counts only).
    """
    check_columns(table, columns)
    for name, kind, *rest in targets:
        levels: Sequence[float] = rest[0] if rest else ()
        column = table.column(name)
        if alone and np.isnan(table.values[:, column]).all():
            raise InputError(
                f"{table.label}: column '{name}' is a target but every cell is missing, and no "
                "site takes part: there is nothing to fit it on"
            )
        check_target_values(table, column, kind, show_values=show_values, levels=levels)


def _read_bytes(source: Path | bytes | bytearray, label: str) -> bytes | bytearray:
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


@dataclass(frozen=True)
class _Layout:
    columns: tuple[str, ...]
    newline: bytes
    """b"\\n" (with or without a carriage return before it), or b"\\r" for CR-only files."""
    body_start: int
    """Offset of the first byte after the header line."""


def _header_complete(content: bytes | bytearray) -> bool:
    """The header line's end is known: a LF, or a CR with the byte after it (CRLF or not)."""
    cr, lf = content.find(b"\r"), content.find(b"\n")
    return (lf >= 0 and (cr < 0 or cr > lf)) or 0 <= cr < len(content) - 1


def _layout(content: bytes | bytearray, label: str) -> _Layout:
    """The header's names, the line ending (from the header line's) and where the rows start."""
    lf = content.find(b"\n")
    cr = content.find(b"\r", 0, lf if lf >= 0 else len(content))
    if cr >= 0 and content[cr + 1 : cr + 2] != b"\n":
        end, newline = cr, b"\r"
    else:
        end, newline = (lf if lf >= 0 else len(content)), b"\n"
    try:
        first = content[:end].decode("utf-8-sig")
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
    return _Layout(columns=tuple(names), newline=newline, body_start=min(end + 1, len(content)))


def _last_cut(content: bytes | bytearray, newline: bytes, stop: int, start: int = 0) -> int:
    """The offset just after the last line ending before ``stop`` that is outside quotes."""
    cut = content.rfind(newline, start, stop) + 1
    while cut > start and content.count(b'"', start, cut) % 2:
        cut = content.rfind(newline, start, cut - 1) + 1
    return cut


def _blocks(content: bytes | bytearray, layout: _Layout) -> Iterator[tuple[int, int]]:
    """(start, stop) offsets of blocks of whole lines (about ``_BLOCK`` bytes) after the header.

    A line longer than a block, or quotes left open across one, makes the rest one block.
    """
    start, size = layout.body_start, len(content)
    while start < size:
        cut = _last_cut(content, layout.newline, start + _BLOCK, start)
        if start + _BLOCK >= size or cut <= start:
            yield start, size
            return
        yield start, cut
        start = cut


def _data_lines(block: bytes | bytearray, first: int, layout: _Layout, label: str) -> np.ndarray:
    """Line numbers of a block's data rows (blank lines skipped), refusing rows of the wrong
    width; ``first`` is the file's line number of the block's first line.

    Vectorised over the bytes: fields per line = commas + 1. Blocks with quoted cells take a
    slower exact path through the csv module.
    """
    width = len(layout.columns)
    if b'"' in block:
        text = block.decode("utf-8", errors="replace")
        counts = np.array(
            [len(row) for row in csv.reader(io.StringIO(text, newline=""))], dtype=np.int64
        )
        blank = counts == 0
        fields = counts
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


def _parse_block(
    block: bytes | bytearray,
    lines: np.ndarray,
    layout: _Layout,
    label: str,
    textual: frozenset[int] = frozenset(),
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """The numbers of a block of whole lines, one row per entry of ``lines``, and the cells of
    its text columns."""
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


def _pandas_options(layout: _Layout) -> dict[str, Any]:
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
    block: bytes | bytearray,
    layout: _Layout,
    lines: np.ndarray,
    label: str,
    textual: frozenset[int] = frozenset(),
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


def _reject_infinite(
    label: str, columns: tuple[str, ...], values: np.ndarray, lines: np.ndarray
) -> None:
    rows, cols = np.nonzero(np.isinf(values))
    if rows.size:
        raise InputError(
            f"{label}: column '{columns[cols[0]]}' has an infinite value on line "
            f"{lines[int(rows[0])]}"
        )


def _names(names: Sequence[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
