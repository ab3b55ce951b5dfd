"""CSLMI, central half: central's own fit, every participant's average gradient at it (one
round trip), the surrogate-likelihood fit at central, then M draws and imputations."""

from __future__ import annotations

from algorithms import _single
from algorithms._federated import fit_surrogate
from federation.runtime import CentralJob


async def run(job: CentralJob) -> None:
    await _single.run(job, fit_surrogate)
