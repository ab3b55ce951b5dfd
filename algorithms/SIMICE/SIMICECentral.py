"""SIMICE, central half: chained equations over every site, an imputed dataset every few cycles.

Each cycle fits every target in order on the pooled current data, draws its parameters once,
and tells every participant to impute its own missing cells of that target; the instruction
rides on the request for the next fit, so a continuous target costs one round trip per cycle."""

from __future__ import annotations

from algorithms import _chained
from algorithms._federated import pooled_chains
from federation.runtime import CentralJob


async def run(job: CentralJob) -> None:
    await _chained.run(job, pooled_chains)
