"""The site's worker: one WebSocket to central, kept open, answering requests on local data.

It signs in with the stored refresh token (rotating it), connects with the access token in
the Authorization header, reconnects with growing pauses (websockets' reconnecting iterator),
and answers each request frame with the job's runner in a worker thread. Every reply that
leaves is written to the ledger: its kind, array shapes, rows behind it and bytes, never a
value.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Generator
from typing import Any, cast

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import process_exception
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.frames import CLOSE_CODE_EXPLANATIONS, CloseCode

from federation.errors import ProtocolError
from federation.job import JobEvent
from federation.lane import Lane
from federation.protocol import (
    MAX_FRAME_BYTES,
    ControlMessage,
    ErrorKind,
    ErrorReply,
    Heartbeat,
    Op,
    PolicySummary,
    Reply,
    Request,
    Welcome,
    decode,
    decode_control,
    encode,
    encode_control,
)
from federation.secure import MASKED
from federation.site import CLOSE, Answer
from portal_common.tasks import Tasks
from portal_site.central import CentralClient, CentralError, ssl_context, websocket_url
from portal_site.jobs import LocalJobs, SiteError
from portal_site.settings import SiteSettings
from portal_site.store import Store

log = logging.getLogger(__name__)
REPLACED = 4000
DISABLED = 4003
UNREADABLE = 1003
CONNECTION = "connection"
"""The broker topic of the connection's status (each message is the new status)."""


