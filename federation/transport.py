"""How requests reach sites. The runtime sees only :class:`Transport`; frames are opaque bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

from federation.site import SiteRunner


class Transport(Protocol):
    """Carries one request frame to a site and brings back its reply frame."""

    async def exchange(self, site: str, frame: bytes) -> bytes: ...


class InMemoryTransport:
    """Sites in the same process: each request runs in a worker thread, through the real codec.

    Sites answer concurrently (numpy releases the GIL), as they would on their own machines.
    """

    def __init__(self, runners: Mapping[str, SiteRunner]) -> None:
        self._runners = dict(runners)

    async def exchange(self, site: str, frame: bytes) -> bytes:
        return await asyncio.to_thread(self._runners[site].handle, frame)
