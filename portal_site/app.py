"""The site portal's application: ``create_app(settings)``, a local UI and its JSON API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from portal_common import metrics as prometheus
from portal_common.uploads import BodyLimit
from portal_common.web import (
    STATIC,
    CrossSiteRefusal,
    HostCheck,
    api_docs,
    is_htmx,
    render,
    routes_of,
)
from portal_common.web import security_headers as install_security_headers
from portal_site import api, pages
from portal_site import metrics as site_metrics
from portal_site.central import CentralError
from portal_site.jobs import SiteError
from portal_site.local_auth import SignInRequired
from portal_site.settings import SiteSettings
from portal_site.state import SiteState

log = logging.getLogger(__name__)


def create_app(settings: SiteSettings) -> FastAPI:
    """The site portal: it answers only requests for its own host names (``settings.hosts``)
    and, but for /health, /metrics, /static, /docs and the local sign-in, only its own user
    signed in with the local password."""
    hosts = settings.hosts

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = SiteState.create(settings)
        app.state.site = state
        state.jobs.broker.bind(asyncio.get_running_loop())
        worker = asyncio.create_task(state.worker.run(), name="site-worker")
        log.info("site portal on http://%s:%s", settings.host, settings.port)
        try:
            yield
        finally:
            worker.cancel()
            await state.worker.stop()
            state.store.dispose()

    app = FastAPI(
        title="Federated Imputation Portal: site",
        description="JSON API of a site portal. It runs next to the site's data, on this machine.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        routes=routes_of(pages.router, api.local, api.router),  # /docs: the JSON API only
    )
    api_docs(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Every body counted as it arrives; the CSV upload routes raise the limit for themselves.
    app.add_middleware(BodyLimit, limit=settings.max_form_bytes, setting="FIP_SITE_MAX_FORM_BYTES")

    # Form posts from other web pages, whose Origin is not one of this portal's names, are
    # refused (the session cookie is SameSite=Strict too, and forms carry a CSRF token).
    app.add_middleware(CrossSiteRefusal, allowed=hosts, refuse=_cross_site_refused)

    metrics = prometheus.registry(site_metrics.families(lambda: app.state.site))

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def metrics_page(request: Request) -> Response:
        """Prometheus metrics: the connection to central, and what this site sent (OpenMetrics
        when the Accept header asks for it)."""
        return prometheus.metrics_response(request, metrics)

    @app.get("/health", tags=["operations"])
    def health(request: Request) -> JSONResponse:
        """The local database answers; and how the connection to central stands."""
        state: SiteState = request.app.state.site
        try:
            state.store.config()
        except Exception as error:  # noqa: BLE001 - any database failure is "unhealthy"
            return JSONResponse({"status": "unhealthy", "database": str(error)}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok", "central": state.worker.status})

    app.add_exception_handler(SiteError, _site_error)  # type: ignore[arg-type]
    app.add_exception_handler(CentralError, _central_error)  # type: ignore[arg-type]
    app.add_exception_handler(SignInRequired, _sign_in_required)  # type: ignore[arg-type]
    install_security_headers(app)
    app.add_middleware(HostCheck, allowed=hosts)  # outermost: before any route or middleware
    return app


async def _cross_site_refused(request: Request) -> Response:
    return JSONResponse({"detail": "cross-site request refused"}, status_code=403)


async def _sign_in_required(request: Request, error: SignInRequired) -> Response:
    """No local session: the API and event streams answer 401; a page goes to sign in."""
    page = "/local/password" if error.first_run else "/local/sign-in"
    path = request.url.path
    if path.startswith("/api/") or path.endswith("/events") or path.startswith("/events/"):
        return JSONResponse(
            {"detail": error.message}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )
    target = f"{page}?next={path}" if request.method == "GET" else page
    if is_htmx(request):
        return Response(status_code=401, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


async def _site_error(request: Request, error: SiteError) -> Response:
    return _error(request, error.message, error.status)


async def _central_error(request: Request, error: CentralError) -> Response:
    return _error(request, str(error), 502 if error.status is None else error.status)


def _error(request: Request, message: str, status: int) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": message}, status_code=status)
    if is_htmx(request):
        response = render(
            request, "_error.html", {"message": message, "portal": "site"}, status_code=status
        )
        response.headers["HX-Retarget"] = "#main"
        response.headers["HX-Reswap"] = "afterbegin"
        return response
    return render(
        request,
        "error.html",
        {"title": "Something is wrong", "message": message, "portal": "site"},
        status_code=status,
    )
