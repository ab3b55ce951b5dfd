"""What the job wizard reads from an uploaded CSV, as it streams in: column names, counts and the
missing-data pattern (R mice's md.pattern: which cells are missing together, and how often)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, NonNegativeInt, ValidationError

from algorithms import methods
from algorithms.methods._levels import MAX_LEVELS
from federation import roles
from federation.csv_stream import CsvStream, Rows
from federation.diagnostics import MissingPattern, md_pattern_of_counts

MAX_PATTERNS = 100_000
"""Distinct missingness patterns counted at most; rows of further new patterns are counted
together (a table whose every row is its own pattern must not grow the reader without bound)."""
SHOWN_PATTERNS = 20
"""Patterns the wizard lists: the most frequent ones."""
MAX_DISTINCT = 10_000
"""Distinct cells counted per column at most (enough to tell an ID from a factor)."""
_SUMMARY_ROWS = 1 << 14
"""Rows of a table counted at a time (:func:`summarize_table`)."""


@dataclass(frozen=True)
class ColumnSummary:
    name: str
    rows: int
    missing: int
    binary: bool
    """Every observed value is 0 or 1 (and there is at least one)."""
    levels: tuple[float, ...] = ()
    """Its distinct observed values when they are few integers (a categorical or ordinal
    target's default levels), else empty."""
    whole: bool = True
    """Every observed value is a whole number."""
    negative: bool = False
    """Some observed value is below 0."""
    missing_with: tuple[int, ...] = ()
    """Rows where this column and each column (in the header's order) are both missing; empty
    when not counted (a job's columns without a file)."""

    @property
    def counted(self) -> bool:
        """The counts come from a file (a job's definition alone has names only)."""
        return self.rows > 0

    @property
    def observed(self) -> methods.Observed:
        """What a method's check reads of the column."""
        count = self.rows - self.missing
        return methods.Observed(
            count=count,
            missing=self.missing,
            whole=self.whole,
            negative=self.negative,
            binary=self.binary or not count,
            levels=self.levels if self.levels or not count else None,
        )

    text_levels: tuple[str, ...] = ()
    """Its distinct observed cells, sorted, when some are text and they are few (a factor's or
    a text target's default levels), else empty."""
    numeric: bool = True
    """Every observed cell is a number."""
    integer: bool = False
    """Every observed cell is a whole number."""
    distinct: int = 0
    """Distinct observed cells, counted up to about ``MAX_DISTINCT``, for text and integer
    columns (0 for other numbers: their role does not depend on it)."""

    @property
    def missing_share(self) -> float:
        return self.missing / self.rows if self.rows else 0.0

    @property
    def guess(self) -> str:
        if not self.numeric:
            return "logistic" if len(self.text_levels) == 2 else "categorical"
        return methods.suggest(self.observed)

    @property
    def role(self) -> str:
        """The role the wizard proposes when the column is not a target (``federation.roles``):
        carried for an ID or free text, factor for text with few levels, else predictor."""
        observed = self.rows - self.missing
        return roles.role_of(
            numeric=self.numeric, integer=self.integer, distinct=self.distinct, observed=observed
        )


class HeaderReader:
    """The wizard's reading of a CSV as it is uploaded: per column the rows, the missing cells
    and whether every observed value is 0 or 1, and the count of each distinct pattern of
    missing cells. A block of lines is read at a time and dropped; the file is never held
    whole, and nothing of it is kept but these counts (never a value)."""

    def __init__(self, *, label: str) -> None:
        self._csv = CsvStream(label=label, all_text=True)  # any column may be text: roles say which
        self._missing = np.zeros(0, dtype=np.int64)
        self._observed = np.zeros(0, dtype=np.int64)
        self._binary = np.zeros(0, dtype=bool)
        self._whole = np.zeros(0, dtype=bool)
        self._negative = np.zeros(0, dtype=bool)
        self._together = np.zeros((0, 0), dtype=np.int64)
        self._patterns: dict[bytes, int] = {}
        self.uncounted_rows = 0
        """Rows whose pattern was new after MAX_PATTERNS distinct ones were counted."""
        self._values: list[set[float] | None] = []
        self._cells: list[set[str]] = []
        self._text: list[bool] = []
        self._integer: list[bool] = []

    def feed(self, data: bytes) -> None:
        self._count(self._csv.feed(data))

    def finish(self) -> list[ColumnSummary]:
        self._count(self._csv.finish())
        return self._summaries(self._csv.columns, self._csv.rows)

    def _summaries(self, columns: Sequence[str], rows: int) -> list[ColumnSummary]:
        return [
            ColumnSummary(
                name=name,
                rows=rows,
                missing=int(self._missing[index]),
                binary=bool(self._observed[index]) and bool(self._binary[index]),
                levels=tuple(sorted(self._values[index] or ())),
                whole=bool(self._whole[index]),
                negative=bool(self._negative[index]),
                missing_with=tuple(int(n) for n in self._together[index]),
                text_levels=self._text_levels(index),
                numeric=not self._text[index],
                integer=not self._text[index] and self._integer[index],
                distinct=len(self._cells[index]),
            )
            for index, name in enumerate(columns)
        ]

    def _text_levels(self, index: int) -> tuple[str, ...]:
        """A text column's distinct cells, when few and not one per row (an ID's never reach
        the page)."""
        cells = self._cells[index]
        observed = int(self._observed[index]) if self._observed.size else 0
        one_per_row = len(cells) >= observed > roles.FEW_LEVELS
        if not self._text[index] or len(cells) > MAX_LEVELS or one_per_row:
            return ()
        return tuple(sorted(cells))

    def _count(self, blocks: Sequence[Rows]) -> None:
        """Count ``blocks``: their values, and the cells of their columns read as text."""
        for values, _, texts in blocks:
            if not self._cells:
                width = values.shape[1]
                self._cells = [set() for _ in range(width)]
                self._text = [False] * width
                self._integer = [True] * width
            for column in range(values.shape[1]):
                if column in texts:
                    continue
                numbers = values[:, column]
                numbers = numbers[~np.isnan(numbers)]
                self._integer[column] &= bool((np.round(numbers) == numbers).all())
                # distinct numbers tell an integer ID from codes; other numbers need no count
                if self._integer[column] and len(self._cells[column]) < MAX_DISTINCT:
                    self._cells[column].update(map(str, np.unique(numbers)[:MAX_DISTINCT]))
            for column, cells in texts.items():
                present = cells[cells != None]  # noqa: E711 - elementwise over objects
                numbers = values[:, column][cells != None]  # noqa: E711
                self._text[column] |= bool(np.isnan(numbers).any())
                self._integer[column] &= bool((np.round(numbers) == numbers).all())
                cells_seen = self._cells[column]
                if len(cells_seen) < MAX_DISTINCT:
                    cells_seen.update(str(v).strip() for v in present[: MAX_DISTINCT * 2])
                # a text cell reads as NaN among the numbers: not a missing one
                values[:, column] = np.where(
                    (cells != None) & np.isnan(values[:, column]),  # noqa: E711
                    0.5,
                    values[:, column],
                )
            if not self._missing.size:
                width = values.shape[1]
                self._missing = np.zeros(width, dtype=np.int64)
                self._observed = np.zeros(width, dtype=np.int64)
                self._binary = np.ones(width, dtype=bool)
                self._whole = np.ones(width, dtype=bool)
                self._negative = np.zeros(width, dtype=bool)
                self._together = np.zeros((width, width), dtype=np.int64)
            missing = np.isnan(values)
            holes = missing.astype(np.int64)
            self._together += holes.T @ holes
            self._negative |= np.any(~missing & (values < 0), axis=0)
            self._whole &= np.all(missing | (np.round(values) == values), axis=0)
            self._missing += missing.sum(axis=0)
            self._observed += (~missing).sum(axis=0)
            self._binary &= np.all(missing | (values == 0) | (values == 1), axis=0)
            if not self._values:
                self._values = [set() for _ in range(values.shape[1])]
            for column, seen in enumerate(self._values):
                if seen is None:
                    continue
                cells = values[:, column]
                distinct = np.unique(cells[~np.isnan(cells)])
                if (np.round(distinct) != distinct).any():
                    self._values[column] = None
                    continue
                seen.update(float(v) for v in distinct)
                if len(seen) > MAX_LEVELS:
                    self._values[column] = None
            packed, counts = np.unique(np.packbits(missing, axis=1), axis=0, return_counts=True)
            for row, count in zip(packed, counts, strict=True):
                key = row.tobytes()
                if key in self._patterns or len(self._patterns) < MAX_PATTERNS:
                    self._patterns[key] = self._patterns.get(key, 0) + int(count)
                else:
                    self.uncounted_rows += int(count)

    def missing_pattern(self) -> MissingPattern | None:
        """The counted patterns as md.pattern orders them (after :meth:`finish`); None for a
        file without rows."""
        if not self._patterns:
            return None
        width = len(self._csv.columns)
        packed = np.frombuffer(b"".join(self._patterns), dtype=np.uint8).reshape(
            len(self._patterns), -1
        )
        missing = np.unpackbits(packed, axis=1, count=width).astype(bool)
        return md_pattern_of_counts(self._csv.columns, missing, list(self._patterns.values()))


def summarize_table(coding: roles.Coding) -> list[ColumnSummary]:
    """The same counts of a table already read, in the job's layout (central's upload, text
    levels as their codes: ``federation.roles.coding_of``), checked as its header was; a block
    of rows is put in that layout at a time, never the whole table beside itself."""
    table = coding.table
    reader = HeaderReader(label=table.label)
    step = _SUMMARY_ROWS  # a block of rows at a time: the counts' temporaries stay small
    for start in range(0, table.rows, step):
        rows = coding.rows(start, start + step)
        reader._count([Rows(rows, np.arange(start, start + rows.shape[0]), {})])
    return reader._summaries(coding.columns, table.rows)


def summarize(content: bytes, *, label: str) -> list[ColumnSummary]:
    """Per column: rows, missing cells and whether it looks binary, from a whole file."""
    reader = HeaderReader(label=label)
    for start in range(0, len(content), 1 << 20):
        reader.feed(content[start : start + (1 << 20)])
    return reader.finish()


def pattern_view(reader: HeaderReader, *, limit: int = SHOWN_PATTERNS) -> dict[str, Any]:
    """What the wizard shows of a read file's missing-data pattern: the ``limit`` most frequent
    patterns (in md.pattern's order), and how many patterns and rows it leaves out. The page
    keeps it in a hidden field (``pattern_json``), as it keeps the columns' counts."""
    pattern = reader.missing_pattern()
    if pattern is None:
        return {"pattern": None}
    shown, more, more_rows = pattern.most_frequent(limit)
    view = {
        "pattern": shown.to_dict(),
        "more_patterns": more,
        "more_rows": more_rows,
        "uncounted_rows": reader.uncounted_rows,
        "max_patterns": MAX_PATTERNS,
    }
    return view | {"pattern_json": json.dumps(view)}


class _Row(BaseModel):
    count: NonNegativeInt
    observed: list[bool]
    missing: NonNegativeInt


class _Pattern(BaseModel):
    columns: list[str]
    patterns: list[_Row]
    missing_per_column: list[NonNegativeInt]
    total_missing: NonNegativeInt


class _View(BaseModel):
    pattern: _Pattern
    more_patterns: NonNegativeInt
    more_rows: NonNegativeInt
    uncounted_rows: NonNegativeInt
    max_patterns: NonNegativeInt


def read_pattern_view(text: str, columns: Sequence[str]) -> dict[str, Any]:
    """The pattern a wizard page sent back in its hidden field, when it is one of ``columns``
    (shown again after an error in the form); nothing to show when it is not."""
    try:
        view = _View.model_validate_json(text)
    except ValidationError:
        return {"pattern": None}
    width = len(view.pattern.columns)
    if (
        sorted(view.pattern.columns) != sorted(columns)
        or len(view.pattern.patterns) > SHOWN_PATTERNS
        or len(view.pattern.missing_per_column) != width
        or any(len(row.observed) != width for row in view.pattern.patterns)
    ):
        return {"pattern": None}
    return view.model_dump() | {"pattern_json": text}
