"""One thread that runs a job's calls in order for the event loop: central's own part of a
job, a site's answers to one.

``asyncio.to_thread`` hands each call to a pool through ``concurrent.futures``: after the call
its thread still runs a semaphore, a condition and the chained futures' callbacks in Python,
right when the loop, woken to send the reply, wants the GIL back, so the two often take turns
through the kernel. A lane's thread waits on a plain queue; when a call returns it schedules
the result on the loop and goes straight back to waiting (blocking there releases the GIL),
with nothing in Python between the two. Calls run one at a time, in the order given: a job's
calls at central come one after another (parallel chains share each round trip's request),
and a site's runner answers one request of a job at a time anyway.

The thread starts with the first call and ends after ``idle_seconds`` without one (the next
call starts another); :meth:`close` ends it once the calls given have run.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
IDLE_SECONDS = 30.0
_STOP = object()


class Lane:
    """Runs ``fn(*args)`` in its own thread, one call at a time, for ``await lane.run(...)``."""

    def __init__(self, name: str, *, idle_seconds: float = IDLE_SECONDS) -> None:
        self.name = name
        self._idle_seconds = idle_seconds
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """The result of ``fn(*args, **kwargs)``, called in the lane's thread (its exception
        raised here). Cancelling the wait does not stop a call that has started, as with
        ``asyncio.to_thread``; its result is then dropped."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._queue.put((fn, args, kwargs, loop, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()
        return await future

    def running(self) -> bool:
        """Whether the lane's thread is alive (it ends when idle)."""
        with self._lock:
            return self._thread is not None

    def close(self) -> None:
        """End the thread once the calls already given have run (a later call starts one)."""
        with self._lock:
            if self._thread is not None:
                self._queue.put(_STOP)

    def _serve(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._idle_seconds)
            except queue.Empty:
                item = None
            if item is None or item is _STOP:
                with self._lock:  # a call given meanwhile is served first: none is left behind
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            fn, args, kwargs, loop, future = item
            del item
            outcome: tuple[Any, BaseException | None]
            try:
                outcome = (fn(*args, **kwargs), None)
            except BaseException as error:  # noqa: BLE001 - handed to the awaiting task
                outcome = (None, error)
            del fn, args, kwargs
            try:
                loop.call_soon_threadsafe(_settle, future, *outcome)
            except RuntimeError:  # the loop closed meanwhile: nobody waits any more
                pass
            del future, outcome, loop


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the waiting task was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
