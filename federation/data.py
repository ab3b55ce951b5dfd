"""Reading a site's CSV into memory, and checking it against a job.

A table is a header row of unique column names and numeric cells; the columns named in
``read_csv(text=...)`` (a job's factor, carried and text-target columns: ``federation.roles``)
may hold text too. Missing cells are empty or one of ``MISSING_TOKENS``. A first column with an
empty name is R's ``write.csv`` row names: it is left out, with a note. Every error names the
file (its label), and the column or line, and shows an example of the offending value.

A file, from disk or uploaded, is parsed as it arrives, a block of lines at a time
(``federation.csv_stream``), into a matrix that grows in place: reading holds the matrix and a
block of the file, never the whole file beside it.
"""

from __future__ import annotations

import asyncio
import mmap
from collections.abc import AsyncIterable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from algorithms import methods
from federation import csv_stream
from federation.csv_stream import MISSING_TOKENS, ROW_NAMES, CsvStream, Rows
from federation.errors import InputError, unreadable

__all__ = ["MISSING_TOKENS", "Table", "TableReader", "read_csv", "read_csv_chunks"]

_EXAMPLES = 3
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
    """Read a CSV file (a path, or its bytes) into a :class:`Table`.

    Columns named in ``text`` may hold text: their cells are kept as written in
    :attr:`Table.text` (and as numbers in ``values`` where they read as one); any other column
    must be numeric. The file goes through :class:`TableReader` a block at a time, as an
    upload does (a path is never read whole): the memory it takes is about its matrix.
    """
    if label is None:
        label = str(source) if isinstance(source, Path) else "uploaded file"
    reader = TableReader(label=label, text=text)
    for piece in _pieces(source, label):
        reader.feed(piece)
    return reader.finish()


async def read_csv_chunks(
    chunks: AsyncIterable[bytes], *, label: str, text: Collection[str] = ()
) -> Table:
    """:func:`read_csv` of a file that arrives in pieces (an upload): a block at a time is
    parsed in a worker thread as the pieces come in, so the event loop stays free and
    neither the whole file nor a copy of it on disk ever exists."""
    reader = TableReader(label=label, text=text)
    pending = bytearray()
    async for chunk in chunks:
        pending += chunk
        if len(pending) >= csv_stream._BLOCK:
            await asyncio.to_thread(reader.feed, pending)
            pending.clear()
    await asyncio.to_thread(reader.feed, pending)
    return await asyncio.to_thread(reader.finish)


class TableReader:
    """A CSV read into a :class:`Table` as it arrives (``feed`` its bytes in pieces of any
    size, then ``finish``): each block of whole lines is parsed
    (:class:`federation.csv_stream.CsvStream`) and its rows appended to the matrix, so what is
    held is the matrix and a block of the file. The errors name the line and column at fault
    as soon as a block holding them is complete. R's ``write.csv`` row-name column is left out
    as it is read, with a note."""

    def __init__(self, *, label: str, text: Collection[str] = ()) -> None:
        self.label = label
        self._stream = CsvStream(label=label, text=text)
        self._kept: list[int] = []
        self._matrix: _Matrix | None = None
        self._lines: list[np.ndarray] | None = None
        """Each block's line numbers, from the first row whose line is not its row + 2 (a
        blank line before it) on; None while every row is on that line."""
        self._texts: dict[int, list[np.ndarray]] = {}

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        for rows in self._stream.feed(data):
            self._append(rows)

    def finish(self) -> Table:
        for rows in self._stream.finish():
            self._append(rows)
        assert self._matrix is not None  # finish raised for a file without rows
        columns = self._stream.columns
        notes: tuple[str, ...] = ()
        if ROW_NAMES in columns:
            notes = (f"{self.label}: {ROW_NAMES_NOTE}",)
        return Table(
            label=self.label,
            columns=tuple(columns[j] for j in self._kept),
            values=self._matrix.array(),
            lines=np.concatenate(self._lines) if self._lines is not None else None,
            text={
                columns[j]: np.concatenate(parts)
                for j, parts in self._texts.items()
                if columns[j] != ROW_NAMES
            },
            notes=notes,
        )

    def _append(self, rows: Rows) -> None:
        if self._matrix is None:
            columns = self._stream.columns
            self._kept = [j for j, name in enumerate(columns) if name != ROW_NAMES]
            self._matrix = _Matrix(len(self._kept))
        done = self._matrix.rows
        if self._lines is None and rows.lines[-1] != done + rows.lines.size + 1:
            self._lines = [np.arange(2, done + 2, dtype=np.int64)]
        if self._lines is not None:
            self._lines.append(rows.lines)
        kept = (
            rows.values if len(self._kept) == rows.values.shape[1] else rows.values[:, self._kept]
        )
        self._matrix.append(kept)
        for j, cells in rows.texts.items():
            self._texts.setdefault(j, []).append(cells)


class _Matrix:
    """Rows of float64 appended at the end of one anonymous memory map that grows in place
    (``mremap``: its pages are remapped, never copied, and those not yet written take no
    memory), so a table of unknown length is built without a second copy of it. A view of the
    map must not outlive an append: ``mmap`` refuses to resize under one."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.rows = 0
        self._map = _anonymous(max(mmap.PAGESIZE, width * 8 * 1024))

    def append(self, values: np.ndarray) -> None:
        start, size = self.rows * self.width * 8, values.size * 8
        if start + size > len(self._map):
            self._resize(max(2 * len(self._map), start + size))
        into = np.frombuffer(self._map, dtype=np.float64, count=values.size, offset=start)
        into.reshape(values.shape)[...] = values
        del into  # the map cannot be resized while a view of it lives
        self.rows += values.shape[0]

    def array(self) -> np.ndarray:
        """The rows as an (n, width) array over the map, which is trimmed to them."""
        self._resize(max(self.rows * self.width * 8, 8))
        values = np.frombuffer(self._map, dtype=np.float64, count=self.rows * self.width)
        return values.reshape(self.rows, self.width)

    def _resize(self, size: int) -> None:
        try:
            self._map.resize(size)
            _huge_pages(self._map)
        except (OSError, SystemError):  # no mremap (not Linux): a new map, and one copy
            bigger = _anonymous(size)
            kept = min(size, len(self._map))
            bigger[:kept] = self._map[:kept]
            self._map.close()
            self._map = bigger


def _anonymous(size: int) -> mmap.mmap:
    """Private memory (a shared map would be a file in memory, which cannot grow in place),
    in huge pages where the system gives them (as numpy asks for its large arrays): a page
    fault per 2 MiB instead of per 4 KiB, which took half the time of filling the map."""
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    _huge_pages(memory)
    return memory


def _huge_pages(memory: mmap.mmap) -> None:
    if hasattr(mmap, "MADV_HUGEPAGE"):  # Linux
        try:
            memory.madvise(mmap.MADV_HUGEPAGE)
        except OSError:  # a kernel without transparent huge pages
            pass


def _pieces(source: Path | bytes | bytearray, label: str) -> Iterator[bytes | memoryview]:
    """A file's bytes a block at a time (from disk or from memory), never all at once."""
    if not isinstance(source, Path):
        view = memoryview(source)
        for start in range(0, len(view), csv_stream._BLOCK):
            yield view[start : start + csv_stream._BLOCK]
        return
    try:
        file = source.open("rb")
    except OSError as error:
        raise unreadable(label, error) from None
    with file:
        while piece := file.read(csv_stream._BLOCK):
            yield piece


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


def _names(names: Sequence[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
