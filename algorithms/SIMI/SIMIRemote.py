"""SIMI, site half: the sums of the complete rows (X'X, X'y; or Newton's H, g, Q)."""

from __future__ import annotations

from typing import Any

from algorithms import _single
from algorithms._site import STATISTICS
from federation.site import SiteJob


def prepare(site: SiteJob) -> dict[str, Any]:
    return _single.prepare(site, chained="SIMICE")


HANDLERS = {**STATISTICS}
LOCAL = {"impute": _single.impute}
