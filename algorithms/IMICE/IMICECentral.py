"""IMICE, central half: chained equations on central's own rows alone (no site takes part)."""

from __future__ import annotations

from algorithms import _chained
from algorithms._federated import pooled_chains
from federation.runtime import CentralJob


async def run(job: CentralJob) -> None:
    await _chained.run(job, pooled_chains)
