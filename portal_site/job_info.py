"""What central says of a job, as this site reads it: typed, and parsed once, where it arrives.

Central's JSON API lists a job with its definition (``JobOut`` in portal_central.api.jobs);
the site keeps only the fields it uses. :func:`parse_job` turns one listing into a
:class:`JobInfo` or refuses it with a message naming the malformed field, so that nothing
further in the site (its pages, its checks, its runners) ever meets a missing key or a state
it does not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from federation.errors import InputError
from federation.job import Target, target_from_wire
from portal_common.states import JobState


class _FromCentral(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Participant(_FromCentral):
    site_id: str
    institution: str = ""


class Method(_FromCentral):
    """One method of a comparison: its child job, as central lists it."""

    id: int
    algorithm: str
    version: str
    digest: str
    state: JobState
    message: str = ""
    participants: tuple[str, ...] = ()

    @property
    def site_ids(self) -> tuple[str, ...]:
        return self.participants


class Roles(_FromCentral):
    """The roles of the columns that are not targets (see ``federation.roles``)."""

    factors: dict[str, tuple[str, ...]] = {}
    """A factor column's levels, the first the reference."""
    carried: tuple[str, ...] = ()
    """Columns never modelled, written back unchanged."""
    predictors: dict[str, tuple[str, ...]] = {}
    """A target's own predictor columns."""

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump()


class JobInfo(_FromCentral):
    """A job as central lists it to this site."""

    id: int
    name: str
    description: str = ""
    state: JobState
    message: str = ""
    algorithm: str
    version: str
    digest: str
    columns: tuple[str, ...]
    targets: tuple[Target, ...]
    roles: Roles = Roles()
    parameters: dict[str, Any] = {}
    participants: tuple[Participant, ...] = ()
    parent: int | None = None
    """The comparison this job is a method of."""
    methods: tuple[Method, ...] = ()
    """A comparison's methods (empty for other jobs)."""

    @field_validator("targets", mode="before")
    @classmethod
    def _targets(cls, raw: object) -> tuple[Target, ...]:
        """Targets as the engine reads them (``federation.job.target_from_wire``)."""
        if not isinstance(raw, list | tuple):
            raise ValueError("a list of targets is expected")
        targets = []
        for item in raw:
            if isinstance(item, Target):
                targets.append(item)
                continue
            if not isinstance(item, Mapping):
                raise ValueError("each target is an object")
            try:
                targets.append(target_from_wire(item))
            except InputError as error:
                raise ValueError(str(error)) from None
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"a target lacks or mistypes {error}") from None
        return tuple(targets)

    @property
    def site_ids(self) -> tuple[str, ...]:
        return tuple(p.site_id for p in self.participants)


class MalformedJob(ValueError):
    """Central sent a job this site cannot read; the message names the field."""


def parse_job(raw: object) -> JobInfo:
    """One job of central's listing, checked and typed; :class:`MalformedJob` names the first
    field that is missing or not what the site expects."""
    try:
        return JobInfo.model_validate(raw)
    except ValidationError as error:
        problem = error.errors()[0]
        field = ".".join(str(part) for part in problem["loc"]) or "(the whole job)"
        job = raw.get("id") if isinstance(raw, Mapping) else None
        which = (
            f"job {job}" if isinstance(job, int | str) and not isinstance(job, bool) else "a job"
        )
        reason = str(problem["msg"]).removeprefix("Value error, ")
        raise MalformedJob(
            f"central sent {which} with a malformed field '{field}': {reason}"
        ) from None
