"""Request rate limits per client address (token buckets, in memory), answered with 429.

They bound how fast one address can call the sign-in and registration endpoints at all,
whatever the outcome; the sign-in throttle (:mod:`portal_central.accounts.throttle`) is what
slows password guessing. Buckets live in this process: they protect the process that holds
them, cost no database write per request, and a restart (which an attacker cannot cause)
merely refills them.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from dataclasses import dataclass

from fastapi import Request

from portal_central.errors import PortalError

_MAX_CLIENTS = 10_000


class RateLimited(PortalError):
    """Too many requests from one address; ``retry_after`` seconds until the next is allowed."""

    status_code = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimit:
    """At most ``capacity`` requests at once per address, refilled over ``window`` seconds."""

    def __init__(self, what: str, *, capacity: int, window: float) -> None:
        self._what = what
        self._capacity = float(capacity)
        self._rate = capacity / window
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def hit(self, client: str, *, now: float | None = None) -> None:
        """Take one request from the address's bucket, or raise :class:`RateLimited`."""
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                if len(self._buckets) >= _MAX_CLIENTS:
                    self._prune(now)
                bucket = self._buckets[client] = _Bucket(self._capacity, now)
            bucket.tokens = min(self._capacity, bucket.tokens + (now - bucket.at) * self._rate)
            bucket.at = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return
            wait = max(1, math.ceil((1 - bucket.tokens) / self._rate))
        raise RateLimited(
            f"too many {self._what} from this address; try again in {wait} s", retry_after=wait
        )

    def _prune(self, now: float) -> None:
        """Drop the buckets that are full again (they behave as new ones)."""
        full = [
            key
            for key, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.at) * self._rate >= self._capacity
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= _MAX_CLIENTS:  # a flood of addresses: forget the oldest half
            for key in sorted(self._buckets, key=lambda k: self._buckets[k].at)[
                : _MAX_CLIENTS // 2
            ]:
                del self._buckets[key]


def client_address(request: Request) -> str:
    """The address the request came from (no proxy header is trusted: it could be forged).

    An IPv6 address counts as its /64 network: one host usually holds a whole /64 and could
    otherwise take a fresh address for every attempt."""
    host = request.client.host if request.client is not None else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    if address.ipv4_mapped is not None:  # ::ffff:192.0.2.1 is 192.0.2.1
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))
