"""The sandbox a site runs an uploaded remote half in: a process of its own that cannot reach
the portal, opens nothing once loaded, writes nothing, and dies with its job."""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from federation import sandbox_child
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
import ctypes, os, sys
import numpy as np

LIBC = ctypes.CDLL(None, use_errno=True)

def syscall(result):
    if result < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return result

def prepare(site):
    return {"rows_used": site.data.rows}
"""
"""What an uploaded half starts with: only preloaded modules can be imported in the sandbox
(``socket`` is not), so an attacker goes through ctypes to the system calls themselves."""


def _sandbox(source: str, seconds: float = 30, memory: int | None = None) -> Sandbox:
    return Sandbox(name="T", file_name="TRemote.py", source=source, seconds=seconds, memory=memory)


def _opened(source: str, seconds: float = 30, memory: int | None = None) -> Sandbox:
    sandbox = _sandbox(source, seconds, memory)
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

    assert str(failure) == "the algorithm's remote half failed"
    assert (
        "ImportError: 'federation" in failure.detail
        or "ImportError: 'algorithms" in failure.detail
        or ("cannot be imported in the sandbox" in failure.detail)
    )


LOADING_ATTACKS = {
    "a socket": "KEEP = syscall(LIBC.socket(2, 1, 0))",
    "a socket in place of fd 0": "os.dup2(syscall(LIBC.socket(2, 1, 0)), 0)",
    "a file read": "os.open('/etc/hostname', os.O_RDONLY)",
    "the portal's environment": "os.open(f'/proc/{os.getppid()}/environ', os.O_RDONLY)",
    "a fork": "os.fork()",
    "a thread": "__import__('_thread').start_new_thread(print, ())",
    "a program": "os.execv('/bin/true', ['true'])",
    "a signal to the portal": "os.kill(os.getppid(), 9)",
    "the limits raised": "__import__('resource').setrlimit(__import__('resource').RLIMIT_NOFILE,"
    " (1024, 1024))",
    "the import blocker removed": "sys.meta_path[:] = [f for f in sys.meta_path "
    "if type(f).__name__ != '_Blocker']; import federation.site",
}


@pytest.mark.parametrize("attack", LOADING_ATTACKS.values(), ids=LOADING_ATTACKS)
def test_the_uploaded_code_is_locked_in_before_it_runs_its_first_line(attack: str) -> None:
    """Whatever it tries at its top level fails: the lock-down came first."""
    failure = _fails(BASE + f"{attack}\nHANDLERS = {{}}\n")

    assert str(failure) == "the algorithm's remote half failed"  # nothing of its own text
    assert os.getpid() > 0  # the portal's process is alive


def test_nothing_is_written_even_while_loading(tmp_path: os.PathLike[str]) -> None:
    marker = os.path.join(tmp_path, "marker")
    source = f"with open({marker!r}, 'w') as f:\n    f.write('x' * 100)\n"
    failure = _fails(BASE + source + "HANDLERS = {}\n")

    assert "Operation not permitted" in failure.detail
    assert not os.path.exists(marker)


@pytest.mark.parametrize(
    "action",
    [
        "open('/etc/hostname').read()",
        "syscall(LIBC.socket(2, 1, 0))",
        "os.pipe()",
        "os.fork()",
        "os.kill(os.getppid(), 9)",
        "__import__('socket')",
        "syscall(LIBC.sigqueue(os.getpid(), 0, 0))",  # a signal by another system call
        "syscall(LIBC.prctl(1, 0, 0, 0, 0))",  # no longer to die with the fork server
        "syscall(LIBC.prctl(4, 1, 0, 0, 0))",  # dumpable: its memory in a core file
        # a signal sent by the kernel to the owner of a descriptor when the portal writes to it:
        "syscall(LIBC.fcntl(3, 8, os.getpid()))",  # F_SETOWN
        "syscall(LIBC.fcntl(3, 10, 9))",  # F_SETSIG
        "syscall(LIBC.ioctl(3, 0x8901, ctypes.byref(ctypes.c_int(os.getpid()))))",  # FIOSETOWN
        "syscall(LIBC.setpriority(0, 0, 19))",  # would slow another site's sandbox
        "syscall(LIBC.shmget(0, 4096, 0o1600))",  # memory that outlives it, shared
        # what the machine's files are: their sizes and times, whether they exist, where
        "os.stat('/etc/hostname')",
        "syscall(LIBC.access(b'/etc/hostname', 0))",
        "os.readlink('/proc/self/exe')",
        "os.uname()",  # the machine's name
        "syscall(LIBC.syscall(500, 0, 0, 0))",  # a call the filter does not know (a newer one)
    ],
)
def test_once_loaded_it_opens_and_starts_nothing(action: str, closing: list[Sandbox]) -> None:
    sandbox = _opened(BASE + f"def act(site):\n    {action}\n\nHANDLERS = {{'act': act}}\n")
    closing.append(sandbox)

    with pytest.raises(SandboxFailed) as caught:
        sandbox.call("act", {})

    assert any(
        reason in caught.value.detail
        for reason in ("Operation not permitted", "Too many open files", "No module named")
    ), caught.value.detail
    assert os.getpid() > 0
    assert sandbox.alive, "a refused action does not end the job's process"


def test_an_exception_name_chosen_to_carry_data_stays_at_the_site(closing: list[Sandbox]) -> None:
    source = BASE + (
        "def leak(site):\n"
        "    raise type('ROW_' + str(int(site.data.values[1, 1])), (Exception,), {})()\n\n"
        "HANDLERS = {'leak': leak}\n"
    )
    sandbox = _opened(source)
    closing.append(sandbox)

    with pytest.raises(SandboxFailed) as caught:
        sandbox.call("leak", {})

    assert str(caught.value) == "the algorithm's remote half failed"
    assert "ROW_3" in caught.value.detail  # for the site's own log


@pytest.mark.parametrize("length", [100, 2**31 - 1], ids=["a stalled frame", "a huge frame"])
def test_the_pipe_cannot_stall_or_bloat_the_portal(length: int) -> None:
    """The half writes a frame header of its own on the answer pipe, then sleeps."""
    source = BASE + (
        "import struct, time\n"
        "def stall(site):\n"
        "    for fd in range(3, 12):\n"
        "        try:\n"
        f"            os.write(fd, struct.pack('<Q', {length}))\n"
        "        except OSError:\n"
        "            pass\n"
        "    time.sleep(60)\n\n"
        "HANDLERS = {'stall': stall}\n"
    )
    sandbox = _opened(source, seconds=1.0)
    started = time.monotonic()

    with pytest.raises(SandboxFailed):
        sandbox.call("stall", {})

    assert time.monotonic() - started < 10
    assert not sandbox.alive


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


# ------------------------------------------------------------------ the fork server


def _state(pid: int) -> str:
    """The process's state letter ("Z" for a zombie), or "" when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return ""


