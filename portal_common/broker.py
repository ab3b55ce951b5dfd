"""One in-process event broker for both portals: pages subscribe to a topic (a job), services
publish to it, from the event loop or from a worker thread.

A topic is any hashable key (central uses a job's id, the site its job's id or ``"connection"``).
Subscribers get every message published to their topic after they subscribed, in order, on an
unbounded queue; a listener (central's site notifier) sees every message of every topic. A
message published from another thread hops to the loop first, so queues and listeners are only
ever touched there. Besides its subscribers, the broker keeps only how many messages each topic
has had (:meth:`Broker.count`), an integer per topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
M = TypeVar("M")

Listener = Callable[[Hashable, M], None]


class Broker(Generic[M]):
    """Topics, their subscribers' queues, and listeners to every topic."""

    def __init__(self) -> None:
        self._topics: dict[Hashable, set[asyncio.Queue[M]]] = {}
        self._listeners: list[Listener[M]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = threading.get_ident()
        self._counts: dict[Hashable, int] = {}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The portal's event loop (called once at start-up, on it)."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def listen(self, listener: Listener[M]) -> None:
        """Call ``listener(topic, message)`` on the loop for every message published."""
        self._listeners.append(listener)

    def publish(self, topic: Hashable, message: M) -> None:
        """Hand ``message`` to the topic's subscribers and to every listener; safe from any
        thread (it hops to the loop)."""
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread:
            loop.call_soon_threadsafe(self._deliver, topic, message)
        else:
            self._deliver(topic, message)

    def subscribers(self, topic: Hashable) -> int:
        """How many subscribers the topic has now."""
        return len(self._topics.get(topic, ()))

    @contextlib.asynccontextmanager
    async def subscribe(self, topic: Hashable) -> AsyncIterator[asyncio.Queue[M]]:
        """A queue of the topic's messages for as long as the block runs."""
        queue: asyncio.Queue[M] = asyncio.Queue()
        self._topics.setdefault(topic, set()).add(queue)
        try:
            yield queue
        finally:
            queues = self._topics.get(topic)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._topics[topic]

    def count(self, topic: Hashable) -> int:
        """How many messages the topic has had. A page that read this before what it shows,
        and whose stream subscribes while it is unchanged, has missed nothing; otherwise its
        stream first sends the page's live blocks as they are now (:meth:`missed_since`)."""
        return self._counts.get(topic, 0)

    def missed_since(self, topic: Hashable, seen: int | None) -> bool:
        """Whether the topic had a message since its count was ``seen`` (None: not known)."""
        return seen is None or self.count(topic) != seen

    def _deliver(self, topic: Hashable, message: M) -> None:
        self._counts[topic] = self._counts.get(topic, 0) + 1
        # Listeners first, in the order they were added: a subscriber woken by the message
        # then reads what they recorded (central's progress, the event log).
        for listener in self._listeners:
            try:
                listener(topic, message)
            except Exception:  # one listener's bug must not stop the others, nor the publisher
                log.exception("an event listener failed on topic %r", topic)
        for queue in list(self._topics.get(topic, ())):
            queue.put_nowait(message)
