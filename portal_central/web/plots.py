"""A completed job's plausibility plots on its page (a fragment loaded after the page), each as
SVG and its numbers as CSV; for admins only, as the job's other results."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from portal_central.deps import AdminUser, StateDep
from portal_central.errors import PortalError
from portal_central.jobs import plausibility, service
from portal_central.paths import RowId
from portal_common.web import render

router = APIRouter(prefix="/jobs", include_in_schema=False)


@router.get("/{job_id}/plots", response_class=HTMLResponse)
def plots_section(request: Request, job_id: RowId, admin: AdminUser, state: StateDep) -> Response:
    """The plots and their tables, or why there are none (results gone) in plain words."""
    with state.database.session() as session:
        job = service.get_job(session=session, job_id=job_id, user=admin)
        try:
            plots = plausibility.job_plots(state.store, job)
            traces = plausibility.job_traces(state.store, job)
            message = ""
        except PortalError as error:
            plots, traces, message = [], [], error.message
    return render(
        request,
        "central/jobs/_plots.html",
        {
            "job_id": job_id,
            "plots": plots,
            "traces": traces,
            "message": message,
            "quote": _quote,
        },
    )


@router.get("/{job_id}/plots/{target:path}.svg")
def plot_svg(job_id: RowId, target: str, admin: AdminUser, state: StateDep) -> Response:
    """One target's figure as SVG (densities or bars, and the strip plot)."""
    with state.database.session() as session:
        job = service.get_job(session=session, job_id=job_id, user=admin)
        plot = plausibility.target_plot(state.store, job, target)
    return _file(plot.svg, "image/svg+xml", job_id, target, "svg")


@router.get("/{job_id}/plots/{target:path}.csv")
def plot_csv(job_id: RowId, target: str, admin: AdminUser, state: StateDep) -> Response:
    """The numbers of one target's figure as CSV."""
    with state.database.session() as session:
        job = service.get_job(session=session, job_id=job_id, user=admin)
        plot = plausibility.target_plot(state.store, job, target)
    return _file(plot.numbers.csv().encode(), "text/csv; charset=utf-8", job_id, target, "csv")


@router.get("/{job_id}/traces/{target:path}.svg")
def trace_svg(job_id: RowId, target: str, admin: AdminUser, state: StateDep) -> Response:
    """One target's trace plot as SVG (mean and SD of its imputed cells per cycle)."""
    with state.database.session() as session:
        job = service.get_job(session=session, job_id=job_id, user=admin)
        plot = plausibility.target_trace(state.store, job, target)
    return _file(plot.svg, "image/svg+xml", job_id, target, "svg", prefix="trace_")


@router.get("/{job_id}/traces/{target:path}.csv")
def trace_csv(job_id: RowId, target: str, admin: AdminUser, state: StateDep) -> Response:
    """The numbers of one target's trace plot as CSV (chain, cycle, mean, sd, variance)."""
    with state.database.session() as session:
        job = service.get_job(session=session, job_id=job_id, user=admin)
        plot = plausibility.target_trace(state.store, job, target)
    csv = plot.numbers.csv().encode()
    return _file(csv, "text/csv; charset=utf-8", job_id, target, "csv", prefix="trace_")


def _file(
    content: bytes, media_type: str, job_id: int, target: str, extension: str, *, prefix: str = ""
) -> Response:
    from federation.plots import file_stem  # matplotlib is loaded when a plot is asked for

    stem = file_stem(target)
    if prefix:
        stem = prefix + stem.removeprefix("plausibility_")
    name = f"job-{job_id}-{stem}.{extension}"
    return Response(
        content,
        media_type=media_type,
        headers={
            "Content-Disposition": f'inline; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


def _quote(name: str) -> str:
    """A target's name as one path segment of a URL."""
    return quote(name, safe="")
