"""Background tasks whose failures are never lost, for both portals.

``Tasks.spawn`` runs a coroutine on the loop and keeps a reference to it (the loop keeps only
weak ones). When it fails, the failure is logged with its traceback and handed to
``on_failure(job, what, error)``, which shows it on the job it belongs to. Cancelling a task is
not a failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

OnFailure = Callable[[Any, str, BaseException], None]
"""``(job, what, error)``: ``job`` as given to ``spawn`` (None for a portal-wide task)."""


class Tasks:
    """The portal's background tasks."""

    def __init__(self, on_failure: OnFailure | None = None) -> None:
        self._running: set[asyncio.Task[Any]] = set()
        self._on_failure = on_failure

    def spawn(
        self, coroutine: Coroutine[Any, Any, Any], *, what: str, job: Any = None
    ) -> asyncio.Task[Any]:
        """Run ``coroutine`` in the background; ``what`` names it in the log and on the job."""
        task = asyncio.ensure_future(coroutine)
        self._running.add(task)
        task.add_done_callback(lambda done: self._done(done, what=what, job=job))
        return task

    def __len__(self) -> int:
        return len(self._running)

    async def cancel_all(self) -> None:
        """Cancel every task still running and wait for them to end."""
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[Any], *, what: str, job: Any) -> None:
        self._running.discard(task)
        if task.cancelled() or (error := task.exception()) is None:
            return
        where = f"job {job}: " if job is not None else ""
        log.error("%s%s failed", where, what, exc_info=error)
        if self._on_failure is not None:
            try:
                self._on_failure(job, what, error)
            except Exception:
                log.exception("%scould not show the failure of %s", where, what)
