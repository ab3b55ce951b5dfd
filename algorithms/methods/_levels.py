"""The levels of a categorical or ordinal target: the one place that decides them and checks a
column against them.

For now a level is an integer code of the data (1..5 for Tanner stages); inside a method the
levels are indices 0..K-1 in the job's order. The job fixes the list: given explicitly (the API,
``--levels NAME=1,2,3``) or else taken from the values central observes in the column when the
job is defined; every participant then checks its own column against the job's list, and a
site whose column holds a value outside it refuses, naming the column and the count of such
cells (the values themselves are shown only to that site's user). A level that only remote
sites hold must therefore be given in the job: central cannot learn it otherwise without a
site sending a value of a row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from federation.errors import InputError

if TYPE_CHECKING:
    from algorithms.methods._method import Method

MAX_LEVELS = 50
"""More levels than this is not a categorical column (its parameters grow with K x p)."""


def level_list(raw: Iterable[object], *, field: str) -> tuple[float, ...]:
    """Levels as given (numbers or their text), sorted, each once; an ``InputError`` naming
    ``field`` for anything else."""
    levels: list[float] = []
    for item in raw:
        try:
            value = float(str(item).strip()) if isinstance(item, str) else float(item)  # type: ignore[arg-type]
        except ValueError:
            raise InputError(
                f"{field}: level {item!r} is not a number (levels are the column's integer codes)"
            ) from None
        if not np.isfinite(value) or not value.is_integer():
            raise InputError(f"{field}: level {item!r} is not an integer code")
        levels.append(value)
    if len(set(levels)) != len(levels):
        raise InputError(f"{field}: a level is given twice")
    if len(levels) > MAX_LEVELS:
        raise InputError(f"{field}: {len(levels)} levels, at most {MAX_LEVELS}")
    return tuple(sorted(levels))


def observed_levels(cells: np.ndarray) -> tuple[float, ...]:
    """The distinct observed values of a column, sorted."""
    observed = cells[~np.isnan(cells)]
    return tuple(float(v) for v in np.unique(observed))


def levels_for(
    method: Method,
    *,
    column: str,
    given: Sequence[float] | None,
    cells: np.ndarray | None,
) -> tuple[float, ...]:
    """The job's levels of a target: ``given``, else those observed in central's ``cells``;
    empty for a method without levels. Refuses a list the method cannot take."""
    if not method.levels:
        if given:
            raise InputError(f"column '{column}': levels are given, but {method.name} has none")
        return ()
    if given:
        levels = level_list(given, field=f"column '{column}' levels")
    elif cells is not None:
        levels = observed_levels(cells)
    else:
        return ()
    problem = method.level_problem(len(levels), column=column)
    if problem:
        raise InputError(problem)
    return levels


def outside(cells: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Mask of the observed cells that are not one of ``levels``."""
    if not levels:
        whole: np.ndarray = ~np.isnan(cells) & (np.round(cells) != cells)
        return whole
    mask: np.ndarray = ~np.isnan(cells) & ~np.isin(cells, np.asarray(levels, dtype=np.float64))
    return mask


def shown(levels: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in levels)
