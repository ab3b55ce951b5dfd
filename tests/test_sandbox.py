"""The sandbox a site runs an uploaded remote half in: a process of its own that cannot reach
the portal, opens nothing once loaded, writes nothing, and dies with its job."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np
import pytest

from federation.sandbox import Sandbox, SandboxFailed

SPEC = {
    "job_id": "j",
    "algorithm": "T",
    "version": "1",
    "columns": ["a", "b"],
    "targets": [{"index": 2, "name": "b", "type": "gaussian"}],
    "params": {"imputations": 1},
    "seed": 1,
    "sites": ["s"],
}
BASE = """
import os, socket
import numpy as np

def prepare(site):
    return {"rows_used": site.data.rows}
"""


def _sandbox(source: str, seconds: float = 30) -> Sandbox:
    return Sandbox(name="T", file_name="TRemote.py", source=source, seconds=seconds)


def _opened(source: str, seconds: float = 30) -> Sandbox:
    sandbox = _sandbox(source, seconds)
    sandbox.open(
        site="s",
        spec=SPEC,
        label="s.csv",
        columns=["a", "b"],
        values=np.arange(8, dtype=np.float64).reshape(4, 2),
        is_central=False,
        rng=np.random.default_rng(1),
    )
    return sandbox


@pytest.fixture
def closing() -> Iterator[list[Sandbox]]:
    made: list[Sandbox] = []
    yield made
    for sandbox in made:
        sandbox.close()


def _fails(source: str) -> SandboxFailed:
    with pytest.raises(SandboxFailed) as caught:
        _sandbox(source).close()
    return caught.value


@pytest.mark.parametrize(
    "package",
    [
        "federation",
        "federation.site",
        "algorithms._stats",
        "portal_site.store",
        "portal_central.app",
    ],
)
def test_the_portal_cannot_be_imported(package: str) -> None:
    failure = _fails(f"import {package}\nHANDLERS = {{}}\ndef prepare(site): pass\n")

    assert "ImportError" in str(failure)
    assert "cannot be imported in the sandbox" in failure.detail


def test_a_file_or_socket_left_open_while_loading_is_refused() -> None:
    failure = _fails(BASE + "KEEP = socket.socket()\nHANDLERS = {}\n")

    assert "PermissionError" in str(failure)
    assert "opened a file or socket while loading" in failure.detail


def test_nothing_is_written_even_while_loading(tmp_path: os.PathLike[str]) -> None:
    marker = os.path.join(tmp_path, "marker")
    source = f"with open({marker!r}, 'w') as f:\n    f.write('x' * 100)\n"
    failure = _fails(BASE + source + "HANDLERS = {}\n")

    assert "OSError" in str(failure)  # EFBIG: the file size limit is 0
    assert not os.path.exists(marker) or os.path.getsize(marker) == 0


@pytest.mark.parametrize(
    ("action", "error"),
    [
        ("open('/etc/hostname').read()", "Too many open files"),
        ("socket.socket()", "Too many open files"),
        ("socket.create_connection(('127.0.0.1', 9))", "Too many open files"),
        ("os.pipe()", "Too many open files"),
        ("__import__('subprocess').run(['true'])", "Too many open files"),
    ],
)
def test_once_loaded_it_opens_nothing(action: str, error: str, closing: list[Sandbox]) -> None:
    sandbox = _opened(BASE + f"def act(site):\n    {action}\n\nHANDLERS = {{'act': act}}\n")
    closing.append(sandbox)

    with pytest.raises(SandboxFailed) as caught:
        sandbox.call("act", {})

    assert error in caught.value.detail
    assert sandbox.alive, "a refused action does not end the job's process"


def test_it_answers_with_the_data_it_was_given_and_its_own_pid(closing: list[Sandbox]) -> None:
    source = BASE + (
        "def total(site):\n    return {'sum': float(site.data.values.sum()), "
        "'pid': os.getpid()}\n\nHANDLERS = {'total': total}\n"
    )
    sandbox = _opened(source)
    closing.append(sandbox)

    answer = sandbox.call("total", {})

    assert answer["sum"] == 28.0
    assert answer["pid"] == sandbox.pid != os.getpid()


def test_closing_kills_the_process() -> None:
    sandbox = _opened(BASE + "HANDLERS = {}\n")
    pid = sandbox.pid

    sandbox.close()

    assert not sandbox.alive
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_hung_operation_is_stopped_at_its_deadline() -> None:
    sandbox = _opened(
        BASE + "import time\ndef hang(site):\n    time.sleep(60)\n\nHANDLERS = {'hang': hang}\n",
        seconds=0.5,
    )
    started = time.monotonic()

    with pytest.raises(SandboxFailed, match="did not answer in 0.5 s"):
        sandbox.call("hang", {})

    assert time.monotonic() - started < 10
    assert not sandbox.alive


def test_print_reaches_nobody(closing: list[Sandbox]) -> None:
    """Output of the uploaded code does not corrupt the pipe (it goes to /dev/null)."""
    sandbox = _opened(
        BASE + "print('x' * 10000)\ndef talk(site):\n    print('hello')\n"
        "    return {'ok': 1}\n\nHANDLERS = {'talk': talk}\n"
    )
    closing.append(sandbox)

    assert sandbox.call("talk", {}) == {"ok": 1}
