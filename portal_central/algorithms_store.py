"""Algorithm versions in the database, and the in-memory registry built from them.

Built-ins are written to the database at start-up through the same validation as an upload;
every version a job may pin stays readable. Reading runs none of a package's code: an uploaded
version's halves execute at central only when a job runs them, and when the upload itself is
checked (it is accepted only after it has run once in simulation on synthetic data).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from federation.errors import AlgorithmInvalid, FipError
from federation.job import JobEvent
from federation.registry import Algorithm, Registry, file_names, load_algorithm, read_algorithm
from federation.simulation import smoke_test
from portal_central.errors import Conflict, FieldInvalid, Forbidden, NotFound
from portal_central.models import AlgorithmVersion, User, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionInfo:
    """What the pages and the API show of a version."""

    id: int
    name: str
    version: str
    description: str
    digest: str
    builtin: bool
    uploaded_at: datetime
    uploaded_by: str | None
    retired: bool
    algorithm: Algorithm


def files_of(row: AlgorithmVersion) -> dict[str, bytes]:
    central, remote, params = file_names(row.name)
    return {
        central: row.central_source.encode(),
        remote: row.remote_source.encode(),
        params: row.params_json.encode(),
    }


def _row(algorithm: Algorithm, *, builtin: bool, uploader: User | None) -> AlgorithmVersion:
    central, remote, params = file_names(algorithm.name)
    return AlgorithmVersion(
        name=algorithm.name,
        version=algorithm.version,
        description=algorithm.description,
        digest=algorithm.digest,
        central_source=algorithm.files[central].decode(),
        remote_source=algorithm.files[remote].decode(),
        params_json=algorithm.files[params].decode(),
        builtin=builtin,
        uploaded_by_id=uploader.id if uploader else None,
    )


def sync_builtins(*, session: Session, shipped: Registry | None = None) -> None:
    """Record every built-in version (of ``shipped``, by default those of this install) that
    the database does not have yet."""
    stored = {
        (row.name, row.version): row.digest
        for row in session.execute(
            select(AlgorithmVersion.name, AlgorithmVersion.version, AlgorithmVersion.digest)
        )
    }
    for algorithm in (shipped or Registry.with_builtins()).all():
        digest = stored.get((algorithm.name, algorithm.version))
        if digest is None:
            session.add(_row(algorithm, builtin=True, uploader=None))
            log.info("built-in algorithm %s %s registered", algorithm.name, algorithm.version)
        elif digest != algorithm.digest:
            raise AlgorithmInvalid(
                f"built-in {algorithm.name} {algorithm.version} differs from the version of that "
                "number in the database; give changed files a new version in params.json"
            )


def load_registry(*, session: Session, shipped: Registry | None = None) -> Registry:
    """Every stored version (retired ones too: old jobs pin them), read and validated from its
    bytes; none of its code runs here. A version that no longer validates (stored before
    replies were declared) is left out, with a line in the log. A version whose digest is that
    of a built-in of this install (``shipped``, by default read here) is that built-in, already
    read: the digest covers all three files."""
    builtins = {a.digest: a for a in (shipped or Registry.with_builtins()).all()}
    registry = Registry()
    rows = session.scalars(select(AlgorithmVersion).order_by(AlgorithmVersion.id))
    for row in rows:
        known = builtins.get(row.digest)
        if known is not None and (known.name, known.version) == (row.name, row.version):
            registry.add(known)
            continue
        try:
            algorithm = read_algorithm(row.name, files_of(row), builtin=False)
        except AlgorithmInvalid as error:
            log.warning("algorithm %s %s cannot be used: %s", row.name, row.version, error)
            continue
        registry.add(algorithm)
    return registry


def versions(*, session: Session, registry: Registry, name: str | None = None) -> list[VersionInfo]:
    query = select(AlgorithmVersion).order_by(AlgorithmVersion.name, AlgorithmVersion.id)
    if name is not None:
        query = query.where(AlgorithmVersion.name == name)
    return [
        VersionInfo(
            id=row.id,
            name=row.name,
            version=row.version,
            description=row.description,
            digest=row.digest,
            builtin=row.builtin,
            uploaded_at=row.uploaded_at,
            uploaded_by=row.uploaded_by.username if row.uploaded_by else None,
            retired=row.retired_at is not None,
            algorithm=registry.get(row.name, row.version),
        )
        for row in session.scalars(query)
        if any(a.version == row.version for a in registry.versions(row.name))
    ]


def current(
    *, session: Session, registry: Registry, name: str, version: str | None = None
) -> VersionInfo:
    """The newest version in service of an algorithm, or the version asked for."""
    found = versions(session=session, registry=registry, name=name)
    if not found:
        raise NotFound(f"no algorithm named '{name}'", field="algorithm")
    if version is not None:
        chosen = [v for v in found if v.version == version]
        if not chosen:
            raise NotFound(f"{name} has no version '{version}'", field="version")
        if chosen[0].retired:
            raise Conflict(
                f"{name} {version} is retired; pick a version in service", field="version"
            )
        return chosen[0]
    in_service = [v for v in found if not v.retired]
    if not in_service:
        raise Conflict(f"every version of {name} is retired", field="algorithm")
    return in_service[-1]


def validate_upload(files: dict[str, bytes], registry: Registry) -> Algorithm:
    """Load an upload (named by its Central file) and run it on synthetic data. A version
    number ``registry`` holds already is refused before the trial run (``store`` checks the
    database again, where two uploads of one number would meet)."""
    centrals = [name for name in files if name.endswith("Central.py")]
    if len(centrals) != 1:
        raise FieldInvalid("the central file must be named <Name>Central.py", field="central")
    name = centrals[0].removesuffix("Central.py")
    try:
        algorithm = load_algorithm(name, files)
    except AlgorithmInvalid as error:
        raise FieldInvalid(str(error), field=_field_of(str(error), name)) from None
    for known in registry.versions(algorithm.name):
        if known.version == algorithm.version:
            raise _taken(algorithm, known.digest)
    said: list[str] = []  # what the remote half said at the synthetic sites: for its uploader

    def note(event: JobEvent) -> None:
        if event.kind == "warning" and event.site is not None and len(said) < 3:
            said.append(event.message)

    try:
        smoke_test(algorithm, on_event=note)
    except FipError as error:
        detail = f" (at the sites: {'; '.join(dict.fromkeys(said))})" if said else ""
        raise FieldInvalid(
            f"the pair failed its trial run on synthetic data: {error}{detail}"
        ) from None
    except Exception as error:  # noqa: BLE001 - any crash of uploaded code is the upload's fault
        raise FieldInvalid(
            f"the pair crashed in its trial run on synthetic data: {type(error).__name__}: {error}"
        ) from None
    return algorithm


def store(
    *, session: Session, registry: Registry, algorithm: Algorithm, uploader: User
) -> AlgorithmVersion:
    known = session.scalar(
        select(AlgorithmVersion).where(
            AlgorithmVersion.name == algorithm.name, AlgorithmVersion.version == algorithm.version
        )
    )
    if known is not None:
        raise _taken(algorithm, known.digest)
    row = _row(algorithm, builtin=False, uploader=uploader)
    session.add(row)
    session.flush()
    registry.add(algorithm)
    return row


def _taken(algorithm: Algorithm, digest: str) -> Conflict:
    """The refusal of a version number that exists already (with files of ``digest``)."""
    same = " with the same files" if digest == algorithm.digest else ""
    return Conflict(
        f"{algorithm.name} version {algorithm.version} exists already{same}; "
        "give the new files a new version in params.json",
        field="params",
    )


def retire(
    *, session: Session, name: str, version_id: int, retired: bool = True
) -> AlgorithmVersion:
    """Take a version out of service for new jobs (old jobs keep it), or put it back.
    A built-in ships with the portal and stays in service (a retired one is put back)."""
    row = session.get(AlgorithmVersion, version_id)
    if row is None or row.name != name:
        raise NotFound(f"{name} has no version with id {version_id}")
    if row.builtin and retired:
        raise Forbidden(
            f"{name} {row.version} is built in: it ships with the portal and cannot be retired "
            "(retire the versions that were uploaded)"
        )
    row.retired_at = utcnow() if retired else None
    return row


def _field_of(message: str, name: str) -> str:
    """Which uploaded file a validation message is about (messages start with the file)."""
    head = message[:60]
    for marker, field in ((f"{name}Central.py", "central"), (f"{name}Remote.py", "remote")):
        if marker in head:
            return field
    return "params"


async def validate_upload_async(files: dict[str, bytes], registry: Registry) -> Algorithm:
    return await asyncio.to_thread(validate_upload, files, registry)
