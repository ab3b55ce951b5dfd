"""Central's site WebSocket in process: who may connect, what one connection may say, closing.

The TestClient speaks plain ws:// (no TLS): central refuses that unless the app is built with
``allow_insecure_websocket`` and the peer is on this machine. Every receive here is bounded,
so a socket that central forgets to close fails the test instead of hanging it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from federation.job import JobEvent
from federation.policy import Policy
from federation.protocol import (
    Frame,
    Heartbeat,
    JobUpdate,
    Op,
    PolicySummary,
    Ready,
    Reply,
    Request,
    Welcome,
    decode,
    decode_control,
    encode,
    encode_control,
    message_of,
)
from federation.states import JobState
from portal_central.app import create_app
from portal_central.models import Job, User
from portal_central.security import Tokens
from portal_central.sites.notifier import PROGRESS_INTERVAL
from portal_central.state import CentralState
from tests.central_fixtures import (
    SITE_PASSWORD,
    admin_headers,
    approved_site,
    bearer,
    create_admin,
    make_settings,
    token,
)

RECEIVE_SECONDS = 5.0


@pytest.fixture
def insecure(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    """Central in process, accepting plain ws:// from this machine (development mode)."""
    settings = make_settings(tmp_path / "central", database_url, allow_insecure_websocket=True)
    with TestClient(create_app(settings)) as client:
        create_admin(client)
        yield client


def _state(client: TestClient) -> CentralState:
    state: CentralState = client.app.state.fip  # type: ignore[attr-defined]
    return state


def _connect(client: TestClient, headers: dict[str, str] | None = None) -> WebSocketTestSession:
    return client.websocket_connect("/ws/site", headers=dict(headers or {}))


def _receive_text(session: WebSocketTestSession, seconds: float = RECEIVE_SECONDS) -> str:
    """The next text frame; WebSocketDisconnect(code) if central closed; TimeoutError if nothing."""

    async def next_message() -> Any:
        with anyio.fail_after(seconds):
            return await session._send_rx.receive()

    message = session.portal.call(next_message)
    if message["type"] == "websocket.close":
        raise WebSocketDisconnect(code=message.get("code", 1000), reason=message.get("reason"))
    assert message["type"] == "websocket.send", message
    text: str = message["text"]
    return text


def _welcome(session: WebSocketTestSession) -> Welcome:
    message = decode_control(_receive_text(session))
    assert isinstance(message, Welcome), message
    return message


def _refusal(client: TestClient, headers: dict[str, str] | None = None) -> WebSocketDenialResponse:
    """Connect, expecting central to refuse the handshake with an HTTP answer."""
    with pytest.raises(WebSocketDenialResponse) as refused:
        with _connect(client, headers):
            pass  # pragma: no cover - the handshake is refused
    return refused.value


def _detail(refusal: WebSocketDenialResponse) -> str:
    detail: str = refusal.json()["detail"]
    return detail


def _site(client: TestClient, username: str = "north") -> tuple[int, str, str]:
    """An approved site: (user id, site_id, access token)."""
    user_id, site_id = approved_site(client, username)
    return user_id, site_id, token(client, username, SITE_PASSWORD)


def _issue(client: TestClient, user_id: int, *, tokens: Tokens | None = None, **claims: Any) -> str:
    """A token for a user, signed with central's key unless ``tokens`` says otherwise."""
    state = _state(client)
    with state.database.session() as session:
        user = session.get(User, user_id)
        assert user is not None
        values: dict[str, Any] = {
            "user_id": user.id,
            "role": user.role,
            "token_version": user.token_version,
            "site_id": user.site_id,
            "kind": "access",
            "lifetime_seconds": 600,
            **claims,
        }
    return (tokens or state.tokens).issue(**values)


def _job(client: TestClient, participants: list[str], name: str = "ws job") -> int:
    response = client.post(
        "/api/jobs",
        json={
            "name": name,
            "algorithm": "SIMI",
            "columns": ["a", "b", "y"],
            "participants": participants,
            "targets": [{"column": "y", "type": "gaussian"}],
            "seed": 1,
        },
        headers=admin_headers(client),
    )
    assert response.status_code == 201, response.text
    job_id: int = response.json()["id"]
    return job_id


