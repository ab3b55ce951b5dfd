"""A throwaway network namespace for the latency benchmark, removed whatever happens.

``Namespace.create()`` makes ``fipbench-<pid>`` with its loopback up and a veth pair to this
namespace (10.213.<k>.1 here, 10.213.<k>.2 inside), or returns why it cannot (not root, no
``ip netns``). Everything it made goes on ``remove()``, which also runs at exit (SIGTERM exits).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from types import FrameType


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)


@dataclass
class Namespace:
    name: str
    host_address: str
    """This side of the veth pair (the root namespace)."""
    inside_address: str
    """The namespace's side of the veth pair: where central listens."""
    veth: str
    removed: bool = False

    @classmethod
    def create(cls) -> Namespace | str:
        """A new namespace, or the reason there is none."""
        if os.geteuid() != 0:
            return "not root (a network namespace needs root)"
        if shutil.which("ip") is None:
            return "no `ip` command (iproute2)"
        pid = os.getpid()
        subnet = pid % 250 + 1
        namespace = cls(
            name=f"fipbench-{pid}",
            host_address=f"10.213.{subnet}.1",
            inside_address=f"10.213.{subnet}.2",
            veth=f"fipb{pid}",
        )
        made = _ip("netns", "add", namespace.name)
        if made.returncode != 0:
            return f"`ip netns add` failed: {made.stderr.strip()}"
        atexit.register(namespace.remove)
        previous = signal.getsignal(signal.SIGTERM)

        def on_term(number: int, frame: FrameType | None) -> None:
            # Unwind as on Ctrl-C: the caller's cleanup stops the processes, then removes the
            # namespace (atexit does, at the latest). Removing it here first would cut central
            # off from the sites it is closing a job with.
            signal.signal(signal.SIGTERM, previous)
            raise SystemExit(128 + number)

        signal.signal(signal.SIGTERM, on_term)
        steps = [
            ("-n", namespace.name, "link", "set", "lo", "up"),
            ("link", "add", namespace.veth, "type", "veth", "peer", "name", "fipns0"),
            ("link", "set", "fipns0", "netns", namespace.name),
            ("addr", "add", f"{namespace.host_address}/30", "dev", namespace.veth),
            ("link", "set", namespace.veth, "up"),
            (
                "-n",
                namespace.name,
                "addr",
                "add",
                f"{namespace.inside_address}/30",
                "dev",
                "fipns0",
            ),
            ("-n", namespace.name, "link", "set", "fipns0", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                namespace.remove()
                return f"`ip {' '.join(step)}` failed: {done.stderr.strip()}"
        return namespace

    def command(self, *args: str) -> list[str]:
        """``args`` run inside the namespace (``ip netns exec`` execs it: same process id)."""
        return ["ip", "netns", "exec", self.name, *args]

    def remove(self) -> None:
        """Delete the veth pair (both ends go) and the namespace; idempotent."""
        if self.removed:
            return
        self.removed = True
        _ip("link", "del", self.veth)
        _ip("netns", "del", self.name)


def netem_available(namespace: Namespace) -> bool:
    """Whether the kernel has ``netem`` (tried on the namespace's loopback, then removed)."""
    if shutil.which("tc") is None:
        return False
    tried = subprocess.run(
        namespace.command("tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"),
        capture_output=True,
        text=True,
        timeout=20,
    )
    if tried.returncode == 0:
        subprocess.run(
            namespace.command("tc", "qdisc", "del", "dev", "lo", "root"),
            capture_output=True,
            timeout=20,
        )
    return tried.returncode == 0