def _gone(pid: int) -> bool:
    return _state(pid) in ("", "Z", "X")


def test_a_sandbox_holds_no_socket_and_cannot_import_the_fork_servers_socket_module(
    closing: list[Sandbox],
) -> None:
    """It is forked from the fork server, which holds a socket to the portal and imported
    ``socket``: the child holds no socket descriptor (it cannot ask the server for anything)
    and cannot import the module (the code stays in its memory, useless without a socket)."""
    source = BASE + (
        "import stat\n"
        "def look(site):\n"
        "    sockets = []\n"
        "    for fd in range(256):\n"
        "        try:\n"
        "            mode = os.fstat(fd).st_mode\n"
        "        except OSError:\n"
        "            continue\n"
        "        if stat.S_ISSOCK(mode):\n"
        "            sockets.append(fd)\n"
        "    return {'sockets': sockets, 'modules': sorted(m for m in sys.modules\n"
        "            if m.split('.')[0] in ('socket', '_socket', 'selectors'))}\n\n"
        "HANDLERS = {'look': look}\n"
    )
    sandbox = _opened(source)
    closing.append(sandbox)

    assert sandbox.call("look", {}) == {"sockets": [], "modules": []}


def test_sandboxes_die_with_their_fork_server_and_the_next_one_gets_a_new_server() -> None:
    from federation import sandbox as module

    hanging = BASE + "import time\ndef hang(site):\n    time.sleep(60)\n\nHANDLERS = {}\n"
    first = _opened(hanging)
    server = module._fork_server()
    pid = first.pid

    os.kill(server._process.pid, 9)
    server._process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.01)

    assert _gone(pid), "the sandbox outlived its fork server"
    assert not first.alive
    with pytest.raises(SandboxFailed):
        first.call("hang", {})
    _a_new_server_serves(instead_of=server)


