"""AVGMMICE, central half: chained equations where each fit is the row-weighted average of
every participant's own fit on its current data (one round trip per target and cycle)."""

from __future__ import annotations

from algorithms import _chained
from algorithms._federated import averaged_chains
from federation.runtime import CentralJob


async def run(job: CentralJob) -> None:
    await _chained.run(job, averaged_chains)
