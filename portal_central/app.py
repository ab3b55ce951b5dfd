"""The central portal's application: ``create_app(settings)``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text

from portal_central import metrics as central_metrics
from portal_central.api import accounts as accounts_api
from portal_central.api import algorithms as algorithms_api
from portal_central.api import jobs as jobs_api
from portal_central.api import plausibility as plausibility_api
from portal_central.db import upgrade
from portal_central.deps import OptionalUser, StateDep
from portal_central.errors import FieldInvalid, Forbidden, PortalError, Unauthorized
from portal_central.methods import method_name
from portal_central.settings import CentralSettings
from portal_central.sites import ws
from portal_central.state import CentralState
from portal_central.web import admin, algorithms, auth, jobs, plots
from portal_common import metrics as prometheus
from portal_common.uploads import BodyLimit
from portal_common.web import (
    ENVIRONMENT,
    STATIC,
    CrossSiteRefusal,
    api_docs,
    is_htmx,
    render,
    routes_of,
    security_headers,
)

log = logging.getLogger(__name__)
ENVIRONMENT.globals["method_name"] = method_name  # names spelled out in every page


def create_app(settings: CentralSettings) -> FastAPI:
    """Build the portal for these settings; the database is upgraded when it starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        upgrade(settings.prepare().database)
        state = CentralState.create(settings)
        app.state.fip = state
        state.broker.bind(asyncio.get_running_loop())
        interrupted = state.orchestrator.moves.interrupt_unfinished()
        if interrupted:
            log.warning(
                "%d job(s) were under way when central stopped: now interrupted", interrupted
            )
        log.info("central portal at %s, database %s", settings.url, _redacted(settings.database))
        state.tasks.spawn(state.orchestrator.sweep_forever(), what="the results' sweeper")
        try:
            yield
        finally:
            await state.orchestrator.shutdown()
            state.database.dispose()

    # Pages and forms are not the JSON API: their routers leave the schema, so /docs lists only
    # /api/..., /health and /metrics.
    app = FastAPI(
        title="Federated Imputation Portal: central",
        description="JSON API of the central portal. Browser pages are served beside it.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        routes=routes_of(
            auth.router,
            admin.router,
            algorithms.router,
            jobs.router,
            plots.router,
            ws.router,
            accounts_api.router,
            algorithms_api.router,
            jobs_api.router,
            plausibility_api.router,
        ),
    )
    api_docs(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Every body counted as it arrives; data upload routes raise the limit for themselves.
    app.add_middleware(
        BodyLimit, limit=settings.max_form_bytes, setting="FIP_CENTRAL_MAX_FORM_BYTES"
    )

    # Posts that a page of another site made the browser send are refused (sign-in and
    # registration included, which carry no session yet); scripts send no Origin.
    app.add_middleware(CrossSiteRefusal, allowed=None, refuse=_cross_site_refused)

    app.add_exception_handler(PortalError, _portal_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    security_headers(app, hsts=True)  # HSTS on responses served over TLS only

    @app.get("/", include_in_schema=False)
    def home(user: OptionalUser) -> Response:
        if user is None:
            return RedirectResponse("/sign-in", status_code=303)
        return RedirectResponse("/jobs", status_code=303)

    @app.get("/account", response_class=HTMLResponse, include_in_schema=False)
    def account(request: Request, user: OptionalUser, state: StateDep) -> Response:
        if user is None:
            return RedirectResponse("/sign-in?next=/account", status_code=303)
        return render(
            request, "central/account.html", {"central_url": state.settings.url, "nav": "account"}
        )

    metrics = prometheus.registry(central_metrics.families(lambda: app.state.fip))

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def metrics_page(request: Request) -> Response:
        """Prometheus metrics: jobs by state, sites online, messages and bytes with the sites
        (OpenMetrics when the Accept header asks for it)."""
        return prometheus.metrics_response(request, metrics)

    @app.get("/health", tags=["operations"])
    def health(state: StateDep) -> JSONResponse:
        """Whether the database answers and takes a write, and how many sites are connected."""
        try:
            with state.database.engine.connect() as connection, connection.begin() as write:
                # A write that changes nothing, rolled back: a read-only database refuses it.
                connection.execute(text("UPDATE alembic_version SET version_num = version_num"))
                write.rollback()
        except Exception as error:  # noqa: BLE001 - any database failure is "unhealthy"
            return JSONResponse({"status": "unhealthy", "database": str(error)}, status_code=503)
        return JSONResponse(
            {"status": "ok", "database": "ok", "sites_online": state.connections.count()}
        )

    return app


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "application/json" in request.headers.get(
        "accept", ""
    )


async def _cross_site_refused(request: Request) -> Response:
    return await _portal_error(
        request, Forbidden("this form was sent from another web site; refused")
    )


async def _portal_error(request: Request, error: PortalError) -> Response:
    if _wants_json(request):
        return JSONResponse(
            {"detail": error.message, "field": error.field},
            status_code=error.status_code,
            headers=getattr(error, "headers", None),  # Retry-After of a 429
        )
    if isinstance(error, Unauthorized) and request.method == "GET" and not is_htmx(request):
        return RedirectResponse(f"/sign-in?next={request.url.path}", status_code=303)
    if is_htmx(request):
        response = render(
            request, "_error.html", {"message": error.message}, status_code=error.status_code
        )
        response.headers["HX-Retarget"] = "#main"
        response.headers["HX-Reswap"] = "afterbegin"
        return response
    titles = {401: "Please sign in", 403: "Not allowed", 404: "Not found", 409: "Not possible now"}
    return render(
        request,
        "error.html",
        {"title": titles.get(error.status_code, "Something is wrong"), "message": error.message},
        status_code=error.status_code,
    )


async def _validation_error(request: Request, error: RequestValidationError) -> Response:
    first = error.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    message = f"{field}: {first.get('msg', 'invalid')}" if field else first.get("msg", "invalid")
    return await _portal_error(request, FieldInvalid(message, field=field))


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest
