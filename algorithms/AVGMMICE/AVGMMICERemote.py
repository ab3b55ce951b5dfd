"""AVGMMICE, site half: its current data, its own weighted fits, and imputing its own cells."""

from __future__ import annotations

from typing import Any

from algorithms import _chained, _chains
from algorithms._site import local_fit_handler
from federation.site import SiteJob


def prepare(site: SiteJob) -> dict[str, Any]:
    """Keep rows whose non-target columns are complete; start each target's cells in every chain
    from draws of the site's own observed values."""
    return _chained.prepare(site)


HANDLERS = {
    "fill_unobserved": _chained.fill_unobserved,
    "local_fit": _chains.per_chain(local_fit_handler),
    "impute": _chained.impute,
}
LOCAL = {"completed": _chained.completed, "trace": _chained.trace}