def _a_new_server_serves(*, instead_of: object) -> None:
    from federation import sandbox as module

    fresh = _opened(BASE + "HANDLERS = {}\n")
    try:
        assert module._fork_server() is not instead_of
        assert fresh.alive
    finally:
        fresh.close()


PORTAL = """
import os, sys
import numpy as np
from federation import sandbox

half = sandbox.Sandbox(name="T", file_name="TRemote.py", source=sys.argv[1])
half.open(site="s", spec=sandbox_spec, label="s.csv", columns=["a", "b"],
          values=np.ones((4, 2)), is_central=False, rng=np.random.default_rng(1))
"""
"""A portal (of the test's own) with one sandbox open on four rows of ones; the test's half
is its first argument."""

KILLED_PORTAL = (
    PORTAL
    + """
print(half.pid, sandbox._fork_server()._process.pid, flush=True)
half.call("spin", {})
"""
)


def test_the_sandbox_and_its_fork_server_die_with_a_killed_portal() -> None:
    """The portal is SIGKILLed while its sandbox computes: nothing of either stays behind.
    (Before the fork server, a sandbox running as nobody outlived it: dropping root's identity
    cleared its parent-death signal.)"""
    source = BASE + "def spin(site):\n    while True:\n        pass\n\nHANDLERS = {'spin': spin}\n"
    portal = subprocess.Popen(
        [sys.executable, "-c", f"sandbox_spec = {SPEC!r}\n{KILLED_PORTAL}", source],
        stdout=subprocess.PIPE,
    )
    assert portal.stdout is not None
    try:
        half, server = (int(pid) for pid in portal.stdout.readline().split())
        deadline = time.monotonic() + 10
        while _state(half) != "R" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _state(half) == "R", "the sandbox is computing"
        assert not _gone(server)
    finally:
        portal.kill()
        portal.wait(timeout=10)
        portal.stdout.close()
    deadline = time.monotonic() + 10
    while not (_gone(half) and _gone(server)) and time.monotonic() < deadline:
        time.sleep(0.02)

    assert _gone(half), "the sandbox outlived its portal"
    assert _gone(server), "the fork server outlived its portal"


def test_each_sandbox_draws_its_own_numpy_global_random_numbers() -> None:
    """Forked from one server, they would otherwise share its global generator's state (two
    jobs' noise that cancels when subtracted)."""
    source = (
        BASE
        + "def draw(site):\n    return {'x': np.random.random()}\n\nHANDLERS = {'draw': draw}\n"
    )
    first, second = _opened(source), _opened(source)
    try:
        assert first.call("draw", {})["x"] != second.call("draw", {})["x"]
    finally:
        first.close()
        second.close()


