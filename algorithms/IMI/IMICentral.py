"""IMI, central half: the fit on central's own rows alone (no site takes part), then M draws
and imputations. The baseline that shows what collaboration gains."""

from __future__ import annotations

from algorithms import _single
from algorithms._federated import fit_pooled
from federation.runtime import CentralJob


async def run(job: CentralJob) -> None:
    await _single.run(job, fit_pooled)
