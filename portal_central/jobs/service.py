"""Creating and finding jobs. A job keeps column names, targets and parameters, never data."""

from __future__ import annotations

import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session, defer, joinedload, selectinload

from algorithms import methods as methods_registry
from federation import secure
from federation.compare import reference_for
from federation.errors import InputError
from federation.job import JobSpec, target_to_wire
from federation.params import resolve_params
from federation.protocol import MAX_FRAME_BYTES
from federation.registry import Algorithm, Registry
from federation.roles import Columns, RoleError, define_job_columns, roles_to_wire
from portal_central import algorithms_store
from portal_central.accounts.status import AccountStatus, Role
from portal_central.errors import Conflict, FieldInvalid, Forbidden, NotFound, PortalError
from portal_central.jobs import checks, status
from portal_central.jobs.header import ColumnSummary
from portal_central.jobs.status import JobState
from portal_central.models import (
    AlgorithmVersion,
    Job,
    JobEventRecord,
    JobParticipant,
    JobReport,
    User,
)


@dataclass(frozen=True)
class TargetChoice:
    column: str
    type: str
    levels: tuple[float | str, ...] = ()
    """A categorical or ordinal target's levels (the API's, or the values central's header
    scan observed): integer codes, or text levels of a text target (logistic too); ignored for
    other numeric methods."""


@dataclass(frozen=True)
class RolesChoice:
    """The roles of the columns that are not targets (``federation.roles``): each factor with
    its levels, the carried columns, and a predictor list per target where not the default."""

    factors: dict[str, tuple[str, ...]] = field(default_factory=dict)
    carried: tuple[str, ...] = ()
    predictors: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _text(levels: Sequence[object]) -> bool:
    """Levels of a text target (any that is not a number)."""
    for level in levels:
        try:
            float(str(level))
        except ValueError:
            return True
    return False


