"""The delay relay of the latency benchmark (tests/latency.py): it keeps the bytes and their
order, and a round trip through it takes at least its round-trip time. A correctness check of
the relay, on 127.0.0.1, not a measure of the product's speed."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.latency import DelayRelay

pytestmark = pytest.mark.process  # it serves on sockets (the echo server and the relay)


@pytest.fixture
def echo() -> Iterator[int]:
    """A server on 127.0.0.1 that sends back whatever each connection sends it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)

    def serve() -> None:
        try:
            connection, _ = server.accept()
        except OSError:
            return
        with connection:
            connection.settimeout(10)
            while data := connection.recv(65536):
                connection.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()
        thread.join(timeout=10)


def receive(connection: socket.socket, size: int) -> bytes:
    received = bytearray()
    while len(received) < size:
        data = connection.recv(min(65536, size - len(received)))
        assert data, f"the relay closed after {len(received)} of {size} bytes"
        received += data
    return bytes(received)


@pytest.mark.parametrize("rtt_ms", [0, 20], ids=["no delay: straight through", "20 ms"])
def test_bytes_pass_intact_and_in_order(echo: int, rtt_ms: float) -> None:
    """At 0 ms a chunk goes straight on when nothing is queued before it, else through the
    queue: the bytes keep their order either way."""
    relay = DelayRelay("127.0.0.1", echo, rtt_ms=rtt_ms)
    payload = os.urandom(3 * 1024 * 1024 + 17)  # many chunks in flight at once
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as connection:
            sender = threading.Thread(target=connection.sendall, args=(payload,))
            sender.start()
            echoed = receive(connection, len(payload))
            sender.join(timeout=10)
            connection.shutdown(socket.SHUT_WR)  # the half-close passes through: echo ends
            assert connection.recv(1) == b""
    finally:
        relay.close()
    assert echoed == payload


def test_a_round_trip_takes_at_least_the_rtt(echo: int) -> None:
    rtt = 0.040
    relay = DelayRelay("127.0.0.1", echo, rtt_ms=rtt * 1000)
    times = []
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as connection:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for k in range(5):
                message = f"ping {k}".encode()
                started = time.monotonic()
                connection.sendall(message)
                assert receive(connection, len(message)) == message
                times.append(time.monotonic() - started)
    finally:
        relay.close()
    assert min(times) >= rtt, times
