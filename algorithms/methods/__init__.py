"""The registry of target methods: the one place that says what a method is.

A target method (``gaussian``, ``logistic``, ...) is one :class:`Method` object holding every
part of it: its name and label, one line on when to use it, the values its column may hold, how
central fits it (one round trip of sums, or Newton), the site operations it asks for with the
declared shape of their replies, its draw and its imputation. Everything that depends on a
target's method asks this registry: the job's targets (``federation.job``), the checks of a
table (``federation.data``), the CLI, the algorithms' capabilities (``federation.registry``), the
maths of the built-ins (``algorithms._federated``, ``_site``, ``_single``, ``_chained``), and the
portals' forms, API and pages, which read labels and the list of methods from here.

Why here, in ``algorithms``: a method is mostly maths (its statistics, fit, draw and
imputation, built on ``_stats``), and splitting its name from its maths would make two
definitions of one thing. The engine (``federation``) imports this package, which imports
nothing of the engine but its errors, and nothing of the web. Adding a method is a module here
(one object), its line in :data:`METHODS`, and its tests; the built-ins that offer it declare it
in their ``params.json`` (capabilities and replies), since that file is what a site approves.
"""

from __future__ import annotations

from collections.abc import Mapping

from algorithms.methods._levels import level_list, levels_for
from algorithms.methods._method import FitOptions, Method, Observed, Rows, SiteStatistics
from algorithms.methods.categorical import CATEGORICAL
from algorithms.methods.gaussian import GAUSSIAN
from algorithms.methods.logistic import LOGISTIC
from algorithms.methods.ordinal import ORDINAL
from algorithms.methods.pmm import PMM
from algorithms.methods.poisson import POISSON
from federation.errors import InputError

METHODS: Mapping[str, Method] = {
    m.name: m for m in (GAUSSIAN, PMM, LOGISTIC, CATEGORICAL, ORDINAL, POISSON)
}
"""Every target method, by name, in the order forms list them."""


def names() -> tuple[str, ...]:
    return tuple(METHODS)


def get(name: str, *, field: str = "method") -> Method:
    """The method called ``name``; an ``InputError`` naming ``field`` and the known methods."""
    method = METHODS.get(name)
    if method is None:
        raise InputError(f"{field}: unknown method {name!r}; known methods: {', '.join(METHODS)}")
    return method


def label(name: str) -> str:
    """A method's label for pages (the name itself for one this portal does not know)."""
    method = METHODS.get(name)
    return method.label if method is not None else name


FEW_CODES = 10
"""At most this many distinct whole values (and at least 3) make a column look categorical."""


def suggest(observed: Observed) -> str:
    """The method a column's scan suggests (the user may choose another): logistic when every
    observed value is 0 or 1; categorical for 3 to ``FEW_CODES`` whole-number codes (ordinal is
    the user's call: only they know the codes are ordered); otherwise pmm, which imputes only
    values observed at the site, so counts stay whole and bounded columns stay in range (R
    mice's default for numbers). Gaussian and poisson remain available."""
    if observed.count and observed.binary:
        return LOGISTIC.name
    if observed.levels and 3 <= len(observed.levels) <= FEW_CODES:
        return CATEGORICAL.name
    if observed.count < FEW_CODES:  # too few observed values to match donors among
        return GAUSSIAN.name
    return PMM.name


def site_statistics() -> dict[str, SiteStatistics]:
    """Every method's site operations, by operation name (the built-ins' handlers)."""
    operations: dict[str, SiteStatistics] = {}
    for method in METHODS.values():
        operations.update(method.site_statistics())
    return operations


__all__ = [
    "METHODS",
    "FitOptions",
    "Method",
    "Observed",
    "Rows",
    "SiteStatistics",
    "get",
    "label",
    "level_list",
    "levels_for",
    "names",
    "site_statistics",
    "suggest",
]