def _has_levels(method: str) -> bool:
    """The method takes a list of levels (an unknown one is refused by ``make_targets``)."""
    known = methods_registry.METHODS.get(method)
    return known is not None and known.levels


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
    compare: Sequence[str] = (),
    header: Sequence[ColumnSummary] | None = None,
    modelled: Collection[str] | None = None,
    roles: RolesChoice | None = None,
) -> Job:
    """Check everything against the algorithm and the header, then record the job.

    ``header`` is central's file as the wizard scanned it (counts per column, never values):
    with it, a job that central's data already shows cannot run is refused now, every problem
    with its fix (``checks``); without it (the API), the same checks run on central's upload.
    ``modelled`` are the columns that enter the models (None: all). A pooled algorithm with no
    site is refused here, for the wizard and the API alike, the central-only one its fix
    (``checks.sites_problem``).

    With ``compare`` (other methods' names), the job is a comparison: a parent job of the
    pooled-exact reference (SIMI or SIMICE) with one child job per method, the reference and
    ``algorithm`` included, all on the same targets, parameters, seed and sites.
    """
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
    methods = [info]
    if compare:
        methods = _methods(session, registry, info, compare)
    roles = roles or RolesChoice()
    if modelled is None and roles.carried:  # carried columns never enter a model
        modelled = [c for c in columns if c not in set(roles.carried)]
    try:
        defined = define_job_columns(
            list(columns),
            [
                (t.column, t.type, t.levels if _has_levels(t.type) or _text(t.levels) else ())
                for t in targets
            ],
            factors=roles.factors,
            carried=roles.carried,
            predictors=roles.predictors,
        )
    except InputError as error:
        field_name = "roles" if isinstance(error, RoleError) else "targets"
        raise FieldInvalid(str(error), field=field_name) from None
    try:
        resolved_targets = defined.targets
        scanned = {c.name: c for c in header or () if c.counted}
        for target in resolved_targets:
            kind = methods_registry.get(target.type)
            if kind.levels and not target.levels:
                column = scanned.get(target.name)
                found = column and kind.check(column.observed, column=column.name, params={})
                raise InputError(
                    f"central's data: {found}"
                    if found
                    else f"target '{target.name}' is {target.type}: give its levels, the "
                    "integer codes of the column in order (e.g. 1,2,3,4,5)"
                )
        for method in methods:
            method.algorithm.check_targets(t.type for t in resolved_targets)
    except InputError as error:
        raise FieldInvalid(str(error), field="targets") from None
    if compare:
        _check_shared_params(methods, params)

    def remote(method: algorithms_store.VersionInfo) -> Sequence[str]:
        """The sites the method asks (none for one on central's data alone)."""
        return participants if method.algorithm.capabilities.uses_sites else ()

    resolved = {
        m.name: _resolve(
            m, _taken_by(m, params) if compare else params, defined, remote(m), named=bool(compare)
        )
        for m in methods
    }
    for method in methods:
        _check_width(
            method.algorithm, defined.spec(params=resolved[method.name], sites=remote(method))
        )
    sites = _participants(session, participants)
    if compare and secure.enabled(params):  # each method that asks the sites must mask
        clear = [
            m.name
            for m in methods
            if m.algorithm.capabilities.uses_sites and not secure.enabled(resolved[m.name])
        ]
        if clear:
            raise FieldInvalid(
                f"parameter 'secure_aggregation': {', '.join(clear)} would still send each "
                "site's replies in the clear (they need per-site values); compare only pooled "
                "methods (and those on central's data alone) or turn the option off",
                field="param_secure_aggregation",
            )
    for method in methods:  # secure aggregation needs summed replies and two remote sites
        try:
            secure.check_job(method.algorithm.replies, resolved[method.name], remote(method))
        except InputError as error:
            raise FieldInvalid(str(error), field="param_secure_aggregation") from None
    alone = checks.sites_problem(info.algorithm, len(sites), comparison=bool(compare))
    problems = [alone] if alone else []
    problems += checks.data_problems(
        info.algorithm,
        header or [],
        [checks.TargetSpec(t.name, t.type, t.levels) for t in resolved_targets],
        resolved[info.name],
        sites=len(sites),
        modelled=modelled,
    )
    checks.refuse(problems)
    drawn_seed = secrets.randbelow(2**32) if seed is None else seed

    def make(method: algorithms_store.VersionInfo, title: str) -> Job:
        row = session.scalar(
            select(AlgorithmVersion).where(AlgorithmVersion.digest == method.digest)
        )
        assert row is not None
        taking_part = sites if method.algorithm.capabilities.uses_sites else []
        return Job(
            name=title,
            description=description.strip(),
            algorithm_version_id=row.id,
            columns=list(columns),
            targets=[target_to_wire(t) for t in resolved_targets],
            roles=roles_to_wire(defined),
            params=resolved[method.name],
            seed=drawn_seed,
            state=JobState.CREATED,
            message="",
            created_by_id=creator.id,
            participants=[
                JobParticipant(user_id=user.id, position=position)
                for position, user in enumerate(taking_part)
            ],
        )

    job = make(methods[0], name)
    if compare:
        job.children = [make(method, f"{name[:180]} · {method.name}") for method in methods]
    session.add(job)
    session.flush()
    return job


def new_attempt(*, session: Session, child: Job) -> Job:
    """A comparison's failed (or cancelled) method as a new child job, to run again."""
    parent = child.parent
    if parent is None:
        raise Conflict(f"job {child.id} is not part of a comparison; create the job again")
    if child.state not in status.RETRYABLE:
        raise Conflict(
            f"job {child.id} is {child.state}; only a failed or cancelled method is retried"
        )
    if parent.state != JobState.PARTIAL:
        raise Conflict(
            f"comparison {parent.id} is {parent.state}; methods are retried once the others "
            "are done and central still holds its data"
        )
    if child not in parent.methods:
        raise Conflict(f"job {child.id} has been retried already")
    attempt = Job(
        name=child.name,
        description=child.description,
        algorithm_version_id=child.algorithm_version_id,
        columns=list(child.columns),
        targets=list(child.targets),
        roles=dict(child.roles),
        params=dict(child.params),
        seed=child.seed,
        state=JobState.CREATED,
        message=f"retry of job {child.id}",
        created_by_id=child.created_by_id,
        participants=[
            JobParticipant(user_id=p.user_id, position=p.position) for p in child.participants
        ],
    )
    parent.children.append(attempt)
    session.flush()
    return attempt


