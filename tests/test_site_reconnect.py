"""The site's connection to central, kept by websockets' reconnecting iterator.

Central here is a real WebSocket server over TLS on loopback (websockets' own, with a trustme
certificate) that says Welcome as central does, or refuses the site as central does.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path

import pytest
import trustme
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from federation.protocol import Welcome, encode_control
from portal_site.jobs import LocalJobs
from portal_site.settings import SiteSettings
from portal_site.store import Store
from portal_site.worker import CONNECTION, Worker

Handler = Callable[[ServerConnection], Awaitable[None]]
Refusal = Callable[[ServerConnection, Request], Response | None]


class CountingWorker(Worker):
    """The worker, counting how often its connection loop started websockets' iterator."""

    sessions = 0
    pauses: list[float | None]

    async def _connections(self, central_url: str, ca_file: str) -> None:
        self.sessions += 1
        await super()._connections(central_url, ca_file)

    async def _sleep(self, seconds: float | None) -> None:
        self.pauses = [*getattr(self, "pauses", []), seconds]  # then really waits
        await super()._sleep(seconds)


def _run_site(
    tmp_path: Path,
    central: Handler,
    done: Callable[[CountingWorker], bool],
    *,
    refuse: Refusal | None = None,
    reconnect_max_seconds: float = 1,
) -> tuple[CountingWorker, Store, list[tuple[str, str]]]:
    """Run the site's worker against ``central`` until ``done`` (at most 10 s); the worker,
    its store and every (status, detail) it showed."""
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    store = Store(f"sqlite:///{tmp_path / 'site.db'}")
    worker = CountingWorker(
        settings=SiteSettings(
            data_dir=tmp_path, heartbeat_seconds=30, reconnect_max_seconds=reconnect_max_seconds
        ),
        store=store,
        jobs=LocalJobs(approved=store.approved),
    )
    seen: list[tuple[str, str]] = []
    worker.jobs.broker.listen(
        lambda topic, _: (
            seen.append((worker.status, worker.detail)) if topic == CONNECTION else None
        )
    )

    async def scenario() -> None:
        async with serve(
            central, "127.0.0.1", 0, ssl=server_tls, compression=None, process_request=refuse
        ) as server:
            port = server.sockets[0].getsockname()[1]
            store.update_config(
                central_url=f"https://127.0.0.1:{port}",
                site_id="north1",
                refresh_token="a refresh token",
                ca_file=str(ca_file),
            )
            # Signed in already: its access token is cached (central's HTTPS API is not here).
            worker._access, worker._access_until = "an access token", time.time() + 600
            running = asyncio.create_task(worker.run())
            try:
                deadline = time.monotonic() + 10
                while not done(worker) and time.monotonic() < deadline and not running.done():
                    await asyncio.sleep(0.01)
                if running.done():  # run() never ends on its own: the site would go deaf
                    raise AssertionError(f"the worker's run ended: {running.exception()!r}")
            finally:
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
                await worker.stop()

    asyncio.run(scenario())
    return worker, store, seen


@pytest.mark.slow
def test_a_dropped_connection_is_made_again_by_websockets_iterator(tmp_path: Path) -> None:
    handshakes: list[Headers] = []

    async def central(socket: ServerConnection) -> None:
        assert socket.request is not None
        handshakes.append(socket.request.headers)
        await socket.send(encode_control(Welcome(site_id="north1", ready=[])))
        if len(handshakes) == 1:
            assert socket.transport is not None
            socket.transport.abort()  # dropped: no close frame, as when the network is cut
        await socket.wait_closed()

    worker, store, seen = _run_site(
        tmp_path, central, lambda w: len(handshakes) >= 2 and w.status == "connected"
    )
    store.dispose()
    assert len(handshakes) == 2, seen
    assert worker.sessions == 1, "the second connection came from the same iterator"
    assert seen.index(("reconnecting", "connection lost")) < len(seen) - 1
    assert seen[-1][0] == "connected"
    for headers in handshakes:
        assert headers["Authorization"] == "Bearer an access token"
        assert "Sec-WebSocket-Extensions" not in headers, "per-message compression stays off"


