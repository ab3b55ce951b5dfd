"""Creating and finding jobs. A job keeps column names, targets and parameters, never data."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from federation.errors import InputError
from federation.job import make_targets
from federation.params import resolve_params
from federation.registry import Registry
from portal_central import algorithms_store
from portal_central.errors import FieldInvalid, Forbidden, NotFound
from portal_central.models import AlgorithmVersion, Job, JobParticipant, User


@dataclass(frozen=True)
class TargetChoice:
    column: str
    type: str


def create_job(
    *,
    session: Session,
    registry: Registry,
    creator: User,
    name: str,
    description: str,
    algorithm: str,
    version: str | None,
    columns: Sequence[str],
    targets: Sequence[TargetChoice],
    params: dict[str, Any],
    participants: Sequence[str],
    seed: int | None,
) -> Job:
    """Check everything against the algorithm and the header, then record the job."""
    name = name.strip()
    if not name:
        raise FieldInvalid("give the job a name", field="name")
    if len(name) > 200:
        raise FieldInvalid("use at most 200 characters", field="name")
    if not columns:
        raise FieldInvalid("upload a CSV so the job knows its columns", field="columns")
    if len(set(columns)) != len(columns):
        raise FieldInvalid("the columns must have unique names", field="columns")
    info = algorithms_store.current(
        session=session, registry=registry, name=algorithm, version=version
    )
    chosen = info.algorithm
    try:
        resolved_targets = make_targets(
            list(columns), [(t.column, t.type) for t in targets], label="the job's columns"
        )
        chosen.check_targets(t.type for t in resolved_targets)
    except InputError as error:
        raise FieldInvalid(str(error), field="targets") from None
    try:
        resolved = resolve_params(chosen.schema, params, columns=len(columns))
    except InputError as error:
        raise FieldInvalid(str(error), field=_param_field(str(error))) from None
    sites = _participants(session, participants)
    row = session.scalar(select(AlgorithmVersion).where(AlgorithmVersion.digest == info.digest))
    assert row is not None
    job = Job(
        name=name,
        description=description.strip(),
        algorithm_version_id=row.id,
        columns=list(columns),
        targets=[{"index": t.index, "name": t.name, "type": t.type} for t in resolved_targets],
        params=resolved,
        seed=secrets.randbelow(2**32) if seed is None else seed,
        state="created",
        message="",
        created_by_id=creator.id,
        participants=[
            JobParticipant(user_id=user.id, position=position)
            for position, user in enumerate(sites)
        ],
    )
    session.add(job)
    session.flush()
    return job


def _participants(session: Session, site_ids: Sequence[str]) -> list[User]:
    if len(set(site_ids)) != len(site_ids):
        raise FieldInvalid("a site is listed twice", field="participants")
    users = []
    for site_id in site_ids:
        user = session.scalar(select(User).where(User.site_id == site_id))
        if user is None:
            raise FieldInvalid(f"no site with site_id '{site_id}'", field="participants")
        if user.status != "approved":
            raise FieldInvalid(f"site '{site_id}' is {user.status}", field="participants")
        users.append(user)
    return users


def _param_field(message: str) -> str:
    if message.startswith("parameter '"):
        return "param_" + message.split("'")[1]
    return "params"


def _query() -> Any:
    return select(Job).options(
        selectinload(Job.participants).selectinload(JobParticipant.user),
        selectinload(Job.algorithm),
        selectinload(Job.created_by),
    )


def list_jobs(*, session: Session, user: User) -> list[Job]:
    """Admins see every job; a site user sees the jobs its site takes part in."""
    query = _query().order_by(Job.id.desc())
    if user.role != "admin":
        query = query.join(JobParticipant).where(JobParticipant.user_id == user.id)
    return list(session.scalars(query))


def get_job(*, session: Session, job_id: int, user: User) -> Job:
    job: Job | None = session.scalar(_query().where(Job.id == job_id))
    if job is None:
        raise NotFound(f"no job {job_id}")
    if user.role != "admin" and all(p.user_id != user.id for p in job.participants):
        # Not found rather than forbidden: a site does not learn which jobs exist.
        raise NotFound(f"no job {job_id}")
    return job


def ensure_admin(user: User) -> None:
    if user.role != "admin":
        raise Forbidden("only admins may do this")
