"""What the job wizard reads from an uploaded CSV, as it streams in: column names and counts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from algorithms import methods
from algorithms.methods._levels import MAX_LEVELS
from federation.data import CsvStream


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

    @property
    def missing_share(self) -> float:
        return self.missing / self.rows if self.rows else 0.0

    @property
    def guess(self) -> str:
        return methods.suggest(binary=self.binary)


class HeaderReader:
    """The wizard's reading of a CSV as it is uploaded: per column the rows, the missing cells
    and whether every observed value is 0 or 1. A block of lines is read at a time and
    dropped; the file is never held whole, and nothing of it is kept but these counts."""

    def __init__(self, *, label: str) -> None:
        self._csv = CsvStream(label=label)
        self._missing = np.zeros(0, dtype=np.int64)
        self._observed = np.zeros(0, dtype=np.int64)
        self._binary = np.zeros(0, dtype=bool)
        self._values: list[set[float] | None] = []

    def feed(self, data: bytes) -> None:
        self._count(self._csv.feed(data))

    def finish(self) -> list[ColumnSummary]:
        self._count(self._csv.finish())
        return [
            ColumnSummary(
                name=name,
                rows=self._csv.rows,
                missing=int(self._missing[index]),
                binary=bool(self._observed[index]) and bool(self._binary[index]),
                levels=tuple(sorted(self._values[index] or ())),
            )
            for index, name in enumerate(self._csv.columns)
        ]

    def _count(self, blocks: list[tuple[np.ndarray, np.ndarray]]) -> None:
        for values, _ in blocks:
            if not self._missing.size:
                width = values.shape[1]
                self._missing = np.zeros(width, dtype=np.int64)
                self._observed = np.zeros(width, dtype=np.int64)
                self._binary = np.ones(width, dtype=bool)
            missing = np.isnan(values)
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


def summarize(content: bytes, *, label: str) -> list[ColumnSummary]:
    """Per column: rows, missing cells and whether it looks binary, from a whole file."""
    reader = HeaderReader(label=label)
    for start in range(0, len(content), 1 << 20):
        reader.feed(content[start : start + (1 << 20)])
    return reader.finish()