def test_a_sandbox_that_ended_by_itself_keeps_its_pid_until_the_portal_stops_it() -> None:
    """Its pid stays taken (a zombie) until close(), so the stop cannot reach another job's
    sandbox that was given the same pid."""
    source = BASE + (
        "import signal\ndef end_soon(site):\n    signal.setitimer(signal.ITIMER_REAL, 0.05)\n"
        "    return {}\n\nHANDLERS = {'end_soon': end_soon}\n"
    )
    ending = _opened(source)
    ending.call("end_soon", {})
    deadline = time.monotonic() + 10
    while _state(ending.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    other = _opened(BASE + "HANDLERS = {}\n")  # a request to the server in between
    try:
        assert _state(ending.pid) == "Z"
        assert not ending.alive
        ending.close()
        assert _state(ending.pid) == ""
        assert other.alive
    finally:
        other.close()


def test_a_sandbox_dropped_during_a_request_on_the_same_thread_is_stopped_without_a_deadlock() -> (
    None
):
    """The garbage collector may drop a sandbox while its own thread holds the server's lock:
    the stop waits for the lock to be free instead of waiting on itself."""
    from federation import sandbox as module

    dropped = _opened(BASE + "HANDLERS = {}\n")
    pid = dropped.pid
    server = module._fork_server()
    finished = threading.Event()

    def drop_while_holding_the_lock() -> None:
        nonlocal dropped
        with server._lock:
            del dropped
            gc.collect()
        finished.set()

    worker = threading.Thread(target=drop_while_holding_the_lock, daemon=True)
    worker.start()
    worker.join(timeout=10)

    assert finished.is_set(), "the thread waited on the lock it held"
    assert server.alive(pid) is False  # the queued stop went first
    assert _state(pid) == ""


def test_a_fork_server_that_does_not_answer_is_replaced() -> None:
    from federation import sandbox as module

    server = module._fork_server()
    os.kill(server._process.pid, signal.SIGSTOP)
    server._socket.settimeout(0.1)
    try:
        with pytest.raises(SandboxFailed, match="fork server failed"):
            _sandbox(BASE + "HANDLERS = {}\n")
    finally:
        with contextlib.suppress(ProcessLookupError):  # a stopped server would outlive us
            os.kill(server._process.pid, signal.SIGCONT)

    _a_new_server_serves(instead_of=server)


FORKING_PORTAL = (
    PORTAL
    + """
child = os.fork()
if child == 0:
    sys.exit(0)  # its exit runs the atexit hooks and finalizers it inherited
os.waitpid(child, 0)
print(half.call("total", {})["sum"], flush=True)
"""
)


def test_a_process_forked_from_the_portal_leaves_the_portals_sandboxes_alone() -> None:
    source = BASE + (
        "def total(site):\n    return {'sum': float(site.data.values.sum())}\n\n"
        "HANDLERS = {'total': total}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", f"sandbox_spec = {SPEC!r}\n{FORKING_PORTAL}", source],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.stdout.strip() == "8.0", done.stderr[-2000:]


def test_a_half_still_reads_and_sets_its_own_descriptors_flags(closing: list[Sandbox]) -> None:
    """fcntl passes for a descriptor's own flags, not for a command naming another process."""
    source = BASE + (
        "def flags(site):\n    os.set_blocking(0, False)\n"
        "    return {'blocking': os.get_blocking(0)}\n\nHANDLERS = {'flags': flags}\n"
    )
    sandbox = _opened(source)
    closing.append(sandbox)

    assert sandbox.call("flags", {}) == {"blocking": False}


def test_a_half_computes_with_numpy_and_the_preloaded_modules_under_the_lock_down(
    closing: list[Sandbox],
) -> None:
    """What the filter lets through is enough for real work: large arrays made, grown and freed,
    linear algebra, sorting, an FFT, random numbers, JSON, a pause, an exception caught."""
    source = BASE + (
        "import json, math, statistics, time\n"
        "def work(site):\n"
        "    rng = np.random.default_rng(7)\n"
        "    x = rng.normal(size=(300_000, 12))\n"
        "    gram = x.T @ x + np.eye(12)\n"
        "    beta = np.linalg.solve(gram, x.T @ rng.normal(size=300_000))\n"
        "    np.linalg.cholesky(gram), np.linalg.eigh(gram), np.linalg.inv(gram)\n"
        "    big = np.resize(np.sort(x[:, 0]), 6_000_000)\n"
        "    spectrum = np.fft.rfft(big[:65536])\n"
        "    del big\n"
        "    time.sleep(0.01)\n"
        "    try:\n"
        "        statistics.mean([])\n"
        "    except statistics.StatisticsError:\n"
        "        pass\n"
        "    text = json.dumps({'beta': beta.tolist(), 'peak': float(abs(spectrum).max())})\n"
        "    return {'finite': bool(np.isfinite(json.loads(text)['beta']).all()),\n"
        "            'sqrt': math.sqrt(4.0), 'fresh': float(np.random.default_rng().random())}\n"
        "\nHANDLERS = {'work': work}\n"
    )
    sandbox = _opened(source)
    closing.append(sandbox)

    answer = sandbox.call("work", {})

    assert answer["finite"] is True and answer["sqrt"] == 2.0
    assert 0.0 <= answer["fresh"] < 1.0  # seeded from the kernel (getrandom)


PROBES = (
    BASE
    + r"""
import time
LIBC.syscall.restype = ctypes.c_long

def affinity(site, pid):
    mask = ctypes.create_string_buffer(128)
    return {"ok": LIBC.sched_getaffinity(pid, 128, mask) == 0}

def cpu_clock(site, pid):
    try:
        return {"seconds": time.clock_gettime(((~pid) << 3) | 2)}  # that pid's CPU clock
    except OSError as error:
        return {"error": error.errno}

# A futex that is not private, on a page of libc's text, is keyed by the file and offset:
# the same key in every process that maps libc.
ADDRESS = ctypes.cast(LIBC.getpid, ctypes.c_void_p).value

class Timespec(ctypes.Structure):
    _fields_ = [("s", ctypes.c_long), ("ns", ctypes.c_long)]

def wait(site, seconds):
    value = ctypes.c_uint32.from_address(ADDRESS).value
    timeout = Timespec(seconds, 0)
    return {"r": LIBC.syscall(FUTEX, ctypes.c_void_p(ADDRESS), 0,  # FUTEX_WAIT, shared
                              ctypes.c_uint32(value), ctypes.byref(timeout), 0, 0)}

def wake(site):
    return {"woken": LIBC.syscall(FUTEX, ctypes.c_void_p(ADDRESS), 1, 1000, 0, 0, 0)}

def where(site):
    import inspect
    return {"frames": len(inspect.stack()), "absolute": os.path.abspath("x"),
            "time": time.process_time(), "now": time.clock_gettime(time.CLOCK_MONOTONIC)}

HANDLERS = {"affinity": affinity, "cpu_clock": cpu_clock, "wait": wait, "wake": wake,
            "where": where}
""".replace("FUTEX", str(sandbox_child.SYSCALLS[platform.machine()]["futex"]))
)
"""Probes of what a half may learn of other processes, or share with them."""


def test_a_half_cannot_tell_whether_another_process_exists(closing: list[Sandbox]) -> None:
    """sched_getaffinity(pid) needs no permission and fails only for a pid that does not
    exist: in 0.02 s it listed every process and thread of the machine."""
    sandbox = _opened(PROBES)
    closing.append(sandbox)

    assert sandbox.call("affinity", {"pid": 0}) == {"ok": True}  # its own: os.cpu_count, BLAS
    assert sandbox.call("affinity", {"pid": os.getpid()}) == {"ok": False}
    assert sandbox.call("affinity", {"pid": 1}) == {"ok": False}


def test_a_half_cannot_read_another_processs_cpu_time(closing: list[Sandbox]) -> None:
    """A process's CPU clock (a negative clock id) is readable without permission: the
    portal's CPU time to the nanosecond, or another sandbox's (a channel between them)."""
    sandbox = _opened(PROBES)
    closing.append(sandbox)

    assert "error" in sandbox.call("cpu_clock", {"pid": os.getpid()})


def test_two_sandboxes_cannot_meet_on_a_shared_futex(closing: list[Sandbox]) -> None:
    """One waits on a futex in libc's text and the other wakes it: a channel between two
    jobs' sandboxes (other data, other approvals) with no file, pipe or signal."""
    waiter, waker = _opened(PROBES), _opened(PROBES)
    closing += [waiter, waker]
    thread = threading.Thread(target=waiter.call, args=("wait", {"seconds": 3}))
    thread.start()

    woken, deadline = 0, time.monotonic() + 3
    while thread.is_alive() and woken <= 0 and time.monotonic() < deadline:
        woken = waker.call("wake", {})["woken"]
    thread.join()

    assert woken <= 0


def test_a_half_still_knows_where_it_is_in_its_code_and_what_time_it_is(
    closing: list[Sandbox],
) -> None:
    """inspect.stack() and os.path.abspath() ask for the folder (the fork server's, '/'),
    time.process_time() for its own CPU clock: all let through."""
    sandbox = _opened(PROBES)
    closing.append(sandbox)

    answer = sandbox.call("where", {})

    assert answer["absolute"] == "/x" and answer["frames"] >= 1
    assert answer["time"] > 0 and answer["now"] > 0


def test_a_sandbox_is_the_first_process_ended_when_memory_runs_out(
    closing: list[Sandbox],
) -> None:
    """A job's arrays may take the machine's memory, but the kernel then ends the sandbox,
    not the site's portal."""
    sandbox = _opened(BASE + "HANDLERS = {}\n")
    closing.append(sandbox)

    with open(f"/proc/{sandbox.pid}/oom_score_adj") as setting:
        assert setting.read().strip() == "1000"


def test_a_sandbox_with_a_memory_limit_fails_past_it_and_computes_below_it(
    closing: list[Sandbox],
) -> None:
    """FIP_SITE_SANDBOX_MEMORY_MB: an allocation past the limit fails with MemoryError (the
    site's log says so); below it the half computes as ever."""
    source = BASE + (
        "def take(site, megabytes):\n"
        "    return {'sum': float(np.ones(megabytes * 2**17).sum())}\n"
        "\nHANDLERS = {'take': take}\n"
    )
    sandbox = _opened(source, memory=192 * 2**20)
    closing.append(sandbox)

    assert sandbox.call("take", {"megabytes": 64}) == {"sum": 64 * 2**17}
    with pytest.raises(SandboxFailed) as caught:
        sandbox.call("take", {"megabytes": 256})
    assert "MemoryError" in caught.value.detail
    assert sandbox.alive


def test_no_directory_is_made_even_where_anyone_may_write(closing: list[Sandbox]) -> None:
    """A folder in /tmp is a write to disk too (its name could carry data)."""
    folder = f"/tmp/fip-sandbox-test-{os.getpid()}"
    source = BASE + f"def make(site):\n    os.mkdir({folder!r})\n\nHANDLERS = {{'make': make}}\n"
    sandbox = _opened(source)
    closing.append(sandbox)
    try:
        with pytest.raises(SandboxFailed) as caught:
            sandbox.call("make", {})
        assert "Operation not permitted" in caught.value.detail
        assert not os.path.exists(folder)
    finally:
        if os.path.isdir(folder):
            os.rmdir(folder)


STOPS_READING = BASE + (
    "import signal, time\n"
    "def stop_reading(site):\n"
    "    signal.signal(signal.SIGALRM, lambda *_: time.sleep(60))\n"
    "    signal.setitimer(signal.ITIMER_REAL, 0.001)\n"
    "    return {}\n\nHANDLERS = {'stop_reading': stop_reading, 'take': lambda site, x: {}}\n"
)
"""A half that stops reading its pipe in the middle of the next command."""


def _send_a_large_command_in_a_thread(sandbox: Sandbox) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def send() -> None:
        try:
            outcome.append(sandbox.call("take", {"x": np.zeros(2_000_000)}))
        except SandboxFailed as error:
            outcome.append(error)

    sandbox.call("stop_reading", {})
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread, outcome


def test_a_half_that_stops_reading_cannot_hold_the_portal_past_the_deadline() -> None:
    sandbox = _opened(STOPS_READING, seconds=0.2)
    try:
        thread, outcome = _send_a_large_command_in_a_thread(sandbox)
        thread.join(timeout=10)

        assert not thread.is_alive(), "the portal's write waited for the half for good"
        assert isinstance(outcome[0], SandboxFailed)
        assert "did not answer in 0.2 s" in str(outcome[0])
        assert not sandbox.alive
    finally:
        sandbox.close()


def test_closing_from_another_thread_ends_a_command_under_way_at_once() -> None:
    """As a cancelled job does: the command's thread fails, close() returns, both at once."""
    sandbox = _opened(STOPS_READING, seconds=30)
    thread, outcome = _send_a_large_command_in_a_thread(sandbox)
    time.sleep(0.05)
    closer = threading.Thread(target=sandbox.close, daemon=True)
    closer.start()
    closer.join(timeout=10)
    thread.join(timeout=10)

    assert not closer.is_alive(), "close() waited for the command"
    assert not thread.is_alive()
    assert isinstance(outcome[0], SandboxFailed)
    assert not sandbox.alive


HEADERS = {
    "x86_64": ("/usr/include/x86_64-linux-gnu/asm/unistd_64.h", r"#define __NR_(\w+) (\d+)"),
    "aarch64": ("/usr/include/asm-generic/unistd.h", r"#define __NR(?:3264)?_(\w+) (\d+)"),
}
NOT_IN_THE_GENERIC_TABLE = {"time", "alarm", "poll", "select"}


@pytest.mark.parametrize("machine", sorted(sandbox_child.SYSCALLS))
def test_every_allowed_call_has_its_number_from_linuxs_own_table(machine: str) -> None:
    """The numbers are checked against the kernel headers of this machine (Debian's
    linux-libc-dev ships both tables): a wrong number would let another call through."""
    numbers = sandbox_child.SYSCALLS[machine]
    named = {n for group in sandbox_child.ALLOWED_CALLS.values() for n in group.split()}
    absent = NOT_IN_THE_GENERIC_TABLE if machine == "aarch64" else set()
    path, pattern = HEADERS[machine]
    with open(path) as header:
        linux = dict(re.findall(pattern, header.read()))

    assert named - set(numbers) == absent
    assert set(numbers) - named == set(sandbox_child.ALLOWED_ARGUMENTS)
    assert numbers == {n: int(linux[n]) for n in numbers}
