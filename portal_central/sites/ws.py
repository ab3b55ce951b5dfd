"""The sites' WebSocket at central: ``/ws/site``, on the same port as the pages and the API.

A site authenticates with its access token in the Authorization header (never in the URL);
the token must belong to an approved, enabled site user, and binds the connection to that
site_id. Binary frames carry requests and replies (``federation.protocol``); text frames carry
control messages (ready, cancel, heartbeat, job updates). A malformed frame closes the socket
with 1003, our own fault with 1011; central keeps serving the others.
"""

from __future__ import annotations

import ipaddress
import logging

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from federation.errors import InputError, ProtocolError
from federation.policy import Policy
from federation.protocol import Heartbeat, PolicySummary, Welcome, decode_control
from portal_central.accounts.status import AccountStatus, Role
from portal_central.models import User
from portal_central.security import InvalidToken
from portal_central.state import CentralState

router = APIRouter(include_in_schema=False)
log = logging.getLogger(__name__)
PROTOCOL_FAULT = 1003
INTERNAL_FAULT = 1011


@router.websocket("/ws/site")
async def site_socket(websocket: WebSocket) -> None:
    state: CentralState = websocket.app.state.fip
    # The account is read in a worker thread: the loop carries every other site's socket.
    refusal, site_id = await run_in_threadpool(_authenticate, websocket, state)
    if refusal is not None or site_id is None:
        log.warning("site connection refused: %s", refusal)
        status = 401 if refusal in _UNAUTHENTICATED else 403
        await websocket.send_denial_response(JSONResponse({"detail": refusal}, status_code=status))
        return
    await websocket.accept()
    connections = state.connections
    link = await connections.attach(site_id, websocket)
    try:
        await link.send_control(
            Welcome(site_id=site_id, ready=state.orchestrator.ready_jobs(site_id))
        )
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            connections.seen(link)
            if message.get("bytes") is not None:
                connections.deliver(site_id, message["bytes"])
            elif message.get("text") is not None:
                control = decode_control(message["text"])
                if isinstance(control, PolicySummary):
                    _remember_policy(state, site_id, control)
                elif not isinstance(control, Heartbeat):
                    await state.orchestrator.on_control(site_id, control)
    except ProtocolError as error:
        log.warning("site %s sent a malformed frame: %s", site_id, error)
        await _close(websocket, PROTOCOL_FAULT, str(error)[:120])
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("site %s: connection handler failed", site_id)
        await _close(websocket, INTERNAL_FAULT, "central failed; reconnect")
    finally:
        connections.detach(link)


_NO_TOKEN = "no access token: send 'Authorization: Bearer <token>'"
_BAD_TOKEN = "the access token is not valid or has expired"
_UNAUTHENTICATED = (_NO_TOKEN, _BAD_TOKEN)


def _authenticate(websocket: WebSocket, state: CentralState) -> tuple[str | None, str | None]:
    """A refusal message, or None and the connection's site_id."""
    secure = websocket.url.scheme == "wss"
    if not secure and not (state.settings.allow_insecure_websocket and _loopback(websocket)):
        return "plain ws:// is refused: connect with wss:// (TLS)", None
    header = websocket.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        return _NO_TOKEN, None
    try:
        claims = state.tokens.read(header[7:].strip(), kind="access")
    except InvalidToken:
        return _BAD_TOKEN, None
    with state.database.session() as session:
        user = session.get(User, claims.user_id)
    if user is None or user.role != Role.SITE or user.site_id is None:
        return "this account is not a site", None
    if user.status != AccountStatus.APPROVED or user.token_version != claims.token_version:
        return f"the site '{user.site_id}' is {user.status}; its tokens are revoked", None
    return None, user.site_id


def _loopback(websocket: WebSocket) -> bool:
    host = websocket.client.host if websocket.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", "testclient")


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    try:
        await websocket.close(code=code, reason=reason)
    except RuntimeError:
        pass  # already closed


def _remember_policy(state: CentralState, site_id: str, summary: PolicySummary) -> None:
    """Keep a site's policy to foresee its refusals; one central cannot read is not kept."""
    try:
        state.connections.policies[site_id] = Policy.from_mapping(summary.policy)
    except InputError as error:
        state.connections.policies.pop(site_id, None)
        log.warning("site %s sent a policy central cannot read: %s", site_id, error)
