"""Background tasks: a failure is logged and handed to the portal to show on its job; a
cancelled task is not a failure."""

from __future__ import annotations

import asyncio
import logging

import pytest

from portal_common.tasks import Tasks


def test_a_failing_task_is_logged_and_shown_on_its_job(caplog: pytest.LogCaptureFixture) -> None:
    shown: list[tuple[object, str, str]] = []

    async def fails() -> None:
        raise ConnectionError("central went away")

    async def scenario() -> None:
        tasks = Tasks(on_failure=lambda job, what, error: shown.append((job, what, str(error))))
        task = tasks.spawn(fails(), what="sending the heartbeat", job="7")
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)  # done callbacks run
        assert len(tasks) == 0

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    assert shown == [("7", "sending the heartbeat", "central went away")]
    [record] = [r for r in caplog.records if "sending the heartbeat failed" in r.getMessage()]
    assert record.exc_info is not None


def test_cancelling_is_not_a_failure() -> None:
    shown: list[object] = []

    async def scenario() -> None:
        tasks = Tasks(on_failure=lambda *failure: shown.append(failure))
        tasks.spawn(asyncio.sleep(60), what="sleeping")
        await asyncio.sleep(0)
        await tasks.cancel_all()
        assert len(tasks) == 0

    asyncio.run(scenario())
    assert shown == []
