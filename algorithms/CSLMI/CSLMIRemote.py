"""CSLMI, site half: the average gradient of this site's log-likelihood at central's fit."""

from __future__ import annotations

from typing import Any

from algorithms import _single
from algorithms._site import gradient_handler, local_fit_handler, surrogate_fit_handler
from federation.site import SiteJob


def prepare(site: SiteJob) -> dict[str, Any]:
    return _single.prepare(site, chained="CSLMICE")


HANDLERS = {"gradient": gradient_handler}
LOCAL = {
    "impute": _single.impute,
    "local_fit": local_fit_handler,
    "surrogate_fit": surrogate_fit_handler,
}
