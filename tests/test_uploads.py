"""Uploads never touch a disk, are refused over their limit, and are read only after sign-in.

Every upload route (central's job data through its page and API, the wizard's header reader,
a site's CSV through its page and API) is sent a CSV of several MB while the temporary folder
is watched: an audit hook records every file opened under it, and the process's open files
(/proc/self/fd) are polled. Starlette's ``request.form()`` would spool any part over 1 MiB to
an unlinked file there. Bodies over their limit get 413 naming the limit and its setting as
soon as they cross it; anonymous uploads get 401 after a small prefix of their body, sent to a
real server (uvicorn, in this process) over a real socket.
"""

from __future__ import annotations

import functools
import html
import os
import select
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from federation.data import Table, read_csv
from federation.demo import COLUMNS
from federation.outputs import dataset_csv
from portal_central.app import create_app as create_central
from portal_site.app import create_app as create_site
from tests.central_fixtures import (
    ADMIN,
    SITE_PASSWORD,
    admin_auth,
    approved_site,
    bearer,
    browser_sign_in,
    create_admin,
    htmx_headers,
    make_settings,
    token,
)
from tests.processes import free_port
from tests.site_fixtures import browser_sign_in as site_browser_sign_in
from tests.site_fixtures import site_client, site_settings

MIB = 1 << 20
TARGETS = [{"column": "bmi", "type": "gaussian"}, {"column": "smoker", "type": "logistic"}]

# ---------------------------------------------------------------- watching the temporary folder

