"""AVGMMICE, central half: chained equations where each fit is the row-weighted average of
every participant's own fit on its current data (one round trip per target and cycle)."""

from __future__ import annotations

from algorithms import _chained
from algorithms._federated import fit_averaged
from federation.runtime import CentralJob


async def run(job: CentralJob) -> None:
    await _chained.run(job, fit_averaged)