def _wait(condition: Callable[[], bool], what: str, seconds: float = RECEIVE_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# ---------------------------------------------------------------- plain ws:// and TLS


def test_plain_ws_is_refused_by_default_even_with_a_valid_site_token(
    central: TestClient,
) -> None:
    _, _, access = _site(central)
    refusal = _refusal(central, bearer(access))
    assert refusal.status_code == 403
    assert "ws://" in _detail(refusal) and "wss://" in _detail(refusal)
    assert not _state(central).connections.online("north")
    assert _state(central).connections.count() == 0


def test_plain_ws_is_accepted_from_this_machine_when_allowed(insecure: TestClient) -> None:
    _, site_id, access = _site(insecure)
    with _connect(insecure, bearer(access)) as socket:
        welcome = _welcome(socket)
        assert welcome.site_id == site_id
        assert welcome.ready == []
        assert _state(insecure).connections.online(site_id)
    _wait(lambda: not _state(insecure).connections.online(site_id), "the site to go offline")
    assert _state(insecure).connections.last_seen(site_id) is not None


def test_allowing_plain_ws_is_for_this_machine_only(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path / "central", database_url, allow_insecure_websocket=True)
    with TestClient(create_app(settings), client=("203.0.113.7", 50000)) as remote:
        create_admin(remote)
        _, site_id, access = _site(remote)
        refusal = _refusal(remote, bearer(access))
        assert refusal.status_code == 403
        assert "wss://" in _detail(refusal)
        assert not _state(remote).connections.online(site_id)


# ---------------------------------------------------------------- who may connect


def test_a_connection_without_a_token_is_refused(insecure: TestClient) -> None:
    refusal = _refusal(insecure)
    assert refusal.status_code == 401
    assert "token" in _detail(refusal)


def test_a_token_in_the_url_is_not_accepted(insecure: TestClient) -> None:
    _, _, access = _site(insecure)
    with pytest.raises(WebSocketDenialResponse) as refused:
        with insecure.websocket_connect(f"/ws/site?token={access}&access_token={access}"):
            pass  # pragma: no cover
    assert refused.value.status_code == 401


@pytest.mark.parametrize("case", ["expired", "wrong key", "refresh token", "garbage", "not bearer"])
def test_an_invalid_token_is_refused_with_401(insecure: TestClient, case: str) -> None:
    user_id, _, access = _site(insecure)
    headers = {
        "expired": lambda: bearer(_issue(insecure, user_id, lifetime_seconds=-10)),
        "wrong key": lambda: bearer(_issue(insecure, user_id, tokens=Tokens(b"k" * 32))),
        "refresh token": lambda: bearer(_issue(insecure, user_id, kind="refresh")),
        "garbage": lambda: bearer("not.a.token"),
        "not bearer": lambda: {"Authorization": f"Basic {access}"},
    }[case]()
    refusal = _refusal(insecure, headers)
    assert refusal.status_code == 401, refusal.text
    assert "token" in _detail(refusal)
    assert _state(insecure).connections.count() == 0


def test_an_admin_token_is_refused_as_not_a_site(insecure: TestClient) -> None:
    refusal = _refusal(insecure, admin_headers(insecure))
    assert refusal.status_code == 403
    assert "not a site" in _detail(refusal)


def test_a_disabled_sites_token_is_refused(insecure: TestClient) -> None:
    user_id, site_id, access = _site(insecure)
    disabled = insecure.post(f"/api/users/{user_id}/disable", headers=admin_headers(insecure))
    assert disabled.status_code == 200, disabled.text
    refusal = _refusal(insecure, bearer(access))
    assert refusal.status_code in (401, 403)
    assert site_id in _detail(refusal) and "disabled" in _detail(refusal)
    assert not _state(insecure).connections.online(site_id)


def test_the_connection_is_bound_to_the_tokens_site(insecure: TestClient) -> None:
    _, north, north_access = _site(insecure, "north")
    _, south, south_access = _site(insecure, "south")
    with _connect(insecure, bearer(south_access)) as socket:
        assert _welcome(socket).site_id == south
        assert _state(insecure).connections.online(south)
        assert not _state(insecure).connections.online(north)
    with _connect(insecure, bearer(north_access)) as socket:
        assert _welcome(socket).site_id == north


# ---------------------------------------------------------------- one connection per site


def test_a_second_connection_of_a_site_replaces_the_first(insecure: TestClient) -> None:
    _, site_id, access = _site(insecure)
    connections = _state(insecure).connections
    job_id = _job(insecure, [site_id])
    with ExitStack() as later:
        with _connect(insecure, bearer(access)) as first:
            _welcome(first)
            second = later.enter_context(_connect(insecure, bearer(access)))
            assert _welcome(second).site_id == site_id
            with pytest.raises(WebSocketDisconnect) as closed:
                _receive_text(first)
            assert closed.value.code == 4000
        # The first socket's handler has ended; the site is still online through the second.
        assert connections.online(site_id)
        assert connections.count() == 1
        second.send_text(encode_control(Ready(job_id=str(job_id))))
        store = _state(insecure).store
        _wait(lambda: site_id in store.view(job_id).ready, "the second connection's Ready")
    _wait(lambda: not connections.online(site_id), "the site to go offline")


# ---------------------------------------------------------------- what a site may say


@pytest.mark.parametrize(
    "frame",
    ["not json at all", '{"type": "launch", "job_id": "1"}', '{"type": "ready"}', b"junk"],
    ids=["text junk", "unknown type", "ready without job", "binary junk"],
)
def test_a_malformed_frame_closes_the_socket_with_1003(
    insecure: TestClient, frame: str | bytes
) -> None:
    _, site_id, access = _site(insecure)
    with _connect(insecure, bearer(access)) as socket:
        _welcome(socket)
        if isinstance(frame, bytes):
            socket.send_bytes(frame)
        else:
            socket.send_text(frame)
        with pytest.raises(WebSocketDisconnect) as closed:
            _receive_text(socket)
        assert closed.value.code == 1003
    assert not _state(insecure).connections.online(site_id)
    # Central keeps serving: the same site can connect again.
    with _connect(insecure, bearer(access)) as socket:
        assert _welcome(socket).site_id == site_id


def test_ready_counts_only_for_a_job_the_site_is_part_of(insecure: TestClient) -> None:
    _, north, access = _site(insecure, "north")
    _, south = approved_site(insecure, "south")
    theirs = _job(insecure, [south], name="south only")
    ours = _job(insecure, [north], name="north's")
    store = _state(insecure).store
    with _connect(insecure, bearer(access)) as socket:
        _welcome(socket)
        for job_id in (str(theirs), "999999", "not-a-number"):
            socket.send_text(encode_control(Ready(job_id=job_id)))
        socket.send_text(encode_control(Ready(job_id=str(ours))))
        # Frames are handled in order: once the last one counted, the others were seen.
        _wait(lambda: north in store.view(ours).ready, "the participant's Ready")
        assert store.view(ours).ready == {north}
        assert theirs not in store, "nothing is held for a job the site is not in"
        # The job waits for central's data; the site is listed as ready on the job.
        job = insecure.get(f"/api/jobs/{ours}", headers=admin_headers(insecure)).json()
        assert job["state"] == "created"
    # A reconnecting site is told which jobs central still holds it ready for.
    with _connect(insecure, bearer(access)) as socket:
        assert _welcome(socket).ready == [str(ours)]


def test_heartbeats_update_last_seen(insecure: TestClient) -> None:
    _, site_id, access = _site(insecure)
    job_id = _job(insecure, [site_id])
    connections = _state(insecure).connections
    store = _state(insecure).store
    with _connect(insecure, bearer(access)) as socket:
        _welcome(socket)
        first = connections.last_seen(site_id)
        assert first is not None
        time.sleep(0.05)
        socket.send_text(encode_control(Heartbeat()))
        socket.send_text(encode_control(Ready(job_id=str(job_id))))
        _wait(lambda: site_id in store.view(job_id).ready, "the Ready after the heartbeat")
        later = connections.last_seen(site_id)
        assert later is not None and later > first


def test_a_sites_policy_shows_on_the_job_page_before_start(insecure: TestClient) -> None:
    """The site says its policy; the admin sees who would refuse the job and why."""
    _, site_id, access = _site(insecure)
    job_id = _job(insecure, [site_id])
    connections = _state(insecure).connections
    policy = Policy(min_sites=3, denied_columns=("b",))
    with _connect(insecure, bearer(access)) as socket:
        _welcome(socket)
        socket.send_text(encode_control(PolicySummary(policy=policy.summary())))
        _wait(lambda: site_id in connections.policies, "the policy")
        page = insecure.get(f"/jobs/{job_id}", cookies=None, headers=admin_headers(insecure))

    assert connections.policies[site_id] == policy
    assert page.status_code == 200, page.text
    found = BeautifulSoup(page.text, "html.parser").select_one("td.site-policy")
    assert found is not None
    cell = " ".join(found.stripped_strings)
    assert (
        "would refuse: the job has 2 participant(s), fewer than this site's min_sites of 3" in cell
    )
    assert "would refuse: the job uses column(s) this site does not allow: 'b'" in cell
    assert "needs at least 10 usable rows per target" in cell


def test_a_reply_from_a_site_that_was_not_asked_is_not_taken(insecure: TestClient) -> None:
    """South answers the request central sent to north: central waits for north's own."""
    _, north_id, north_access = _site(insecure, "north")
    _, south_id, south_access = _site(insecure, "south")
    job_id = str(_job(insecure, [north_id]))
    connections = _state(insecure).connections
    with (
        _connect(insecure, bearer(north_access)) as north,
        _connect(insecure, bearer(south_access)) as south,
    ):
        _welcome(north)
        _welcome(south)
        frame = encode(Request(job_id=job_id, seq=0, ops=[Op(name="gaussian_stats")]))
        answer = north.portal.start_task_soon(connections.exchange, north_id, frame)
        assert north.receive_bytes() == frame

        south.send_bytes(encode(Reply(job_id=job_id, seq=0, results=[{"n": 10**6}])))
        time.sleep(0.3)
        assert not answer.done(), "central took a reply from a site it did not ask"

        north.send_bytes(encode(Reply(job_id=job_id, seq=0, results=[{"n": 12}])))
        reply = decode(answer.result(timeout=RECEIVE_SECONDS))

    assert isinstance(reply, Reply) and reply.results == [{"n": 12}]


def test_an_exchange_whose_socket_is_replaced_sends_again_on_the_new_one(
    insecure: TestClient,
) -> None:
    """An exchange waits on its reply alone, no task of its own watching the socket: when the
    site's connection is replaced before it answers, the closing wakes the exchange, which
    sends the same request on the new connection and returns the reply that comes there."""
    _, north_id, north_access = _site(insecure, "north")
    job_id = str(_job(insecure, [north_id]))
    connections = _state(insecure).connections
    frame = encode(Request(job_id=job_id, seq=0, ops=[Op(name="gaussian_stats")]))
    with ExitStack() as later:
        with _connect(insecure, bearer(north_access)) as first:
            _welcome(first)
            answer = first.portal.start_task_soon(connections.exchange, north_id, frame)
            assert first.receive_bytes() == frame
            second = later.enter_context(_connect(insecure, bearer(north_access)))
            _welcome(second)
            assert second.receive_bytes() == frame  # the same request, on the new socket
            assert not answer.done()
        second.send_bytes(encode(Reply(job_id=job_id, seq=0, results=[{"n": 12}])))
        reply = decode(answer.result(timeout=RECEIVE_SECONDS))
        link = connections.link(north_id)
        assert link is not None and not link.waiting  # nothing left waiting on the socket
    assert isinstance(reply, Reply) and reply.results == [{"n": 12}]


def test_central_decodes_a_reply_once_and_its_own_request_not_at_all(
    insecure: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime hands the connection its request with the message in it, and the reply
    decoded on arrival (to find who waits for it) reaches the runtime with its message: one
    decode a round trip at central, where there were three."""
    _, north_id, north_access = _site(insecure, "north")
    job_id = str(_job(insecure, [north_id]))
    connections = _state(insecure).connections
    decoded = []

    def counting(frame: bytes) -> Any:
        decoded.append(len(frame))
        return decode(frame)

    monkeypatch.setattr("portal_central.sites.connections.decode", counting)
    monkeypatch.setattr("federation.protocol.decode", counting)
    with _connect(insecure, bearer(north_access)) as north:
        _welcome(north)
        request = Request(job_id=job_id, seq=0, ops=[Op(name="gaussian_stats")])
        frame = encode(request)
        answer = north.portal.start_task_soon(
            connections.exchange, north_id, Frame.of(frame, request)
        )
        assert north.receive_bytes() == frame
        assert decoded == []

        sent = encode(Reply(job_id=job_id, seq=0, results=[{"n": 12}]))
        north.send_bytes(sent)
        arrived = answer.result(timeout=RECEIVE_SECONDS)
        reply = message_of(arrived)

    assert decoded == [len(sent)] and arrived == sent
    assert isinstance(reply, Reply) and reply.results == [{"n": 12}]


def test_a_policy_central_cannot_read_is_not_kept(insecure: TestClient) -> None:
    _, site_id, access = _site(insecure)
    connections = _state(insecure).connections
    with _connect(insecure, bearer(access)) as socket:
        _welcome(socket)
        socket.send_text(encode_control(PolicySummary(policy={"min_rows": -4})))
        socket.send_text(encode_control(Heartbeat()))
        time.sleep(0.2)

    assert site_id not in connections.policies


# ---------------------------------------------------------------- central closes


def test_disabling_a_connected_site_closes_its_socket_with_4003(insecure: TestClient) -> None:
    user_id, site_id, access = _site(insecure)
    connections = _state(insecure).connections
    with _connect(insecure, bearer(access)) as socket:
        _welcome(socket)
        assert connections.online(site_id)
        disabled = insecure.post(f"/api/users/{user_id}/disable", headers=admin_headers(insecure))
        assert disabled.status_code == 200, disabled.text
        with pytest.raises(WebSocketDisconnect) as closed:
            _receive_text(socket)
        assert closed.value.code == 4003
        assert not connections.online(site_id)
    # And it cannot come back with the token it had.
    assert _refusal(insecure, bearer(access)).status_code in (401, 403)


def test_deleting_a_connected_sites_account_closes_its_socket_for_good(
    insecure: TestClient,
) -> None:
    user_id, site_id, access = _site(insecure)
    connections = _state(insecure).connections
    with _connect(insecure, bearer(access)) as socket:
        _welcome(socket)
        assert connections.online(site_id)
        deleted = insecure.delete(f"/api/users/{user_id}", headers=admin_headers(insecure))
        assert deleted.status_code == 200, deleted.text
        with pytest.raises(WebSocketDisconnect) as closed:
            _receive_text(socket)
        assert closed.value.code == 4003
        assert "deleted" in str(closed.value.reason)
        assert not connections.online(site_id)
    assert _refusal(insecure, bearer(access)).status_code in (401, 403)


def test_progress_reaches_a_site_a_few_times_a_second_and_the_last_always(
    insecure: TestClient,
) -> None:
    """A burst of progress events (one per fit of a job) is pushed to the site at most every
    PROGRESS_INTERVAL seconds, without a database read each; the latest progress always
    arrives."""
    _, north, access = _site(insecure, "north")
    job_id = _job(insecure, [north])
    state = _state(insecure)
    state.store.open(job_id)  # progress is kept for a job central runs
    with _connect(insecure, bearer(access)) as socket:
        _welcome(socket)
        started = time.monotonic()
        for k in range(1, 201):
            state.broker.publish(
                job_id, JobEvent(kind="progress", message=f"fit {k}", fraction=k / 200)
            )
        updates: list[JobUpdate] = []
        while not updates or updates[-1].progress != 1.0:
            message = decode_control(_receive_text(socket))
            if isinstance(message, JobUpdate):
                updates.append(message)
        elapsed = time.monotonic() - started
        assert updates[-1].step == "fit 200" and updates[-1].job_id == str(job_id)
        assert updates[-1].state == "created"
        assert len(updates) <= 2 + elapsed / PROGRESS_INTERVAL, (len(updates), elapsed)


def test_a_state_read_before_a_newer_one_never_puts_the_older_state_back(
    insecure: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two state changes close together (waiting, then running, as a job starts): the read
    for the first may finish after the read for the second. The site must end on the newer
    state, and so must the progress pushed after it (its page said "waiting" through a run)."""
    _, north, access = _site(insecure, "north")
    job_id = _job(insecure, [north])
    state = _state(insecure)
    state.store.open(job_id)
    read = state.notifier._read
    first_read_done, second_read_done = threading.Event(), threading.Event()
    reads: list[str] = []

    def reading_in_turn(job: int) -> Any:
        found = read(job)
        reads.append(found[1] if found else "")
        if len(reads) == 1:
            first_read_done.set()  # the first read lands after the second, if the second may run
            second_read_done.wait(timeout=0.1)
        else:
            second_read_done.set()
        return found

    monkeypatch.setattr(state.notifier, "_read", reading_in_turn)
    with _connect(insecure, bearer(access)) as socket:
        _welcome(socket)
        state.broker.publish(job_id, "state")  # read as "created"
        assert first_read_done.wait(timeout=10)
        with state.database.session() as session:
            job = session.get(Job, job_id)
            assert job is not None
            job.state = JobState.WAITING
        state.broker.publish(job_id, "state")  # read as "waiting"
        state.broker.publish(job_id, JobEvent(kind="progress", message="fit 1", fraction=0.5))
        updates: list[JobUpdate] = []
        while len(updates) < 3:  # two states and the progress
            message = decode_control(_receive_text(socket))
            if isinstance(message, JobUpdate):
                updates.append(message)

    assert [u.state for u in updates] == ["created", "waiting", "waiting"]
    assert reads == ["created", "waiting"]  # the progress reused the last read


@pytest.mark.slow  # central closes the started job when the site leaves: ~5 s
def test_a_site_is_told_when_its_job_starts_running(insecure: TestClient) -> None:
    """The move to running reaches the site at once (its page shows it), not only with the
    job's end: central's data in and the site Ready start the job."""
    _, site_id, access = _site(insecure)
    job_id = _job(insecure, [site_id])
    store = _state(insecure).store
    with _connect(insecure, bearer(access)) as socket:
        _welcome(socket)
        socket.send_text(encode_control(Ready(job_id=str(job_id))))
        _wait(lambda: site_id in store.view(job_id).ready, "the site to be ready")
        uploaded = insecure.post(
            f"/api/jobs/{job_id}/data",
            files={"file": ("central.csv", b"a,b,y\n1,2,3\n2,1,\n3,5,4\n4,3,6\n5,4,\n")},
            headers=admin_headers(insecure),
        )
        assert uploaded.status_code == 200, uploaded.text
        states: list[str] = []

        async def next_message() -> Any:
            with anyio.fail_after(RECEIVE_SECONDS):
                return await socket._send_rx.receive()

        while "running" not in states:  # the job's own requests to the site come meanwhile
            message = socket.portal.call(next_message)
            assert message["type"] == "websocket.send", message
            if "text" in message and isinstance(
                update := decode_control(message["text"]), JobUpdate
            ):
                states.append(update.state)
        assert states[-1] == "running" and "completed" not in states
