"""What the job wizard reads from an uploaded CSV: column names and counts, nothing else."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from federation.data import read_csv


@dataclass(frozen=True)
class ColumnSummary:
    name: str
    rows: int
    missing: int
    binary: bool
    """Every observed value is 0 or 1 (and there is at least one)."""

    @property
    def missing_share(self) -> float:
        return self.missing / self.rows if self.rows else 0.0

    @property
    def guess(self) -> str:
        return "logistic" if self.binary else "gaussian"


def summarize(content: bytes, *, label: str) -> list[ColumnSummary]:
    """Per column: rows, missing cells and whether it looks binary. The data is then dropped."""
    table = read_csv(content, label=label)
    values = table.values
    missing = np.isnan(values)
    summaries = []
    for index, name in enumerate(table.columns):
        observed = values[~missing[:, index], index]
        summaries.append(
            ColumnSummary(
                name=name,
                rows=table.rows,
                missing=int(missing[:, index].sum()),
                binary=bool(observed.size) and bool(np.all((observed == 0) | (observed == 1))),
            )
        )
    return summaries
