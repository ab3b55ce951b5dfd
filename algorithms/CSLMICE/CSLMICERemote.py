"""CSLMICE, site half: its current data, its average gradients, and imputing its own cells."""

from __future__ import annotations

from typing import Any

from algorithms import _chained, _chains
from algorithms._site import gradient_handler, local_fit_handler, surrogate_fit_handler
from federation.site import SiteJob


def prepare(site: SiteJob) -> dict[str, Any]:
    """Keep rows whose non-target columns are complete; start each target's cells in every chain
    from draws of the site's own observed values."""
    return _chained.prepare(site)


HANDLERS = {
    "fill_unobserved": _chained.fill_unobserved,
    "gradient": _chains.per_chain(gradient_handler),
    "impute": _chained.impute,
}
LOCAL = {
    "completed": _chained.completed,
    "trace": _chained.trace,
    "local_fit": _chains.at_chain(local_fit_handler),
    "surrogate_fit": _chains.at_chain(surrogate_fit_handler),
}
