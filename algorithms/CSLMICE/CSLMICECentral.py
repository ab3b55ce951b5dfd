"""CSLMICE, central half: chained equations where each fit is central's surrogate-likelihood
fit, corrected by every participant's average gradient (one round trip per target and cycle)."""

from __future__ import annotations

from algorithms import _chained
from algorithms._federated import surrogate_chains
from federation.runtime import CentralJob


async def run(job: CentralJob) -> None:
    await _chained.run(job, surrogate_chains)
