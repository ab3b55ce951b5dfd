"""IMI, central's own half (no site takes part): the sums of central's complete rows."""

from __future__ import annotations

from typing import Any

from algorithms import _single
from algorithms._site import STATISTICS
from federation.site import SiteJob


def prepare(site: SiteJob) -> dict[str, Any]:
    return _single.prepare(site, chained="IMICE")


HANDLERS = {**STATISTICS}
LOCAL = {"impute": _single.impute}
