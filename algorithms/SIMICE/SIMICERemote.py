"""SIMICE, site half: the site's current data, its sums, and imputing its own cells."""

from __future__ import annotations

from typing import Any

from algorithms import _chained, _chains
from algorithms._site import STATISTICS
from federation.site import SiteJob


def prepare(site: SiteJob) -> dict[str, Any]:
    """Keep rows whose non-target columns are complete; start each target's cells in every chain
    from draws of the site's own observed values."""
    return _chained.prepare(site)


HANDLERS = {
    "fill_unobserved": _chained.fill_unobserved,
    **{operation: _chains.per_chain(handler) for operation, handler in STATISTICS.items()},
    "impute": _chained.impute,
}
LOCAL = {"completed": _chained.completed, "trace": _chained.trace}
