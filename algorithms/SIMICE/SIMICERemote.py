"""SIMICE, site half: the site's current data, its sums, and imputing its own cells."""

from __future__ import annotations

from typing import Any

from algorithms import _chained
from algorithms._site import STATISTICS
from federation.site import SiteJob


def prepare(site: SiteJob) -> dict[str, Any]:
    """Keep rows whose non-target columns are complete; fill each target with the site's mean."""
    return _chained.prepare(site)


HANDLERS = {
    "fill_unobserved": _chained.fill_unobserved,
    **STATISTICS,
    "impute": _chained.impute,
}
LOCAL = {"completed": _chained.completed, "trace": _chained.trace}
