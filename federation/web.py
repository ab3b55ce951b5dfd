"""Rendering pages and fragments from ``templates/``, for the central and the site portals."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
STATIC = Path(__file__).resolve().parents[1] / "static"


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """A time in a person's terms: 'just now', '2 min ago', '3 h ago', '5 days ago'."""
    if moment is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    if seconds < 0:
        return "in the future"
    for limit, unit, size in ((60, "", 1), (3600, "min", 60), (86400, "h", 3600)):
        if seconds < limit:
            return "just now" if not unit else f"{int(seconds // size)} {unit} ago"
    days = int(seconds // 86400)
    return f"{days} day{'s' if days != 1 else ''} ago"


def _environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
    )
    environment.filters["ago"] = ago
    environment.filters["ago_epoch"] = lambda epoch: ago(
        None if epoch is None else datetime.fromtimestamp(epoch, UTC)
    )
    environment.filters["clock"] = lambda epoch: datetime.fromtimestamp(epoch, UTC).strftime(
        "%H:%M:%S"
    )
    environment.filters["iso"] = lambda m: m.isoformat(timespec="seconds") if m else ""
    return environment


ENVIRONMENT = _environment()
# Macros are globals too, so that a block rendered alone (an HTMX fragment) has them: the
# `{% from "_macros.html" import ... %}` at the top of a page runs only for the whole page.
_MACROS = ENVIRONMENT.get_template("_macros.html").module
ENVIRONMENT.globals.update(
    {name: getattr(_MACROS, name) for name in ("field", "when", "badge", "alert")}
)
PAGE_DEFAULTS: dict[str, Any] = {"user": None, "csrf_token": "", "nav": "", "portal": "central"}
"""What every page may use; a portal's dependencies put the caller's values in
``request.state.page_context``."""


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    block: str | None = None,
) -> HTMLResponse:
    """A whole page, or one named block of it (an HTMX fragment)."""
    page = ENVIRONMENT.get_template(template)
    values = {
        **PAGE_DEFAULTS,
        **getattr(request.state, "page_context", {}),
        "request": request,
        **(context or {}),
    }
    if block is None:
        html = page.render(values)
    else:
        html = "".join(page.blocks[block](page.new_context(values)))
    response = HTMLResponse(html, status_code=status_code)
    response.headers["Vary"] = "HX-Request"
    return response


def api_docs(app: FastAPI) -> None:
    """Serve the API documentation at /docs from the vendored Swagger UI (no CDN)."""

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title}: API",
            swagger_js_url="/static/vendor/swagger-ui-5.35.0-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui-5.35.0.css",
            swagger_favicon_url="/static/favicon.svg",
        )


def cross_site(request: Request) -> bool:
    """A state-changing request that a page of another web site made the browser send.

    Browsers send Origin with every POST; scripts and sites send none, and pass.
    """
    origin = request.headers.get("origin")
    return (
        request.method in ("POST", "PUT", "PATCH", "DELETE")
        and bool(origin)
        and urlsplit(origin or "").netloc != request.headers.get("host")
    )
