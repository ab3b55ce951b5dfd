"""IMICE, central's own half (no site takes part): its current data, sums and imputations."""

from __future__ import annotations

from typing import Any

from algorithms import _chained
from algorithms._site import gaussian_stats_handler, logistic_stats_handler
from federation.site import SiteJob


def prepare(site: SiteJob) -> dict[str, Any]:
    """Keep rows whose non-target columns are complete; fill each target with the site's mean."""
    return _chained.prepare(site)


HANDLERS = {
    "fill_unobserved": _chained.fill_unobserved,
    "gaussian_stats": gaussian_stats_handler,
    "logistic_stats": logistic_stats_handler,
    "impute": _chained.impute,
}
LOCAL = {"completed": _chained.completed}
