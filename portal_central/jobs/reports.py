"""Completed jobs' reports in the database: what a comparison's table is made of.

A report holds a job's fits, costs, pooled analysis and chain traces: numbers about the
imputations, never a row or an imputed value. It is stored when the job completes (and again
when an analysis joins it), so that the comparison of methods outlives a restart of central.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from federation.outputs import report_json
from portal_central.models import JobReport


def save(*, session: Session, job_id: int, report: dict[str, Any]) -> None:
    text = report_json(report).decode()
    row = session.get(JobReport, job_id)
    if row is None:
        session.add(JobReport(job_id=job_id, report=text))
    else:
        row.report = text


def load(*, session: Session, job_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The stored reports of these jobs, by job id (a job without one is left out)."""
    if not job_ids:
        return {}
    rows = session.scalars(select(JobReport).where(JobReport.job_id.in_(job_ids))).all()
    return {row.job_id: json.loads(row.report) for row in rows}