@pytest.mark.slow
def test_a_revoked_site_is_signed_out_at_the_first_refusal(tmp_path: Path) -> None:
    """Central refuses the site's token (403, revoked): the iterator does not try again, and
    the worker signs the site out, saying why, rather than knocking forever."""
    refusals: list[Request] = []
    reason = "the site 'north1' is disabled; its tokens are revoked"

    def refuse(connection: ServerConnection, request: Request) -> Response:
        refusals.append(request)
        return connection.respond(HTTPStatus.FORBIDDEN, json.dumps({"detail": reason}))

    async def central(socket: ServerConnection) -> None:
        raise AssertionError("a refused site never gets a connection")

    worker, store, seen = _run_site(
        tmp_path, central, lambda w: bool(refusals) and w.status == "signed out", refuse=refuse
    )
    try:
        assert len(refusals) == 1, seen
        assert (worker.status, worker.detail) == (
            "signed out",
            f"central refused the connection: {reason}",
        )
        assert store.config().refresh_token == "", "the revoked token is forgotten"
    finally:
        store.dispose()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not a control message", "malformed control message: Invalid JSON"),
        (
            '{"type": "job", "job_id": "1", "state": "exploded"}',
            "malformed control message: job.state: Input should be 'created'",
        ),
    ],
)
def test_a_malformed_message_from_central_is_shown_and_the_site_connects_again(
    tmp_path: Path, text: str, reason: str
) -> None:
    """Central sends a text frame that is no control message: the worker does not crash (its
    run goes on), says plainly what central sent, closes that connection and connects again
    after its pause."""
    handshakes: list[Headers] = []

    async def central(socket: ServerConnection) -> None:
        handshakes.append(socket.request.headers if socket.request else Headers())
        if len(handshakes) == 1:
            await socket.send(text)
        else:
            await socket.send(encode_control(Welcome(site_id="north1", ready=[])))
        await socket.wait_closed()

    worker, store, seen = _run_site(
        tmp_path, central, lambda w: len(handshakes) >= 2 and w.status == "connected"
    )
    store.dispose()
    assert len(handshakes) == 2, seen
    refused = [detail for status, detail in seen if status == "reconnecting"]
    assert refused and refused[0].startswith("central sent a message this site cannot read: "), seen
    assert reason in refused[0], refused
    assert seen[-1][0] == "connected"


@pytest.mark.slow
def test_a_malformed_request_from_central_is_shown_on_the_connection(tmp_path: Path) -> None:
    """A binary frame that is no request is logged and shown in the connection's detail; the
    connection stays open (central hears nothing and may ask again)."""

    async def central(socket: ServerConnection) -> None:
        await socket.send(encode_control(Welcome(site_id="north1", ready=[])))
        await socket.send(b"\x00 not a request")
        await socket.wait_closed()

    worker, store, seen = _run_site(
        tmp_path, central, lambda w: w.detail.startswith("central sent a request")
    )
    store.dispose()
    assert worker.status == "connected", seen
    assert worker.detail.startswith("central sent a request this site cannot read: "), seen


@pytest.mark.slow
@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\xff\xfe", "invalid start byte"),  # a text frame that is not UTF-8
        (
            b"x" * (2**20),
            "exceeds limit of 524288 bytes",
        ),  # larger than the site accepts (max_size below)
    ],
)
def test_a_frame_websockets_refuses_is_named_and_the_site_connects_again(
    tmp_path: Path, frame: bytes, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """websockets itself fails the connection (its ProtocolError, or a frame too large): the
    detail names the reason instead of 'connection lost', and the iterator connects again."""
    monkeypatch.setattr("portal_site.worker.MAX_FRAME_BYTES", 2**19)
    handshakes: list[int] = []

    async def central(socket: ServerConnection) -> None:
        handshakes.append(len(handshakes))
        if len(handshakes) == 1:
            await socket.send(frame, text=len(frame) < 10)
        else:
            await socket.send(encode_control(Welcome(site_id="north1", ready=[])))
        await socket.wait_closed()

    worker, store, seen = _run_site(
        tmp_path, central, lambda w: len(handshakes) >= 2 and w.status == "connected"
    )
    store.dispose()
    details = [detail for status, detail in seen if status == "reconnecting"]
    assert details and details[0].startswith("central sent a frame this site cannot read ("), seen
    assert reason in details[0], details
    assert seen[-1][0] == "connected"


@pytest.mark.slow
def test_a_central_that_keeps_sending_nonsense_is_asked_ever_less_often(tmp_path: Path) -> None:
    """Each unreadable message doubles the pause before the next connection (1 s, then 2 s);
    once central says Welcome the pause starts from 1 s again (here after central closes the
    connection on purpose, as when another connection of the site took over)."""
    handshakes: list[int] = []

    async def central(socket: ServerConnection) -> None:
        handshakes.append(len(handshakes))
        if len(handshakes) <= 2:
            await socket.send("not a control message")
        else:
            await socket.send(encode_control(Welcome(site_id="north1", ready=[])))
            if len(handshakes) == 3:
                await socket.close(4000, "replaced")
        await socket.wait_closed()

    worker, store, seen = _run_site(
        tmp_path,
        central,
        lambda w: len(handshakes) >= 4 and w.status == "connected",
        reconnect_max_seconds=8,
    )
    store.dispose()
    assert len(handshakes) == 4, seen
    assert worker.pauses == [1.0, 2.0, 1.0], seen
