"""AVGMMI, site half: this site's own ridge fit, weighted for averaging (n, n*beta, n^2*V, SSE)."""

from __future__ import annotations

from typing import Any

from algorithms import _single
from algorithms._site import local_fit_handler
from federation.site import SiteJob


def prepare(site: SiteJob) -> dict[str, Any]:
    return _single.prepare(site, chained="AVGMMICE")


HANDLERS = {"local_fit": local_fit_handler}
LOCAL = {"impute": _single.impute}