_WATCHED: list[tuple[str, list[str]]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """Record files opened (or made by tempfile) under a watched folder; never raises."""
    if not _WATCHED or event not in ("open", "tempfile.mkstemp", "tempfile.mkdtemp"):
        return
    path = args[0] if args else None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    elif isinstance(path, os.PathLike):
        path = os.fspath(path)
    if isinstance(path, str):
        for folder, sink in _WATCHED:
            if path.startswith(folder):
                sink.append(f"{event}: {path}")


sys.addaudithook(_audit)


def _open_under(folder: str) -> set[str]:
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(folder):
            found.add(target)
    return found


@pytest.fixture
def temp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The process's temporary folder, moved to a folder of this test (tempfile and TMPDIR)."""
    folder = (tmp_path / "tmp").resolve()
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    assert tempfile.gettempdir() == str(folder)
    return folder


@contextmanager
def nothing_written_to(folder: Path) -> Iterator[None]:
    """Fail if anything is opened or created under ``folder`` while the block runs."""
    opened: list[str] = []
    held: set[str] = set()
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            held.update(_open_under(str(folder)))
            time.sleep(0.001)

    entry = (str(folder), opened)
    _WATCHED.append(entry)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        yield
    finally:
        stop.set()
        poller.join()
        _WATCHED.remove(entry)
    held.update(_open_under(str(folder)))
    assert not opened, f"files were opened in the temporary folder: {opened[:3]}"
    assert not held, f"the process held files of the temporary folder: {sorted(held)[:3]}"
    assert list(folder.rglob("*")) == [], "the temporary folder is not empty"


def test_the_watch_sees_a_spooled_upload(temp_folder: Path) -> None:
    """The watch is not blind: what Starlette's form parser does with a part over 1 MiB."""
    with pytest.raises(AssertionError, match="opened in the temporary folder"):
        with nothing_written_to(temp_folder):
            with tempfile.SpooledTemporaryFile(max_size=MIB) as spooled:
                spooled.write(b"1" * (2 * MIB))


# ---------------------------------------------------------------- data


def demo_csv(megabytes: float, *, seed: int = 3) -> bytes:
    """A CSV with the demo's columns, about ``megabytes`` MB, smoker 0/1, bmi partly missing."""
    rng = np.random.default_rng(seed)
    rows = int(megabytes * 1e6 / 25)
    values = np.column_stack(
        [
            rng.uniform(20, 90, rows).round(2),
            rng.integers(0, 2, rows),
            rng.uniform(18, 40, rows).round(2),
            rng.uniform(90, 180, rows).round(1),
            rng.uniform(3, 8, rows).round(2),
            rng.integers(0, 2, rows),
        ]
    ).astype(float)
    values[rng.random(rows) < 0.2, 2] = np.nan
    return dataset_csv(COLUMNS, values)


BIG = demo_csv(5)


SMALL_BLOCK = 256 << 10
"""The stream's block size in the tests of the streaming readers (2 MiB in use): their claims
hold for any block size, and a file of more than four blocks is then 1.5 MB, not 12 MB. The
uploads above stream 5 MB files in blocks of the size in use."""


@functools.cache
def _large() -> tuple[bytes, Table]:
    """A CSV of about 1.5 MB (more than four blocks of SMALL_BLOCK) and read_csv's table of
    it, made once, before any test makes the blocks small: read as one block of the size in
    use, an independent reference for the small blocks' parse."""
    content = demo_csv(1.5)
    return content, read_csv(content, label="big.csv")


def _central_job(client: TestClient, participants: list[str]) -> int:
    """SIMICE with the sites; IMICE on central's data alone (a pooled job needs a site)."""
    body = {
        "name": "upload test",
        "algorithm": "SIMICE" if participants else "IMICE",
        "columns": list(COLUMNS),
        "targets": TARGETS,
        "imputations": 2,
        "participants": participants,
        "seed": 1,
    }
    response = client.post("/api/jobs", json=body, headers=admin_auth(client))
    assert response.status_code == 201, response.text
    job_id: int = response.json()["id"]
    return job_id


def _job(client: TestClient, job_id: int) -> dict[str, Any]:
    response = client.get(f"/api/jobs/{job_id}", headers=admin_auth(client))
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


@pytest.fixture
def waiting_job(central: TestClient) -> int:
    """A job with one remote site that never connects: central's data waits, nothing runs."""
    _, site_id = approved_site(central, "north")
    return _central_job(central, [site_id])


# ---------------------------------------------------------------- central: no temporary file


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_central_data_through_the_api_stays_in_memory(
    central: TestClient, waiting_job: int, temp_folder: Path
) -> None:
    with nothing_written_to(temp_folder):
        response = central.post(
            f"/api/jobs/{waiting_job}/data",
            files={"file": ("central.csv", BIG, "text/csv")},
            headers=admin_auth(central),
        )
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "waiting"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_central_data_through_the_page_stays_in_memory(
    central: TestClient, waiting_job: int, temp_folder: Path
) -> None:
    """A plain form post (no htmx): the CSRF field first, then the file, as browsers send it."""
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    with nothing_written_to(temp_folder):
        response = central.post(
            f"/jobs/{waiting_job}/data",
            data={"csrf_token": csrf},
            files={"file": ("central.csv", BIG, "text/csv")},
            follow_redirects=False,
        )
    assert response.status_code == 303, response.text
    assert _job(central, waiting_job)["state"] == "waiting"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_wizard_reads_a_large_header_file_in_memory(
    central: TestClient, temp_folder: Path
) -> None:
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    with nothing_written_to(temp_folder):
        response = central.post(
            "/jobs/new/columns",
            data={"algorithm": "SIMICE"},
            files={"header_file": ("central.csv", BIG, "text/csv")},
            headers=htmx_headers(csrf),
        )
    assert response.status_code == 200, response.text
    assert all(name in response.text for name in COLUMNS)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_page_form_with_its_file_before_the_csrf_token_is_refused_unread(
    central: TestClient, waiting_job: int
) -> None:
    """The token must come before any file, so that no file is read before it is checked."""
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="c.csv"\r\n\r\n'
    ).encode() + BIG[:1000]
    body += (
        f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'.encode()
    )
    body += f"{csrf}\r\n--{boundary}--\r\n".encode()
    response = central.post(
        f"/jobs/{waiting_job}/data",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 403
    assert _job(central, waiting_job)["state"] == "created"


# ---------------------------------------------------------------- central: checked at upload


def _bad(column: str, value: float) -> bytes:
    rng = np.random.default_rng(8)
    rows = 60
    values = np.column_stack(
        [
            rng.uniform(20, 90, rows).round(2),
            rng.integers(0, 2, rows),
            rng.uniform(18, 40, rows).round(2),
            rng.uniform(90, 180, rows).round(1),
            rng.uniform(3, 8, rows).round(2),
            rng.integers(0, 2, rows),
        ]
    ).astype(float)
    index = COLUMNS.index(column)
    if np.isnan(value):
        values[:, index] = np.nan
    else:
        values[[4, 9], index] = value
    return dataset_csv(COLUMNS, values)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("content", "column", "words", "alone"),
    [
        (
            _bad("smoker", 0.123456),
            "smoker",
            ["binary target", "0 or 1", "2 cell(s)", "line(s) 6, 11"],
            False,
        ),
        (_bad("bmi", np.nan), "bmi", ["every cell is missing", "no site takes part"], True),
        (_bad("smoker", np.nan), "smoker", ["every cell is missing"], True),
    ],
    ids=["non-binary", "all-missing-gaussian-alone", "all-missing-logistic-alone"],
)
def test_central_upload_is_checked_like_a_sites(
    central: TestClient, content: bytes, column: str, words: list[str], alone: bool
) -> None:
    """Refused at upload, through the API and the page, naming file and column and no value;
    the job stays as it was, and a good file is then taken."""
    waiting_job = _central_job(central, [] if alone else [approved_site(central, "north")[1]])
    response = central.post(
        f"/api/jobs/{waiting_job}/data",
        files={"file": ("ours.csv", content, "text/csv")},
        headers=admin_auth(central),
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert response.json()["field"] == "file"
    assert "ours.csv" in detail and f"'{column}'" in detail, detail
    for word in words:
        assert word in detail, detail
    assert "0.123456" not in detail and "0.12" not in detail
    assert _job(central, waiting_job)["state"] == "created"

    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    page = central.post(
        f"/jobs/{waiting_job}/data",
        data={"csrf_token": csrf},
        files={"file": ("ours.csv", content, "text/csv")},
    )
    assert page.status_code == 422
    assert "ours.csv" in page.text and "0.123456" not in page.text
    assert _job(central, waiting_job)["state"] == "created"

    good = central.post(
        f"/api/jobs/{waiting_job}/data",
        files={"file": ("ours.csv", demo_csv(0.01), "text/csv")},
        headers=admin_auth(central),
    )
    assert good.status_code == 200, good.text
    assert good.json()["state"] in (("running", "completed") if alone else ("waiting",))


# ---------------------------------------------------------------- limits


@pytest.fixture
def small_limits(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path / "central",
        f"sqlite:///{tmp_path / 'central.db'}",
        max_upload_bytes=1_000_000,
        max_form_bytes=100_000,
    )
    with TestClient(create_central(settings)) as client:
        create_admin(client)
        yield client


def test_a_body_over_the_data_limit_gets_413_naming_it(small_limits: TestClient) -> None:
    client = small_limits
    _, site_id = approved_site(client, "north")
    job_id = _central_job(client, [site_id])
    response = client.post(
        f"/api/jobs/{job_id}/data",
        files={"file": ("central.csv", demo_csv(1.5), "text/csv")},
        headers=admin_auth(client),
    )
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert "1 MB" in detail and "FIP_CENTRAL_MAX_UPLOAD_BYTES" in detail, detail
    assert _job(client, job_id)["state"] == "created"
    under = client.post(
        f"/api/jobs/{job_id}/data",
        files={"file": ("central.csv", demo_csv(0.5), "text/csv")},
        headers=admin_auth(client),
    )
    assert under.status_code == 200, under.text


def test_every_other_body_has_the_form_limit(small_limits: TestClient) -> None:
    """Algorithm files and JSON bodies: the small limit, and its own setting named."""
    client = small_limits
    files = {
        "central": ("BigCentral.py", b"#" * 150_000, "text/x-python"),
        "remote": ("BigRemote.py", b"", "text/x-python"),
        "params": ("params.json", b"{}", "application/json"),
    }
    response = client.post("/api/algorithms", files=files, headers=admin_auth(client))
    assert response.status_code == 413
    assert "100000 bytes" in response.json()["detail"]
    assert "FIP_CENTRAL_MAX_FORM_BYTES" in response.json()["detail"]
    big_json = {"name": "x" * 150_000, "algorithm": "SIMI", "columns": ["a"], "targets": []}
    response = client.post("/api/jobs", json=big_json, headers=admin_auth(client))
    assert response.status_code == 413
    assert "FIP_CENTRAL_MAX_FORM_BYTES" in response.json()["detail"]


# ---------------------------------------------------------------- a real server, a real socket


@contextmanager
def serve(app: FastAPI, port: int) -> Iterator[None]:
    """``app`` served by uvicorn on loopback from a thread of this process."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(20)


def post_slowly(
    port: int,
    path: str,
    headers: dict[str, str],
    pieces: Iterator[bytes],
    *,
    pause: float = 0.02,
    seconds: float = 5,
) -> tuple[int, str, int]:
    """POST over a socket, a piece at a time, waiting ``pause`` for an answer after each; stop
    sending as soon as one comes, or after ``seconds``. The status (0 when there is no answer
    3 s later), the answer and how many body bytes were sent."""
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    sent = 0
    deadline = time.monotonic() + seconds
    with socket.create_connection(("127.0.0.1", port), timeout=20) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        for piece in pieces:
            if select.select([connection], [], [], pause)[0] or time.monotonic() > deadline:
                break
            try:
                connection.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        answer = b""
        connection.settimeout(3)
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        return 0, f"no answer after {sent} bytes of the body", sent
    return int(head.split()[1]), body.decode(errors="replace"), sent


def _multipart_pieces(total: int, piece: int = 64 << 10) -> Iterator[bytes]:
    """A multipart body's beginning (a file part), then ``total`` bytes of CSV in pieces."""
    yield (
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="c.csv"\r\n\r\n'
        + b"age,sex,bmi,sbp,cholesterol,smoker\n"
    )
    row = b"61.5,1,27.25,130.5,5.25,0\n"
    block = row * (piece // len(row))
    for _ in range(total // len(block)):
        yield block


def _chunked(pieces: Iterator[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"


ANNOUNCED = 200_000_000
"""What an anonymous upload announces (Content-Length): 200 MB."""
MULTIPART = "multipart/form-data; boundary=b0undary"


def test_anonymous_uploads_to_central_are_refused_before_the_body_is_read(
    tmp_path: Path,
) -> None:
    """Each upload route answers 401 having read at most the first piece of a 200 MB body."""
    port = free_port()
    settings = make_settings(tmp_path / "central", f"sqlite:///{tmp_path / 'central.db'}")
    with serve(create_central(settings), port):
        for path in ("/api/jobs/1/data", "/jobs/1/data", "/jobs/new/columns", "/api/algorithms"):
            status, body, sent = post_slowly(
                port,
                path,
                {"Content-Type": MULTIPART, "Content-Length": str(ANNOUNCED)},
                _multipart_pieces(ANNOUNCED),
                pause=0.5,
            )
            assert status == 401, (path, body)
            assert sent <= 64 << 10, (path, sent)


def test_a_body_is_refused_with_413_as_soon_as_it_crosses_the_limit(tmp_path: Path) -> None:
    """Announced over the limit: 413 before a byte of the body. Sent without a length
    (chunked): 413 once the limit is crossed, long before the whole body is sent."""
    port = free_port()
    settings = make_settings(
        tmp_path / "central",
        f"sqlite:///{tmp_path / 'central.db'}",
        max_upload_bytes=1_000_000,
    )
    with TestClient(create_central(settings)) as client:
        create_admin(client)
        _, site_id = approved_site(client, "north")
        job_id = _central_job(client, [site_id])
        auth = admin_auth(client)
    with serve(create_central(settings), port):
        status, body, sent = post_slowly(
            port,
            f"/api/jobs/{job_id}/data",
            {**auth, "Content-Type": MULTIPART, "Content-Length": str(ANNOUNCED)},
            _multipart_pieces(ANNOUNCED),
            pause=0.5,
        )
        assert status == 413 and "FIP_CENTRAL_MAX_UPLOAD_BYTES" in body and "1 MB" in body
        assert sent <= 64 << 10, sent

        status, body, sent = post_slowly(
            port,
            f"/api/jobs/{job_id}/data",
            {**auth, "Content-Type": MULTIPART, "Transfer-Encoding": "chunked"},
            _chunked(_multipart_pieces(50_000_000)),
        )
        assert status == 413 and "FIP_CENTRAL_MAX_UPLOAD_BYTES" in body, body
        assert 1_000_000 < sent < 4_000_000, sent


# ---------------------------------------------------------------- a site's upload


@contextmanager
def site_with_job(
    central: TestClient, folder: Path, **settings: Any
) -> Iterator[tuple[TestClient, str]]:
    """A site portal knowing a job of central's: the site reads the job from central's real
    API (through central's TestClient, with the site's token), as its worker would."""
    _, site_id = approved_site(central, "north")
    job_id = _central_job(central, [site_id])
    site_auth = bearer(token(central, "north", SITE_PASSWORD))

    async def fetch_json(path: str) -> Any:
        response = central.get(path, headers=site_auth)
        assert response.status_code == 200, response.text
        return response.json()

    with site_client(site_settings(folder, **settings)) as site:
        site.app.state.site.jobs.fetch_json = fetch_json  # type: ignore[attr-defined]
        yield site, str(job_id)


@pytest.fixture
def site_and_job(central: TestClient, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    with site_with_job(central, tmp_path / "site") as found:
        yield found


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_sites_csv_through_its_api_stays_in_memory(
    site_and_job: tuple[TestClient, str], temp_folder: Path
) -> None:
    site, job_id = site_and_job
    with nothing_written_to(temp_folder):
        response = site.post(
            f"/api/jobs/{job_id}/data", files={"file": ("north.csv", BIG, "text/csv")}
        )
    assert response.status_code == 200, response.text
    table = site.app.state.site.jobs.get(job_id).table  # type: ignore[attr-defined]
    whole = read_csv(BIG, label="north.csv")  # parsed as it arrived: the same table, to the bit
    assert table.rows > 100_000 and np.array_equal(
        table.values.view(np.int64), whole.values.view(np.int64)
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_bad_line_early_in_a_sites_large_csv_is_named_once_the_body_is_in(
    site_and_job: tuple[TestClient, str],
) -> None:
    """The upload is refused from its first blocks, and the rest of the body is read and
    dropped, so that the client, still sending, gets the message naming the line."""
    site, job_id = site_and_job
    lines = BIG.split(b"\n")
    lines[5] = lines[5] + b",9"
    response = site.post(
        f"/api/jobs/{job_id}/data", files={"file": ("north.csv", b"\n".join(lines), "text/csv")}
    )
    assert response.status_code == 422, response.text
    assert "north.csv: line 6 has 7 fields" in response.json()["detail"], response.text
    assert site.app.state.site.jobs.get(job_id).table is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_sites_csv_through_its_page_stays_in_memory(
    site_and_job: tuple[TestClient, str], temp_folder: Path
) -> None:
    site, job_id = site_and_job
    del site.headers["Authorization"]
    csrf = site_browser_sign_in(site)
    with nothing_written_to(temp_folder):
        response = site.post(
            f"/jobs/{job_id}/data?csrf_token={csrf}",
            files={"file": ("north.csv", BIG, "text/csv")},
            follow_redirects=False,
        )
    assert response.status_code == 303, response.text
    assert site.app.state.site.jobs.get(job_id).table is not None  # type: ignore[attr-defined]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_sites_csv_over_its_limit_gets_413(central: TestClient, tmp_path: Path) -> None:
    with site_with_job(central, tmp_path / "site", max_upload_bytes=1_000_000) as (site, job):
        response = site.post(f"/api/jobs/{job}/data", files={"file": ("n.csv", demo_csv(1.5))})
        assert site.app.state.site.jobs.get(job).table is None  # type: ignore[attr-defined]
    assert response.status_code == 413
    assert "FIP_SITE_MAX_UPLOAD_BYTES" in response.json()["detail"]


def test_anonymous_uploads_to_a_site_are_refused_before_the_body_is_read(
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = site_settings(tmp_path / "site", port=port)
    with serve(create_site(settings), port):
        for path in ("/api/jobs/1/data", "/jobs/1/data"):
            status, body, sent = post_slowly(
                port,
                path,
                {"Content-Type": MULTIPART, "Content-Length": str(ANNOUNCED)},
                _multipart_pieces(ANNOUNCED),
                pause=0.5,
            )
            assert status in (401, 303), (path, status, body)
            assert sent <= 64 << 10, (path, sent)


# ---------------------------------------------------------------- the wizard reads as it streams


def test_the_wizards_reader_holds_a_block_at_most_and_counts_like_read_csv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fed 64 KiB at a time, the reader keeps less than two blocks of the file, and its counts
    are those of the whole table."""
    from federation import csv_stream
    from portal_central.jobs.header import HeaderReader

    content, table = _large()
    monkeypatch.setattr(csv_stream, "_BLOCK", SMALL_BLOCK)
    reader = HeaderReader(label="big.csv")
    held = 0
    for start in range(0, len(content), 64 << 10):
        reader.feed(content[start : start + (64 << 10)])
        held = max(held, len(reader._csv._pending))
    columns = reader.finish()
    assert held < 2 * csv_stream._BLOCK < len(content) / 2

    missing = np.isnan(table.values)
    assert [c.name for c in columns] == list(COLUMNS)
    assert [c.rows for c in columns] == [table.rows] * len(COLUMNS)
    assert [c.missing for c in columns] == missing.sum(axis=0).tolist()
    assert [c.binary for c in columns] == [False, True, False, False, False, True]


def test_a_large_piece_fed_at_once_is_parsed_a_block_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """However much arrives in one piece, the stream parses it in blocks of about _BLOCK
    bytes (the per-byte work of a block never spans the file), with the rows and line
    numbers of read_csv."""
    from federation import csv_stream
    from federation.csv_stream import CsvStream

    content, table = _large()
    monkeypatch.setattr(csv_stream, "_BLOCK", SMALL_BLOCK)
    stream = CsvStream(label="big.csv")
    blocks = stream.feed(content) + stream.finish()

    assert len(blocks) > 2 and len(content) > 4 * csv_stream._BLOCK
    bytes_per_row = len(content) / table.rows
    assert max(b.values.shape[0] for b in blocks) * bytes_per_row < 1.2 * csv_stream._BLOCK
    assert np.array_equal(np.vstack([b.values for b in blocks]), table.values, equal_nan=True)
    assert np.concatenate([b.lines for b in blocks]).tolist() == [
        table.line(row) for row in range(table.rows)
    ]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_wizard_names_a_bad_line_far_into_a_large_file(central: TestClient) -> None:
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    lines = BIG.split(b"\n")
    far = len(lines) - 10
    lines[far] = b"61,1,27.5"  # a text cell is fine here: the wizard proposes a role for it
    response = central.post(
        "/jobs/new/columns",
        data={"algorithm": "SIMICE"},
        files={"header_file": ("far.csv", b"\n".join(lines), "text/csv")},
        headers=htmx_headers(csrf),
    )
    assert response.status_code == 422
    text = html.unescape(response.text)
    assert "far.csv" in text and f"line {far + 1} has 3 fields" in text, text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_target_central_never_observes_is_taken_when_sites_take_part(
    central: TestClient, waiting_job: int
) -> None:
    """Central has no bmi at all: the sites' rows fit it, and central's cells are imputed."""
    response = central.post(
        f"/api/jobs/{waiting_job}/data",
        files={"file": ("ours.csv", _bad("bmi", np.nan), "text/csv")},
        headers=admin_auth(central),
    )

    assert response.status_code == 200, response.text
    assert _job(central, waiting_job)["state"] == "waiting"