MAX_CANCEL_REASON = 300
"""Characters a cancel reason may have: a sentence for people, never a place for data."""


def cancel_reason(text: str) -> str:
    """A cancel reason as given, checked: one line of at most ``MAX_CANCEL_REASON`` characters."""
    reason = " ".join(text.split())
    if len(reason) > MAX_CANCEL_REASON:
        raise FieldInvalid(
            f"the reason has {len(reason)} characters; use at most {MAX_CANCEL_REASON}",
            field="reason",
        )
    return reason


def definition_of(job: Job) -> dict[str, Any]:
    """What a new job like ``job`` starts from: its name, algorithm, targets, parameters,
    seed, sites and a comparison's other methods; nothing of any data (a job holds none)."""
    if job.parent is not None:
        job = job.parent
    return {
        "name": f"{job.name[:193]} (copy)",
        "description": job.description,
        "algorithm": job.algorithm.name,
        "columns": list(job.columns),
        "targets": [
            {"column": t["name"], "type": t["type"]}
            | (
                {"levels": t.get("labels") or t["levels"]}
                if t.get("levels") or t.get("labels")
                else {}
            )
            for t in job.targets
        ],
        **({"roles": dict(job.roles)} if job.roles else {}),
        "parameters": dict(job.params),
        "seed": job.seed,
        "participants": [p.user.site_id or "" for p in job.participants],
        "compare": [
            c.algorithm.name for c in job.methods if c.algorithm.name != job.algorithm.name
        ],
    }


def run_again(*, session: Session, job: Job, creator: User) -> Job:
    """A failed, cancelled or interrupted job as a new job with the same definition and seed
    (the same algorithm version, targets, parameters and sites; a comparison with its
    methods). The old job stays as the record of what happened; the new one's message names
    it. Central and the sites give their data again: each drops it when a job ends."""
    if job.parent is not None:
        raise Conflict(
            f"job {job.id} is a method of comparison {job.parent_id}: run the comparison again, "
            "or retry the method from the comparison's page"
        )
    if job.state not in status.RETRYABLE:
        raise Conflict(
            f"job {job.id} is {job.state}; only a failed, cancelled or interrupted job runs again"
        )

    def copy(source: Job, name: str) -> Job:
        return Job(
            name=name,
            description=source.description,
            algorithm_version_id=source.algorithm_version_id,
            columns=list(source.columns),
            targets=list(source.targets),
            roles=dict(source.roles),
            params=dict(source.params),
            seed=source.seed,
            state=JobState.CREATED,
            message=f"run again of job {job.id}",
            created_by_id=creator.id,
            participants=[
                JobParticipant(user_id=p.user_id, position=p.position) for p in source.participants
            ],
        )

    again = copy(job, job.name)
    if job.is_comparison:
        again.children = [copy(child, child.name) for child in job.methods]
    session.add(again)
    session.flush()
    return again


def delete_job(*, session: Session, job: Job) -> list[int]:
    """Delete a job's record (a comparison with its methods); the ids deleted. Refused while
    it is waiting, running or partial, when central or the sites hold its data."""
    if job.parent is not None:
        raise Conflict(
            f"job {job.id} is a method of comparison {job.parent_id}: delete the comparison"
        )
    if job.state in status.ACTIVE:
        raise Conflict(f"job {job.id} is {job.state}; cancel it before deleting it")
    ids = [job.id, *(child.id for child in job.children)]
    session.execute(delete(JobEventRecord).where(JobEventRecord.job_id.in_(ids)))
    session.execute(delete(JobReport).where(JobReport.job_id.in_(ids)))
    session.delete(job)
    session.flush()
    return ids


