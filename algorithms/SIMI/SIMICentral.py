"""SIMI, central half: one exact pooled fit, then M draws and imputations of central's rows."""

from __future__ import annotations

from algorithms import _single
from algorithms._federated import fit_pooled
from federation.runtime import CentralJob


async def run(job: CentralJob) -> None:
    await _single.run(job, fit_pooled)
