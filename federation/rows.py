"""Which of a table's rows a built-in algorithm will use, and which it leaves out and why, as
ALGORITHMS.md says for its family: shown to a site's user after the upload and before Start.

- One target (SIMI, IMI, AVGMMI, CSLMI): a fit uses the rows where the target and every
  predictor are observed; a row missing the target is left out of the fit (central imputes
  its own such rows), a row with the target but a missing predictor is left out.
- Chained equations (SIMICE, ...): a remote site keeps only the rows whose non-target columns
  are complete; the others are left out.

The reasons are the labels the algorithms declare (``left_out`` in their params.json), so that
this forecast reads as the count the job reports afterwards. ``modelled`` are the columns that
enter the models (None: all); a column outside it (carried) never leaves a row out. Nothing of
this leaves the site: it is computed for the site's own page.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from federation.data import Table


@dataclass(frozen=True)
class LeftOut:
    reason: str
    rows: int
    by_column: dict[str, int]
    """Missing cells of each column among these rows (a row may count in two columns)."""


@dataclass(frozen=True)
class RowsForecast:
    rows: int
    missing: dict[str, int]
    """Missing cells per column, in the table's order."""
    used: int | None
    """Rows the job will use; None when the algorithm's own code decides (not a built-in)."""
    left_out: list[LeftOut]


def forecast(
    table: Table,
    targets: Sequence[str],
    *,
    chained: bool | None,
    modelled: Collection[str] | None = None,
) -> RowsForecast:
    """The forecast for a job of ``targets``; ``chained`` None for an algorithm whose handling
    of rows is its own (an uploaded one): then only the missing counts."""
    holes = np.isnan(table.values)
    missing = {name: int(n) for name, n in zip(table.columns, holes.sum(axis=0), strict=True)}
    if chained is None:
        return RowsForecast(rows=table.rows, missing=missing, used=None, left_out=[])
    used_columns = set(table.columns) if modelled is None else set(modelled) | set(targets)
    target_index = [table.column(t) for t in targets]
    others = [j for j, c in enumerate(table.columns) if j not in target_index and c in used_columns]
    groups: list[tuple[str, np.ndarray, list[int]]] = []
    if chained:
        out = holes[:, others].any(axis=1)
        groups.append(("a non-target column missing", out, others))
    else:
        (target,) = target_index
        target_missing = holes[:, target]
        out_predictor = ~target_missing & holes[:, others].any(axis=1)
        groups.append((f"'{table.columns[target]}' missing", target_missing, [target]))
        groups.append(("a predictor missing", out_predictor, others))
    left_out = [
        LeftOut(
            reason=reason,
            rows=int(rows.sum()),
            by_column={
                table.columns[j]: int(n) for j in columns if (n := int(holes[rows, j].sum()))
            },
        )
        for reason, rows, columns in groups
        if rows.any()
    ]
    used = table.rows - sum(group.rows for group in left_out)
    return RowsForecast(rows=table.rows, missing=missing, used=used, left_out=left_out)