def _methods(
    session: Session,
    registry: Registry,
    chosen: algorithms_store.VersionInfo,
    compare: Sequence[str],
) -> list[algorithms_store.VersionInfo]:
    """The comparison's methods: the reference first, then the chosen one, then the others."""
    infos = {chosen.name: chosen}
    for other in compare:
        if other not in infos:
            try:
                infos[other] = algorithms_store.current(
                    session=session, registry=registry, name=other, version=None
                )
            except PortalError as error:
                raise FieldInvalid(error.message, field="compare") from None
    try:
        reference = reference_for([i.algorithm for i in infos.values()])
    except InputError as error:
        raise FieldInvalid(str(error), field="compare") from None
    if reference not in infos:
        infos[reference] = algorithms_store.current(
            session=session, registry=registry, name=reference, version=None
        )
    ordered = [infos.pop(reference), *infos.values()]
    if len(ordered) < 2:
        raise FieldInvalid(
            f"choose at least one method to compare with {reference}", field="compare"
        )
    return ordered


def _taken_by(method: algorithms_store.VersionInfo, params: dict[str, Any]) -> dict[str, Any]:
    """A comparison's parameters that this method takes (each method has its own schema)."""
    known = method.algorithm.schema.get("properties", {})
    return {name: value for name, value in params.items() if name in known}


def _check_shared_params(
    methods: Sequence[algorithms_store.VersionInfo], params: dict[str, Any]
) -> None:
    known: set[str] = set()
    for method in methods:
        known.update(method.algorithm.schema.get("properties", {}))
    unknown = sorted(set(params) - known)
    if unknown:
        raise FieldInvalid(
            f"no method of this comparison takes parameter {', '.join(map(repr, unknown))}",
            field="params",
        )


def _resolve(
    method: algorithms_store.VersionInfo,
    params: dict[str, Any],
    columns: Columns,
    sites: Sequence[str],
    *,
    named: bool,
) -> dict[str, Any]:
    """The method's parameters, checked, with the default ``min_rows`` of the job's widest
    design; in a comparison, a message names the method."""
    try:
        return resolve_params(
            method.algorithm.schema,
            params,
            width=lambda resolved: columns.spec(params=resolved, sites=sites).design_width(),
        )
    except InputError as error:
        message = f"{method.name}: {error}" if named else str(error)
        raise FieldInvalid(message, field=_param_field(str(error))) from None


def _participants(session: Session, site_ids: Sequence[str]) -> list[User]:
    if len(set(site_ids)) != len(site_ids):
        raise FieldInvalid("a site is listed twice", field="participants")
    users = []
    for site_id in site_ids:
        user = session.scalar(select(User).where(User.site_id == site_id))
        if user is None:
            raise FieldInvalid(f"no site with site_id '{site_id}'", field="participants")
        if user.status != AccountStatus.APPROVED:
            raise FieldInvalid(f"site '{site_id}' is {user.status}", field="participants")
        users.append(user)
    return users


def _param_field(message: str) -> str:
    if message.startswith("parameter '"):
        return "param_" + message.split("'")[1]
    return "params"


SOURCES = (
    AlgorithmVersion.central_source,
    AlgorithmVersion.remote_source,
    AlgorithmVersion.params_json,
)
"""An algorithm version's files: a job read leaves them out (a job shows its algorithm's name,
version and digest; ``algorithms_store.files_of`` reads them from its own query). Read on a
job's algorithm inside its session they load then; on a detached job they raise."""


