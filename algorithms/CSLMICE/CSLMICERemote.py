"""CSLMICE, site half: its current data, its average gradients, and imputing its own cells."""

from __future__ import annotations

from typing import Any

from algorithms import _chained
from algorithms._site import gradient_handler, local_fit_handler, surrogate_fit_handler
from federation.site import SiteJob


def prepare(site: SiteJob) -> dict[str, Any]:
    """Keep rows whose non-target columns are complete; fill each target with the site's mean."""
    return _chained.prepare(site)


HANDLERS = {
    "fill_unobserved": _chained.fill_unobserved,
    "gradient": gradient_handler,
    "impute": _chained.impute,
}
LOCAL = {
    "completed": _chained.completed,
    "trace": _chained.trace,
    "local_fit": local_fit_handler,
    "surrogate_fit": surrogate_fit_handler,
}
