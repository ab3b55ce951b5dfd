"""Rendering pages and fragments for the central and the site portals, and what a browser may do.

Templates are found by name: ``central/...`` in portal_central's ``templates/``, ``site/...`` in
portal_site's, and the shared ones (``base.html``, ``_macros.html``, the error pages) in this
package's ``templates/``; they ship inside the packages, so an installed wheel has them."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    PrefixLoader,
    StrictUndefined,
    select_autoescape,
)
from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from algorithms import methods
from portal_common.eventlog import grouped

TEMPLATES = Path(__file__).resolve().parent / "templates"
"""The templates both portals use."""
STATIC = Path(__file__).resolve().parent / "static"
"""The static files both portals serve at /static (styles, icon, vendored scripts)."""


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
        loader=ChoiceLoader(
            [
                FileSystemLoader(TEMPLATES),
                PrefixLoader(
                    {
                        "central": PackageLoader("portal_central", "templates"),
                        "site": PackageLoader("portal_site", "templates"),
                    }
                ),
            ]
        ),
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
    environment.filters["method_label"] = methods.label
    environment.filters["grouped"] = grouped
    environment.globals["methods"] = methods.METHODS
    return environment


ENVIRONMENT = _environment()
# Macros are globals too, so that a block rendered alone (an HTMX fragment) has them: the
# `{% from "_macros.html" import ... %}` at the top of a page runs only for the whole page.
_MACROS = ENVIRONMENT.get_template("_macros.html").module
ENVIRONMENT.globals.update(
    {name: getattr(_MACROS, name) for name in ("field", "when", "badge", "alert")}
)
PAGE_DEFAULTS: dict[str, Any] = {
    "user": None,
    "csrf_token": "",
    "nav": "",
    "portal": "central",
    "events_seen": None,
    "connection_seen": None,
}
"""What every page may use; a portal's dependencies put the caller's values in
``request.state.page_context``. ``events_seen`` and ``connection_seen``: the broker's count of the
page's topic (its job; the site's connection) before the page read what it shows, which its live
stream is given (``?seen=``, :meth:`Broker.count`)."""


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def markup(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    block: str | None = None,
) -> str:
    """The one way a portal turns a template into HTML: a whole page, or one named block of it.

    A full page, its HTMX refresh (``render(..., block=...)``) and its live server-sent event
    (``ServerSentEvent(data=markup(..., block=...))``) all come from here, with the same page
    defaults and the caller's ``request.state.page_context``; given the same context they are
    the same markup."""
    page = ENVIRONMENT.get_template(template)
    values = {
        **PAGE_DEFAULTS,
        **getattr(request.state, "page_context", {}),
        "request": request,
        **(context or {}),
    }
    if block is None:
        return page.render(values)
    return "".join(page.blocks[block](page.new_context(values)))


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    block: str | None = None,
) -> HTMLResponse:
    """A whole page, or one named block of it (an HTMX fragment), as a response."""
    response = HTMLResponse(
        markup(request, template, context, block=block), status_code=status_code
    )
    response.headers["Vary"] = "HX-Request"
    return response


def attachment(body: bytes | str | Iterator[bytes], *, filename: str, media_type: str) -> Response:
    """A file the browser saves under ``filename``, never cached; an iterator's chunks are
    streamed as they are made."""
    headers = {
        "Cache-Control": "no-store",
        "Content-Disposition": f'attachment; filename="{filename}"',
    }
    if isinstance(body, bytes | str):
        return Response(body, media_type=media_type, headers=headers)
    return StreamingResponse(body, media_type=media_type, headers=headers)


def routes_of(*routers: APIRouter) -> list[BaseRoute]:
    """The routes of routers made once at import, for ``FastAPI(routes=...)``: each route
    already carries its router's prefix, tags, dependencies and ``include_in_schema``. An app
    that ``include_router``s them instead builds every route's dependencies again on its first
    request (about 0.1 s an app, paid by every test that starts a portal)."""
    return [route for router in routers for route in router.routes]


def api_docs(app: FastAPI) -> None:
    """Serve the API documentation at /docs from the vendored Swagger UI (no CDN).

    Swagger UI starts from one inline script: the page's own CSP allows exactly that script
    (by its hash) and the inline styles Swagger UI sets, and nothing else inline.
    """

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title}: API",
            swagger_js_url="/static/vendor/swagger-ui-5.35.0-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui-5.35.0.css",
            swagger_favicon_url="/static/favicon.svg",
            swagger_ui_parameters={"validatorUrl": None},
        )
        html = bytes(page.body).decode()
        hashes = " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
            for script in re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
        )
        page.headers["Content-Security-Policy"] = CSP.replace(
            "script-src 'self'", f"script-src 'self' {hashes}"
        ).replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
        return page


# ------------------------------------------------------------------ what a browser may do

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)
"""The pages load their scripts (htmx and its SSE extension), styles and icon from /static,
talk only to their own portal (htmx requests, server-sent events) and are never framed."""
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: with it, browsers send "Origin: null" on form posts, which the
    # cross-site check must refuse. same-origin sends nothing to other sites either.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
HSTS = "max-age=31536000"
"""Sent by central on responses it serves over TLS (a year; no includeSubDomains: central's
host name may share a domain with other services)."""


class SecurityHeaders:
    """ASGI middleware: every HTTP response gets ``SECURITY_HEADERS`` (a response that set its
    own Content-Security-Policy keeps it), and with ``hsts`` the ones sent over TLS get HSTS."""

    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        over_tls = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
                if self.hsts and over_tls:
                    headers["Strict-Transport-Security"] = HSTS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def security_headers(app: FastAPI, *, hsts: bool = False) -> None:
    """Install the security headers on a portal (both portals call this)."""
    app.add_middleware(SecurityHeaders, hsts=hsts)


# ------------------------------------------------------------------ which host a request is for

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


def _bracketed(name: str) -> str:
    """An IPv6 literal as it appears in a Host header: ``[::1]``."""
    try:
        if ipaddress.ip_address(name).version == 6:
            return f"[{name}]"
    except ValueError:
        pass
    return name


def host_entry(entry: str, port: int) -> str:
    """One allowed host as ``name:port`` (lower case); an entry without a port gets ``port``."""
    entry = entry.strip().lower()
    if not entry:
        raise ValueError("an empty host name")
    if "/" in entry or "@" in entry or " " in entry:
        raise ValueError(f"{entry!r} is not a host name or host:port (no scheme, no path)")
    if entry.count(":") > 1 and not entry.startswith("["):
        entry = _bracketed(entry)  # a bare IPv6 address, without a port
    split = urlsplit(f"//{entry}")
    try:
        given_port = split.port
    except ValueError:
        raise ValueError(f"{entry!r} has a port that is not a number") from None
    name = split.hostname or ""
    if not name:
        raise ValueError(f"{entry!r} has no host name")
    return f"{_bracketed(name)}:{given_port or port}"


def allowed_hosts(port: int, *, bound: str = "", extra: Iterable[str] = ()) -> frozenset[str]:
    """The Host values a local portal answers: loopback names at ``port``, the address it was
    bound to when that is one address (not a wildcard such as 0.0.0.0), and ``extra``."""
    names = {f"{name}:{port}" for name in LOOPBACK_NAMES}
    if bound.strip().lower() not in _WILDCARDS:
        names.add(host_entry(_bracketed(bound.strip().strip("[]")), port))
    names |= {host_entry(entry, port) for entry in extra}
    if port == 80:  # a browser leaves the default port out of Host
        names |= {name.rsplit(":", 1)[0] for name in names if name.endswith(":80")}
    return frozenset(names)


class HostCheck:
    """ASGI middleware: refuse, before any route runs, an HTTP request or WebSocket whose Host
    header is not one of ``allowed``. This defeats DNS rebinding: a page of evil.example whose
    name now points at 127.0.0.1 reaches the portal with ``Host: evil.example:<port>``."""

    def __init__(self, app: ASGIApp, *, allowed: Collection[str]) -> None:
        self.app = app
        self.allowed = frozenset(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host", "").lower()
        if host in self.allowed:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "unknown host"})
            return
        shown = host or "(none)"
        body = (
            f"421 Misdirected Request: this portal does not answer for Host {shown}. "
            f"Open it at http://{sorted(self.allowed)[0]}/, or add the name to "
            "FIP_SITE_ALLOWED_HOSTS.\n"
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 421,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    *((k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def cross_site(request: Request, allowed: Collection[str] | None = None) -> bool:
    """A state-changing request that a page of another web site made the browser send.

    Browsers send Origin with every POST; scripts and sites send none, and pass. The Origin's
    host:port must be one of ``allowed`` (the site portal's allowed hosts); a portal that has
    no allow-list of its own (central, which is reached under names its operator chooses)
    passes None, and then the Origin must match the Host the request came to.
    """
    origin = request.headers.get("origin")
    if request.method not in ("POST", "PUT", "PATCH", "DELETE") or not origin:
        return False
    if allowed is None:
        return urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower()
    split = urlsplit(origin)
    try:
        port = split.port or (443 if split.scheme == "https" else 80)
    except ValueError:
        return True
    netloc = f"{_bracketed(split.hostname or '')}:{port}"
    return netloc not in allowed


class CrossSiteRefusal:
    """ASGI middleware: a request that ``cross_site`` calls cross-site (with ``allowed`` as
    given) is answered by ``refuse`` before any route, or any middleware inside this one,
    reads it; every other request passes untouched. A plain ASGI middleware, like
    ``SecurityHeaders``: ``@app.middleware("http")`` ran every request, this check's few
    comparisons included, through a task group and memory streams of its own."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed: Collection[str] | None,
        refuse: Callable[[Request], Awaitable[Response]],
    ) -> None:
        self.app = app
        self.allowed = allowed
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            if cross_site(request, self.allowed):
                response = await self.refuse(request)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