def _query() -> Any:
    """A job with what its pages and the API show: the many-to-one rows (its algorithm without
    the files, its creator, its parent) joined in the job's own SELECT, and one SELECT for each
    collection (the participants with their users; the children with their algorithms; the
    children's participants with their users): 4 statements for a job, however many sites."""
    return select(Job).options(
        joinedload(Job.algorithm).options(*(defer(c) for c in SOURCES)),
        joinedload(Job.created_by),
        joinedload(Job.parent),
        selectinload(Job.participants).joinedload(JobParticipant.user),
        selectinload(Job.children).options(
            joinedload(Job.algorithm).options(*(defer(c) for c in SOURCES)),
            selectinload(Job.participants).joinedload(JobParticipant.user),
        ),
    )


def list_jobs(*, session: Session, user: User) -> list[Job]:
    """Admins see every job; a site user sees the jobs its site takes part in."""
    query = _query().where(Job.parent_id.is_(None)).order_by(Job.id.desc())
    if user.role != Role.ADMIN:
        query = query.join(JobParticipant).where(JobParticipant.user_id == user.id)
    return list(session.scalars(query))


def get_job(*, session: Session, job_id: int, user: User) -> Job:
    job: Job | None = session.scalar(_query().where(Job.id == job_id))
    if job is None:
        raise NotFound(f"no job {job_id}")
    if user.role != Role.ADMIN and all(p.user_id != user.id for p in job.participants):
        # Not found rather than forbidden: a site does not learn which jobs exist.
        raise NotFound(f"no job {job_id}")
    return job


def find_job(*, session: Session, job_id: int, user: User) -> Job:
    """The job as ``get_job`` finds it, but alone: none of its relations loaded (one statement
    for an admin, two for a site), for a caller that reads only its columns (a relation read
    on it once its session closed raises)."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    if user.role != Role.ADMIN and not session.scalar(
        select(exists().where(JobParticipant.job_id == job_id, JobParticipant.user_id == user.id))
    ):
        raise NotFound(f"no job {job_id}")  # as get_job: a site does not learn which jobs exist
    return job


def ensure_admin(user: User) -> None:
    if user.role != Role.ADMIN:
        raise Forbidden("only admins may do this")


WIDE_NAMED = 6
"""The most columns a refusal for width names (the widest, then how many more)."""


def _check_width(algorithm: Algorithm, spec: JobSpec) -> None:
    """A job whose largest reply would not fit in one message is refused now, not as a site
    gone offline halfway through. A reply's size follows the designs' widths
    (``JobSpec.dims``): a factor or a categorical or ordinal target of K levels is K - 1
    columns in the others' designs, and ``site_effect`` adds one per site; parallel chains
    answer for every chain in one reply."""
    numbers = algorithm.replies.largest_reply(spec.dims())
    size = 8 * numbers + 64 * 1024  # the values, and room for the header
    if size <= MAX_FRAME_BYTES:
        return
    widest = max(spec.targets, key=lambda t: spec.design(t).p)
    design = spec.design(widest)
    expanded = sorted(
        (
            (len(levels) - 1, f"'{spec.columns[source]}'")
            for source, levels in zip(design.sources, design.levels, strict=True)
            if levels
        ),
        key=lambda entry: -entry[0],
    )
    if design.site_terms:
        expanded.insert(0, (design.site_terms, "the site term"))
    wide = [f"{label} as {count}" for count, label in expanded]
    if len(wide) > WIDE_NAMED:
        wide[WIDE_NAMED - 1 :] = [f"{len(wide) - WIDE_NAMED + 1} more"]
    because = (
        f" (the design of target '{widest.name}' is {design.p} columns wide: {', '.join(wide)})"
        if wide
        else ""
    )
    remedies = ["fewer columns"]
    if any(levels for levels in design.levels):
        remedies.append("fewer levels")
    if spec.chains > 1:
        remedies.append("chains = single (parallel chains answer for every chain in one reply)")
    raise FieldInvalid(
        f"{algorithm.name} on {len(spec.columns)} columns{because} makes replies of "
        f"{size / 2**20:.0f} MiB, more than the {MAX_FRAME_BYTES // 2**20} MiB a message "
        f"between central and a site may carry: use {' or '.join(remedies)}",
        field="columns",
    )