class Worker:
    """Connection state: ``signed out``, ``connecting``, ``connected`` or ``reconnecting``."""

    def __init__(self, *, settings: SiteSettings, store: Store, jobs: LocalJobs) -> None:
        self._settings = settings
        self._store = store
        self.jobs = jobs
        self.status = "signed out"
        self.detail = "enter central's URL and your site_id, then sign in"
        self.since = time.time()
        self._socket: ClientConnection | None = None
        self._access = ""
        self._access_until = 0.0
        self._wake = asyncio.Event()
        self._pause = 1.0
        """The pause before starting afresh after a refusal; doubles up to the maximum."""
        self._session: asyncio.Future[None] | None = None
        """The running attempt to stay connected (:meth:`_connections`)."""
        self._tasks = Tasks(on_failure=self._task_failed)
        self.sent = {"messages": 0, "bytes": 0}
        self._lanes: dict[str, Lane] = {}
        """Per job, the thread that answers its requests (one at a time, as its runner does)."""
        self._client: CentralClient | None = None
        self._client_for: tuple[str, str] = ("", "")
        jobs.send = self.send_control
        jobs.fetch_json = self._get_json
        jobs.fetch_text = self._get_text

    # ------------------------------------------------------------ sign-in

    def client(self) -> CentralClient:
        """The portal's one HTTPS client to central, its connection kept alive between calls
        (a Start asks central at once, without a new TLS handshake); a new one when the URL or
        CA file changed."""
        config = self._store.config()
        if not config.central_url:
            raise CentralError("set central's URL in Settings first", status=400)
        wanted = (config.central_url, config.ca_file)
        if self._client is None or self._client_for != wanted:
            client = CentralClient(url=config.central_url, ca_file=config.ca_file)
            if self._client is not None:
                self._tasks.spawn(self._client.close(), what="closing the old client")
            self._client, self._client_for = client, wanted
        return self._client

    async def sign_in(self, username: str, password: str) -> None:
        """Exchange the password for tokens (the password is not kept), then connect."""
        config = self._store.config()
        if not config.site_id:
            raise CentralError("set this site's site_id in Settings first", status=400)
        client = self.client()
        pair = await client.sign_in(username, password)
        me = await client.get_json("/api/me", pair.access_token)
        if me.get("site_id") != config.site_id:
            raise CentralError(
                f"the account '{username}' belongs to site '{me.get('site_id')}', "
                f"not to '{config.site_id}': check the site_id in Settings",
                status=400,
            )
        self._store.update_config(username=username, refresh_token=pair.refresh_token)
        self._access, self._access_until = pair.access_token, time.time() + pair.expires_in - 30
        self.wake()

    async def sign_out(self) -> None:
        config = self._store.config()
        if config.refresh_token:
            with contextlib.suppress(CentralError):
                await self.client().revoke(config.refresh_token)
        self._store.update_config(refresh_token="")
        self._access = ""
        self.jobs.drop_all()
        if self._socket is not None:
            await self._socket.close()
        self._set("signed out", "signed out")
        self.wake()

    def settings_changed(self) -> None:
        """Central URL, site_id or CA file changed: the old tokens are void."""
        self._store.update_config(refresh_token="")
        self._access = ""
        self.wake()
        if self._socket is not None:
            self._tasks.spawn(self._socket.close(), what="closing the connection")

    async def access_token(self) -> str:
        if self._access and time.time() < self._access_until:
            return self._access
        config = self._store.config()
        if not config.refresh_token:
            raise CentralError("not signed in", status=401)
        pair = await self.client().refresh(config.refresh_token)
        self._store.update_config(refresh_token=pair.refresh_token)
        self._access, self._access_until = pair.access_token, time.time() + pair.expires_in - 30
        return self._access

    async def _get_json(self, path: str) -> Any:
        return await self.client().get_json(path, await self.access_token())

    async def _get_text(self, path: str) -> str:
        return await self.client().get_text(path, await self.access_token())

    # ------------------------------------------------------------ the connection

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Keep one connection to central open for as long as the portal runs.

        websockets' reconnecting iterator keeps it (:meth:`_connections`); this loop starts it
        afresh when the user signs in or out or changes the settings, and decides what a
        refusal means: a revoked or disabled site is signed out (the user must sign in again),
        an expired access token is renewed, and any other refusal, or a message from central
        this site cannot read, is retried after a pause that doubles up to
        FIP_SITE_RECONNECT_MAX_SECONDS (back to 1 s once central said Welcome)."""
        while True:
            self._wake.clear()
            config = self._store.config()
            if not (config.central_url and config.site_id and config.refresh_token):
                if self.status != "signed out":
                    self._set("signed out", "sign in on the Settings page")
                await self._sleep(None)
                continue
            self._set(
                "connecting" if self.status != "reconnecting" else "reconnecting",
                config.central_url,
            )
            session = asyncio.ensure_future(self._connections(config.central_url, config.ca_file))
            self._session = session
            if not await self._unless_woken(session):
                continue  # the user signed in or out, or changed the settings: start afresh
            try:
                session.result()
                continue  # ended for the same reasons, while connected
            except CentralError as error:
                if error.status in (401, 403):
                    self._store.update_config(refresh_token="")
                    self._access = ""
                    self._set("signed out", str(error))
                    continue
                self._set("reconnecting", str(error))
            except InvalidStatus as error:
                status = error.response.status_code
                reason = _body(error)
                if status in (401, 403):
                    self._access = ""
                    self._set("reconnecting", f"central refused the connection: {reason}")
                    if "revoked" in reason or "not a site" in reason or "disabled" in reason:
                        self._store.update_config(refresh_token="")
                        self._set("signed out", f"central refused the connection: {reason}")
                        continue
                else:
                    self._set("reconnecting", f"central answered {status}: {reason}")
            except ConnectionClosed as error:
                code = error.rcvd.code if error.rcvd else None
                if code == DISABLED:
                    self._store.update_config(refresh_token="")
                    self._set("signed out", "central disabled this site")
                    self.jobs.drop_all()
                    continue
                reason = "another connection of this site took over" if code == REPLACED else "lost"
                self._set("reconnecting", _unreadable(error) or f"connection {reason}")
            except ProtocolError as error:  # closed by _serve; central may be a newer version
                self._set("reconnecting", f"central sent a message this site cannot read: {error}")
            except (OSError, TimeoutError, WebSocketException) as error:
                self._set("reconnecting", f"central cannot be reached: {error}")
            await self._sleep(self._pause)
            self._pause = min(self._pause * 2, self._settings.reconnect_max_seconds)

    async def _unless_woken(self, session: asyncio.Future[None]) -> bool:
        """Wait for ``session`` to end; False if the user's action (sign-in, sign-out, new
        settings) woke the worker first while it was not connected: the session is cancelled,
        so that it does not go on trying with what the user just replaced."""
        while not session.done():
            woken: asyncio.Future[Any] = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait((session, woken), return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:  # the portal stops: the connection goes with it
                session.cancel()
                raise
            finally:
                woken.cancel()
            if self._wake.is_set() and not session.done():
                self._wake.clear()
                if self.status != "connected":
                    session.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await session
                    return False
        return True

    async def _connections(self, central_url: str, ca_file: str) -> None:
        """One connection to central at a time, from websockets' reconnecting iterator: after
        a dropped connection or a failure that may pass (central unreachable, a 5xx) it
        connects again, pausing as :meth:`_delays` says. A refusal (401, 403, any other
        status), or a close central chose (a disabled or replaced site, a fault), ends it with
        its exception for :meth:`run`; so does a change of the user's, quietly."""
        url = websocket_url(central_url)
        headers = {"Authorization": f"Bearer {await self.access_token()}"}
        connector = connect(
            url,
            additional_headers=headers,
            ssl=ssl_context(ca_file) if url.startswith("wss://") else None,
            compression=None,  # per-message deflate costs ~15x on float64 frames
            max_size=MAX_FRAME_BYTES,
            open_timeout=10,
            process_exception=self._retry_or_raise,
            reconnect_delays=self._delays,
        )
        # Closed on the way out (an error, a return, a cancel): its connection goes at once.
        sockets = cast(AsyncGenerator[ClientConnection, None], aiter(connector))
        async with contextlib.aclosing(sockets):
            async for socket in sockets:
                try:
                    await self._serve(socket, central_url)
                except ConnectionClosed as error:
                    if error.rcvd is not None and _unreadable(error) is None:
                        raise  # central closed it on purpose: run() says why
                    self._set("reconnecting", _unreadable(error) or "connection lost")
                else:
                    self._set("reconnecting", "the connection closed")
                config = self._store.config()
                if (config.central_url, config.ca_file) != (central_url, ca_file) or not (
                    config.refresh_token
                ):
                    return
                # Read by the next handshake: a token that expired meanwhile is renewed.
                headers["Authorization"] = f"Bearer {await self.access_token()}"

    def _retry_or_raise(self, error: Exception) -> Exception | None:
        """websockets' ``process_exception``: None (connect again after a pause) for what may
        pass (its own rule: network errors, 500, 502, 503, 504), the error for the rest."""
        if process_exception(error) is not None:
            return error
        if isinstance(error, InvalidStatus):
            status = error.response.status_code
            self._set("reconnecting", f"central answered {status}: {_body(error)}")
        else:
            self._set("reconnecting", f"central cannot be reached: {error}")
        return None

    def _delays(self) -> Generator[float, None, None]:
        """The pauses between attempts to reconnect: 1 s, doubling up to
        FIP_SITE_RECONNECT_MAX_SECONDS (websockets' own would wait up to 90 s)."""
        pause = 1.0
        while True:
            yield pause
            pause = min(pause * 2, self._settings.reconnect_max_seconds)

    async def _serve(self, socket: ClientConnection, central_url: str) -> None:
        """Answer central on one connection until it closes."""
        self._socket = socket
        self._set("connected", central_url)
        beat = self._tasks.spawn(self._heartbeat(socket), what="sending the heartbeat")
        try:
            async for message in socket:
                if isinstance(message, bytes):
                    self._tasks.spawn(self._answer(socket, message), what="answering central")
                else:
                    try:
                        control = decode_control(message)
                    except ProtocolError as error:
                        # Not answered on this connection: close it (1003, data it cannot
                        # accept) and let run() connect again after its pause.
                        log.warning("central sent a malformed control message: %s", error)
                        await socket.close(UNREADABLE, "malformed control message")
                        raise
                    await self.jobs.on_control(control)
                    if isinstance(control, Welcome):
                        # Central spoke sense: a later failure pauses from 1 s again (one
                        # that keeps sending what this site cannot read is asked ever less).
                        self._pause = 1.0
                        await self.send_policy()
        finally:
            beat.cancel()
            self._socket = None

    async def send_control(self, message: ControlMessage) -> None:
        """Send a control message (ready, unready, cancel); the ledger lists it too."""
        socket = self._socket
        if socket is None:
            raise CentralError(f"not connected to central ({self.status}: {self.detail})")
        text = encode_control(message)
        await socket.send(text)
        self._store.record(
            job_id=str(getattr(message, "job_id", "")),
            kind=message.type,
            shapes=[],
            rows=0,
            size=len(text.encode()),
        )

    async def send_policy(self) -> None:
        """Tell central this site's disclosure policy (when connected; it changes nothing here)."""
        if self._socket is not None:
            with contextlib.suppress(ConnectionClosed, CentralError):
                await self.send_control(PolicySummary(policy=self.jobs.policy.summary()))

    async def _heartbeat(self, socket: ClientConnection) -> None:
        """Tell central the site is alive; ends quietly when the connection closed (the
        connection loop notices and reconnects), any other failure is logged."""
        while True:
            await asyncio.sleep(self._settings.heartbeat_seconds)
            try:
                await socket.send(encode_control(Heartbeat()))
            except ConnectionClosed:
                return

    async def _answer(self, socket: ClientConnection, frame: bytes) -> None:
        """Run one request on the job's runner and send the reply; note it in the ledger. The
        frame is decoded once, here; the runner answers the decoded request and says what its
        reply holds, so the ledger reads that without decoding the reply."""
        try:
            request = decode(frame)
        except ProtocolError as error:  # central hears nothing and asks again or gives up
            log.warning("central sent a malformed frame: %s", error)
            self.detail = f"central sent a request this site cannot read: {error}"[:300]
            self.jobs.broker.publish(CONNECTION, self.status)
            return
        if not isinstance(request, Request):
            return
        try:
            await self._reply(socket, request, frame)
        except Exception as error:  # logged by the worker's tasks; shown on the job here
            self._warn(request.job_id, f"answering request {request.seq} failed: {error}")
            raise

    async def _reply(self, socket: ClientConnection, request: Request, frame: bytes) -> None:
        try:
            runner = await self.jobs.answering(request.job_id)
        except SiteError as refused:  # the real reason, e.g. central could not be reached
            answer = _error(request, "refused", refused.message)
        except Exception:  # a bug here must not leave central waiting without a word
            log.exception(
                "job %s: finding what answers request %s failed", request.job_id, request.seq
            )
            answer = _error(request, "failed", "internal error at the site; see its log")
        else:
            try:
                answer = await self._lane(request.job_id).run(runner.answer, request)
            except ProtocolError as error:
                answer = _error(request, "failed", str(error))
            except Exception:  # a bug here must not leave central waiting without a word
                log.exception("job %s: answering request %s failed", request.job_id, request.seq)
                self._warn(request.job_id, "this site could not answer a request; see its log")
                answer = _error(request, "failed", "internal error at the site; see its log")
        reply = answer.frame
        try:
            await socket.send(reply)
        except ConnectionClosed:
            # Not sent, so not in the ledger: central asks again once the site is back.
            log.info(
                "job %s: reply %s not sent, the connection closed", request.job_id, request.seq
            )
            return
        self.sent["messages"] += 1
        self.sent["bytes"] += len(reply)
        self._note(request, answer)
        if request.ops[-1].name == CLOSE:  # the job's last request: its thread may go
            lane = self._lanes.pop(request.job_id, None)
            if lane is not None:
                lane.close()

    def _lane(self, job_id: str) -> Lane:
        """The job's answering thread (its runner works off the loop: never on it)."""
        lane = self._lanes.get(job_id)
        if lane is None:
            lane = self._lanes[job_id] = Lane(f"site-job-{job_id}")
        return lane

    def _warn(self, job_id: str, message: str) -> None:
        """Show a failure on the job's page at this site (when the site knows the job)."""
        job = self.jobs.owner(job_id)
        if job is not None:
            self.jobs.publish(job, JobEvent(kind="warning", message=message))

    def _note(self, request: Request, sent: Answer) -> None:
        answer = sent.message
        job = self.jobs.owner(request.job_id)
        kind = "+".join(_label(op) for op in request.ops)
        masked = any(op.name == MASKED for op in request.ops)
        if isinstance(answer, Reply):
            shapes = [_shapes(result) for result in answer.results]
            if job is not None and request.ops[-1].name == "fip.open":
                job.rows_used = int(answer.results[-1].get("rows_used", 0))
            note = (
                "masked: central can read only the sum over the sites (a fit's row count "
                "travels as declared when the job opened)"
                if masked
                else ""
            )
        else:
            shapes, note = (
                [],
                f"{answer.kind}: {answer.message}" if isinstance(answer, ErrorReply) else "",
            )
        self._store.record(
            job_id=request.job_id,
            kind=kind,
            shapes=shapes,
            rows=job.rows_used if job else 0,
            size=len(sent.frame),
            note=note,
        )

    # ------------------------------------------------------------ plumbing

    def _set(self, status: str, detail: str) -> None:
        if (status, detail) != (self.status, self.detail):
            log.info("connection: %s (%s)", status, detail)
            self.status, self.detail, self.since = status, detail, time.time()
            self.jobs.broker.publish(CONNECTION, status)

    async def _sleep(self, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    def _task_failed(self, job: Any, what: str, error: BaseException) -> None:
        """A background task failed (the tasks logged it): the connection's detail says so."""
        self.detail = f"{what} failed: {error}"[:300]
        self.jobs.broker.publish(CONNECTION, self.status)

    async def stop(self) -> None:
        if self._session is not None and not self._session.done():
            self._session.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._session
        await self._tasks.cancel_all()
        for lane in self._lanes.values():
            lane.close()
        self._lanes.clear()
        if self._socket is not None:
            await self._socket.close()
        if self._client is not None:
            await self._client.close()
            self._client = None
        self.jobs.drop_all()


def _error(request: Request, kind: ErrorKind, message: str) -> Answer:
    """An error reply of the portal's own (the runner could not be asked)."""
    error = ErrorReply(job_id=request.job_id, seq=request.seq, kind=kind, message=message)
    return Answer(encode(error), error)


def _label(op: Op) -> str:
    """An operation as the ledger names it: a masked one by what it masks."""
    return f"{op.args.get('op')} (masked)" if op.name == MASKED else op.name


def _shapes(result: dict[str, Any]) -> dict[str, list[int]]:
    """The shape of every value of a result ([] for one number). A reply holds numbers only:
    the runner sent nothing else."""
    return {key: list(np.shape(value)) for key, value in result.items()}


def _unreadable(error: ConnectionClosed) -> str | None:
    """Why this site closed the connection when central sent a frame it cannot read
    (websockets' own checks: not a WebSocket frame, text that is not UTF-8, too large), or
    None when it closed for another reason."""
    sent = error.sent
    if sent is None or sent.code not in (
        CloseCode.PROTOCOL_ERROR,
        CloseCode.INVALID_DATA,
        CloseCode.MESSAGE_TOO_BIG,
    ):
        return None
    cause = sent.reason or CLOSE_CODE_EXPLANATIONS.get(sent.code, str(sent.code))
    return f"central sent a frame this site cannot read ({cause}); connecting again"


def _body(error: InvalidStatus) -> str:
    try:
        detail = json.loads(error.response.body or b"{}").get("detail")
        return str(detail) if detail else f"HTTP {error.response.status_code}"
    except ValueError:
        return f"HTTP {error.response.status_code}"
