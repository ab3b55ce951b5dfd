"""Every site's one live WebSocket, and request/reply exchange over it that survives reconnects.

A request frame is sent on the site's current socket and its reply awaited. If the socket
drops, the exchange waits for the site to come back (up to the grace period, counted from the
drop) and sends the same frame again: the site answers a repeated sequence number with the
reply it already computed, so no message is lost or applied twice. A masked round of secure
aggregation is not sent again: once the site is back, the exchange raises ``SiteLost`` and the
runtime starts the round again with fresh masks (``federation.secure``). Several jobs share a
site's socket; replies find their request by (job id, sequence number). When a site comes or
goes, its site_id is published to the broker's ``SITES`` topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket

from federation.errors import FipError, ProtocolError, SiteLost
from federation.policy import Policy
from federation.protocol import ControlMessage, Frame, Request, decode, encode_control, message_of
from federation.secure import MASKED
from portal_common.broker import Broker

log = logging.getLogger(__name__)
REPLACED = 4000
DISABLED = 4003
SITES = "sites"
"""The broker topic of sites coming and going: each message is a site_id."""


class SiteGone(FipError):
    """A site did not come back within the grace period: the job's message says so plainly."""


@dataclass
class SiteLink:
    """One open WebSocket of a site."""

    site_id: str
    websocket: WebSocket
    connected_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    _send: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: set[asyncio.Future[bytes | None]] = field(default_factory=set)
    """The replies awaited over this socket: each is given None when it closes."""

    def close(self) -> None:
        """This socket is gone: every exchange waiting on it learns so (a reply of None)."""
        self.closed.set()
        for future in self.waiting:
            if not future.done():
                future.set_result(None)
        self.waiting.clear()

    async def send_bytes(self, frame: bytes) -> None:
        async with self._send:
            await self.websocket.send_bytes(frame)

    async def send_control(self, message: ControlMessage) -> None:
        async with self._send:
            await self.websocket.send_text(encode_control(message))


