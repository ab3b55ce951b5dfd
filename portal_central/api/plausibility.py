"""The numbers of a completed job's plausibility plots, as JSON (admins only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from portal_central.deps import AdminUser, StateDep
from portal_central.jobs import plausibility, service
from portal_central.paths import RowId

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


@router.get("/{job_id}/plausibility")
def plausibility_numbers(job_id: RowId, admin: AdminUser, state: StateDep) -> dict[str, Any]:
    """Per target, the numbers its plausibility plot draws from central's own data: for a
    continuous target n, mean, sd, min, q1, median, q3 and max of the observed cells (imp 0)
    and of each imputation's imputed cells (imp 1..M); for a target of levels, the count and
    share of each level. The figures are at /jobs/{id}/plots/{target}.svg. 404 once the results
    were discarded, 409 before the job completed or for a comparison."""
    with state.database.session() as session:
        job = service.get_job(session=session, job_id=job_id, user=admin)
        return plausibility.numbers(state.store, job)
