"""AVGMMI, central half: every participant fits alone, central averages the fits weighted by
rows (one round trip), then M draws and imputations of central's rows."""

from __future__ import annotations

from algorithms import _single
from algorithms._federated import fit_averaged
from federation.runtime import CentralJob


async def run(job: CentralJob) -> None:
    await _single.run(job, fit_averaged)
