"""Checks before anyone waits: a job that central's own data already shows cannot run is refused
when it is defined (from the wizard's header scan) and when central's file is uploaded (from the
file), before any site is asked to upload or start.

What the built-in families do with incomplete rows (ALGORITHMS.md, SIMI and SIMICE; an uploaded
algorithm's own handling of rows is not known here, so only its targets' methods are checked):

- the chained family (an algorithm of several targets) keeps at central only rows whose
  non-target columns are complete, and refuses otherwise: an incomplete modelled column that
  is not a target is a problem here, with the fix of making it a target;
- the one-target family cannot impute a central row that misses its target and a predictor
  together: the fix is the chained counterpart (SIMI -> SIMICE);
- a pooled algorithm with no remote site is the central-only one under another name: the fix is
  IMI or IMICE;
- a target's method must fit the column's observed values; each method says how
  (``algorithms.methods``, :meth:`Method.check`).

``modelled`` is the set of columns that enter the models (every column unless the job gives
columns roles): a column outside it (carried: an ID, a date) is never a predictor, so its holes
concern no fit.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from algorithms import methods
from federation.registry import Algorithm
from portal_central.errors import FieldInvalid
from portal_central.jobs.header import ColumnSummary

CENTRAL_ONLY = {False: "IMI", True: "IMICE"}
"""The algorithm on central's data alone, for one target and for several."""
CHAINED = {"SIMI": "SIMICE", "IMI": "IMICE", "AVGMMI": "AVGMMICE", "CSLMI": "CSLMICE"}
"""The chained-equations counterpart of each built-in of one target."""


@dataclass(frozen=True)
class Fix:
    """A change of the job's definition that removes a problem, offered by the wizard."""

    kind: Literal["target", "algorithm"]
    value: str
    """The column to make a target, or the algorithm to choose."""
    label: str


@dataclass(frozen=True)
class Problem:
    message: str
    field: str
    """The wizard's field it belongs to (``targets``, ``participants``)."""
    fix: Fix | None = None


@dataclass(frozen=True)
class TargetSpec:
    name: str
    method: str
    levels: tuple[float, ...] = ()
    """The job's levels when given (else the observed ones are checked)."""


def sites_problem(algorithm: Algorithm, sites: int, *, comparison: bool = False) -> Problem | None:
    """A pooled algorithm with no remote site: suggest the central-only one. The one rule for
    the wizard and the JSON API (``service.create_job``), field ``participants`` as both call
    the list of sites.

    A comparison is not refused: its methods side by side on central's data alone is a run of
    the comparison's machinery (each method, its tables, retry and expiry) before any site is
    asked, and its reference is pooled by definition (SIMI or SIMICE), so no central-only
    algorithm could stand in for it.
    """
    if comparison or not algorithm.capabilities.uses_sites or sites:
        return None
    alone = CENTRAL_ONLY[algorithm.capabilities.multiple_targets]
    return Problem(
        f"{algorithm.name} pools the sites' aggregates with central's data, but no site takes "
        f"part ('participants' is empty): choose at least one site, or use {alone} (central's "
        "data alone)",
        field="participants",
        fix=Fix("algorithm", alone, f"Use {alone}"),
    )


def data_problems(
    algorithm: Algorithm,
    columns: Sequence[ColumnSummary],
    targets: Sequence[TargetSpec],
    params: Mapping[str, Any],
    *,
    sites: int,
    label: str = "central's data",
    modelled: Collection[str] | None = None,
) -> list[Problem]:
    """Everything central's own counts (``columns``: a header scan or its uploaded file) show
    the job cannot run; empty when the counts are unknown (a job copied without a file)."""
    if not columns or not all(c.counted for c in columns):
        return []
    by_name = {c.name: c for c in columns}
    chosen = {t.name for t in targets}
    used = set(by_name) if modelled is None else set(modelled) | chosen
    problems: list[Problem] = []
    for target in targets:
        column = by_name.get(target.name)
        if column is None:
            continue
        observed = column.observed
        if target.levels:
            observed = replace(observed, levels=target.levels)
        found = methods.get(target.method).check(observed, column=target.name, params=params)
        if found:
            problems.append(Problem(f"{label}: {found}", field="targets"))
        alone = not sites or not algorithm.capabilities.uses_sites
        if alone and column.missing == column.rows:
            problems.append(
                Problem(
                    f"{label}: column '{target.name}' is a target but every cell is missing, "
                    "and no site takes part: there is nothing to fit it on",
                    field="targets",
                )
            )
    if not algorithm.builtin:  # an uploaded algorithm's handling of rows is its own
        return problems
    if algorithm.capabilities.multiple_targets:
        problems += _incomplete_others(algorithm, columns, chosen, used, label)
    else:
        problems += _stuck_rows(algorithm, columns, chosen, used, label)
    return problems


def _incomplete_others(
    algorithm: Algorithm,
    columns: Sequence[ColumnSummary],
    chosen: set[str],
    used: set[str],
    label: str,
) -> list[Problem]:
    """Chained equations: central's non-target modelled columns must be complete."""
    return [
        Problem(
            f"{label}: {algorithm.name} needs central's non-target columns complete, but "
            f"'{c.name}' is missing in {c.missing} row(s): make it a target too",
            field="targets",
            fix=Fix("target", c.name, f"Make '{c.name}' a target"),
        )
        for c in columns
        if c.name not in chosen and c.name in used and c.missing
    ]


def _stuck_rows(
    algorithm: Algorithm,
    columns: Sequence[ColumnSummary],
    chosen: set[str],
    used: set[str],
    label: str,
) -> list[Problem]:
    """One target: central's rows that miss the target and a predictor together."""
    problems = []
    for index, target in enumerate(columns):
        if target.name not in chosen or not target.missing_with:
            continue
        together = [
            (c.name, target.missing_with[j])
            for j, c in enumerate(columns)
            if j != index and c.name in used and target.missing_with[j]
        ]
        if not together:
            continue
        chained = CHAINED.get(algorithm.name)
        detail = ", ".join(f"'{name}' in {n} row(s)" for name, n in together)
        problems.append(
            Problem(
                f"{label}: central's rows missing '{target.name}' miss a predictor too "
                f"({detail}); {algorithm.name} imputes only rows whose predictors are complete: "
                f"use {chained or 'a chained-equations algorithm'} for several incomplete columns",
                field="targets",
                fix=Fix("algorithm", chained, f"Use {chained}") if chained else None,
            )
        )
    return problems


class JobRefused(FieldInvalid):
    """A job (or central's file for it) refused by these checks: the first problem's message
    and field, and every problem with its fix for the wizard to offer."""

    def __init__(self, problems: Sequence[Problem], *, field: str | None = None) -> None:
        message = problems[0].message
        if len(problems) > 1:
            message += ". Also: " + "; ".join(p.message for p in problems[1:])
        super().__init__(message, field=field or problems[0].field)
        self.problems = list(problems)


def refuse(problems: Sequence[Problem], *, field: str | None = None) -> None:
    """Raise :class:`JobRefused` when there is any problem."""
    if problems:
        raise JobRefused(problems, field=field)
