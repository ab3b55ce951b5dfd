"""What a request uploads, read for the pages and the JSON API alike: central's CSV for a job
(parsed as it arrives, checked as a site's is) and an algorithm's three files."""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from federation.data import Table, check_columns, read_csv_chunks
from federation.errors import InputError
from federation.registry import file_names
from federation.roles import check_upload, spec_text_columns
from portal_central.errors import FieldInvalid, PortalError
from portal_central.jobs import checks, service
from portal_central.jobs.header import summarize_table
from portal_central.jobs.orchestrator import spec_of
from portal_central.models import Job, User
from portal_central.state import CentralState
from portal_common.uploads import file_part, read_form

_in_thread = run_in_threadpool


async def take_central_data(
    request: Request, state: CentralState, job_id: int, admin: User
) -> PortalError | None:
    """Read central's CSV for a job (multipart field ``file``) after the job is found, check it
    as a site's is checked and against what the job needs of central's rows (``checks``), and
    hand it to the orchestrator; the error to show, if any: the job stays as it was, waiting for a
    corrected file. Messages name the file and column, never a cell's value."""
    try:
        job = await _in_thread(_visible_job, state, job_id, admin)
        async with file_part(request, "file") as upload:
            if upload is None:
                raise FieldInvalid("choose central's CSV file", field="file")
            # Parsed as it arrives, and checked, in worker threads: a large file must not stop
            # the event loop, nor be held whole beside its table.
            try:
                table = await read_csv_chunks(
                    upload.chunks, label=upload.filename, text=spec_text_columns(spec_of(job))
                )
            except InputError as error:
                raise FieldInvalid(str(error), field="file") from None
        await _in_thread(_check_central_table, state, job, table)
        await state.orchestrator.upload_central_data(job, table)
    except PortalError as error:
        return error
    return None


def _visible_job(state: CentralState, job_id: int, user: User) -> Job:
    """The job if ``user`` may see it (its session closed: read only its columns)."""
    with state.database.session() as session:
        return service.get_job(session=session, job_id=job_id, user=user)


def _check_central_table(state: CentralState, job: Job, table: Table) -> None:
    """Central's table for ``job``, checked as a site's is (columns by name, roles and
    levels) and against what the job needs of central's rows (``checks``): messages name the
    file and column, never a cell's value."""
    spec = spec_of(job)
    try:
        check_columns(table, job.columns)
        # in the job's layout, text levels as the job's codes (a block at a time)
        coding = check_upload(table, spec, show_values=False, alone=not job.participants)
    except InputError as error:
        raise FieldInvalid(str(error), field="file") from None
    checks.refuse(
        checks.data_problems(
            state.registry.get(job.algorithm.name, job.algorithm.version),
            summarize_table(coding),
            [
                checks.TargetSpec(t["name"], t["type"], tuple(t.get("levels", ())))
                for t in job.targets
            ],
            job.params,
            sites=len(job.participants),
            label=table.label,
            modelled=set(spec.columns),
        ),
        field="file",
    )


async def read_upload(request: Request) -> dict[str, bytes]:
    """The three uploaded files (fields central, remote, params) by their names; the names must
    follow the contract. Read in memory, within FIP_CENTRAL_MAX_FORM_BYTES."""
    form = await read_form(request)
    files: dict[str, bytes] = {}
    for field in ("central", "remote", "params"):
        upload_file = form.file(field)
        name = (upload_file.filename if upload_file else "").rsplit("/", 1)[-1]
        if upload_file is None or not name:
            raise FieldInvalid(f"choose the {field} file", field=field)
        files[name] = bytes(upload_file.content)
    central_name = next((n for n in files if n.endswith("Central.py")), None)
    if central_name is None:
        raise FieldInvalid("the central file must be named <Name>Central.py", field="central")
    expected = file_names(central_name.removesuffix("Central.py"))
    if set(files) != set(expected):
        raise FieldInvalid(
            f"the files must be named {', '.join(expected)}; got {', '.join(sorted(files))}",
            field="remote" if expected[1] not in files else "params",
        )
    return files