class Connections:
    """The live sites, by site_id; and the exchanges in flight over them."""

    def __init__(self, *, grace_seconds: float, broker: Broker[Any]) -> None:
        self.grace_seconds = grace_seconds
        self._broker = broker
        self._links: dict[str, SiteLink] = {}
        self._last_seen: dict[str, float] = {}
        self._dropped_at: dict[str, float] = {}
        self._arrived: dict[str, asyncio.Event] = {}
        self._pending: dict[tuple[str, str, int], asyncio.Future[bytes | None]] = {}
        self.policies: dict[str, Policy] = {}
        """What each site said of its disclosure policy when it last connected."""
        self.traffic = {
            "messages_sent": 0,
            "bytes_sent": 0,
            "messages_received": 0,
            "bytes_received": 0,
        }
        """Request and reply frames over every site's socket since central started."""

    # -------------------------------------------------------------- presence

    def count(self) -> int:
        """How many sites are connected now."""
        return len(self._links)

    def online(self, site_id: str) -> bool:
        return site_id in self._links

    def last_seen(self, site_id: str) -> float | None:
        link = self._links.get(site_id)
        return link.last_seen if link else self._last_seen.get(site_id)

    def grace_left(self, site_id: str) -> float | None:
        """Seconds left for a site whose connection dropped to come back before the exchanges
        waiting for it give up; None while it is online or when nothing waits for it."""
        if site_id in self._links:
            return None
        dropped = self._dropped_at.get(site_id)
        if dropped is None:
            return None
        return max(0.0, self.grace_seconds - (time.monotonic() - dropped))

    def link(self, site_id: str) -> SiteLink | None:
        return self._links.get(site_id)

    async def attach(self, site_id: str, websocket: WebSocket) -> SiteLink:
        """A site connected; a connection it already had is closed (the newest one wins)."""
        old = self._links.get(site_id)
        link = SiteLink(site_id=site_id, websocket=websocket)
        self._links[site_id] = link
        self._dropped_at.pop(site_id, None)
        self._arrival(site_id).set()
        if old is not None:
            old.close()
            with contextlib.suppress(Exception):
                await old.websocket.close(code=REPLACED, reason="replaced by a newer connection")
        log.info("site %s connected", site_id, extra={"site_id": site_id})
        self._changed(site_id)
        return link

    def detach(self, link: SiteLink) -> None:
        link.close()
        self._last_seen[link.site_id] = link.last_seen
        if self._links.get(link.site_id) is link:
            del self._links[link.site_id]
            self._dropped_at[link.site_id] = time.monotonic()
            self._arrival(link.site_id).clear()
            log.info("site %s disconnected", link.site_id, extra={"site_id": link.site_id})
            self._changed(link.site_id)

    async def close(self, site_id: str, *, code: int, reason: str) -> None:
        """Close a site's connection from central's side (e.g. the site was disabled)."""
        link = self._links.get(site_id)
        if link is not None:
            with contextlib.suppress(Exception):
                await link.websocket.close(code=code, reason=reason)
            self.detach(link)

    def seen(self, link: SiteLink) -> None:
        link.last_seen = time.time()

    # -------------------------------------------------------------- exchange

    async def exchange(self, site_id: str, frame: bytes) -> bytes:
        """Send a request frame to a site and return its reply frame, across reconnects (the
        reply a :class:`Frame` carrying its message, decoded once on arrival). The reply is
        awaited on one future, which :meth:`deliver` completes, or the socket's closing (with
        None): no task of its own watches the socket."""
        request = message_of(frame)
        if not isinstance(request, Request):
            raise ProtocolError("only requests are sent to sites")
        key = (site_id, request.job_id, request.seq)
        masked = any(op.name == MASKED for op in request.ops)
        lost = False
        loop = asyncio.get_running_loop()
        while True:
            link = await self._wait_for(site_id)
            if lost:
                raise SiteLost("the connection dropped during a masked round; the site is back")
            future: asyncio.Future[bytes | None] = loop.create_future()
            self._pending[key] = future
            link.waiting.add(future)
            try:
                await link.send_bytes(frame)
                self.traffic["messages_sent"] += 1
                self.traffic["bytes_sent"] += len(frame)
                reply = await future
                if reply is not None:
                    return reply
                lost = masked  # the socket closed before the reply came
            except Exception as error:  # noqa: BLE001 - any send failure means this socket is gone
                log.info("site %s: send failed (%s); waiting for it to reconnect", site_id, error)
                # Forget the socket now (its handler may not have noticed yet), so that the
                # next attempt waits for a new one instead of failing on this one again.
                self.detach(link)
                lost = masked
            finally:
                self._pending.pop(key, None)
                link.waiting.discard(future)
                future.cancel()
            await asyncio.sleep(0)  # never spin: let the sockets' handlers run between attempts

    def deliver(self, site_id: str, frame: bytes) -> None:
        """A reply frame arrived from a site: hand it, with its message, to the exchange
        waiting for it (decoded here, once, to find that exchange)."""
        reply = decode(frame)
        self.traffic["messages_received"] += 1
        self.traffic["bytes_received"] += len(frame)
        future = self._pending.get((site_id, reply.job_id, reply.seq))
        if future is None or future.done():
            log.info(
                "site %s: reply to job %s seq %s that nobody awaits",
                site_id,
                reply.job_id,
                reply.seq,
            )
            return
        future.set_result(Frame.of(frame, reply))

    async def _wait_for(self, site_id: str) -> SiteLink:
        link = self._links.get(site_id)
        if link is not None and not link.closed.is_set():
            return link
        if link is not None:
            self.detach(link)
        dropped = self._dropped_at.setdefault(site_id, time.monotonic())
        remaining = self.grace_seconds - (time.monotonic() - dropped)
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrival(site_id).wait(), remaining)
        link = self._links.get(site_id)
        if link is None:
            raise SiteGone(
                f"the site is offline and did not reconnect within {self.grace_seconds:g} s"
            )
        return link

    def _arrival(self, site_id: str) -> asyncio.Event:
        return self._arrived.setdefault(site_id, asyncio.Event())

    def _changed(self, site_id: str) -> None:
        self._broker.publish(SITES, site_id)


class WebSocketTransport:
    """The runtime's transport over the sites' WebSockets."""

    def __init__(self, connections: Connections) -> None:
        self._connections = connections

    async def exchange(self, site: str, frame: bytes) -> bytes:
        return await self._connections.exchange(site, frame)
