"""The lane: one thread running a job's calls in order for the event loop (federation.lane)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from federation.lane import Lane


def test_calls_run_in_order_in_one_thread_off_the_loop() -> None:
    lane = Lane("test-lane")
    seen: list[tuple[int, int]] = []

    def note(k: int) -> int:
        seen.append((k, threading.get_ident()))
        return k * k

    async def scenario() -> list[int]:
        loop_thread = threading.get_ident()
        results = await asyncio.gather(*(lane.run(note, k) for k in range(20)))
        assert all(thread != loop_thread for _, thread in seen)
        return list(results)

    try:
        assert asyncio.run(scenario()) == [k * k for k in range(20)]
        assert [k for k, _ in seen] == list(range(20))
        assert len({thread for _, thread in seen}) == 1
    finally:
        lane.close()


def test_an_exception_reaches_the_awaiting_task_and_the_lane_goes_on() -> None:
    lane = Lane("test-lane")

    def fail() -> None:
        raise ValueError("broken")

    async def scenario() -> int:
        with pytest.raises(ValueError, match="broken"):
            await lane.run(fail)
        return await lane.run(int, "7")

    try:
        assert asyncio.run(scenario()) == 7
    finally:
        lane.close()


def test_an_idle_thread_ends_and_the_next_call_starts_another() -> None:
    lane = Lane("test-lane", idle_seconds=0.02)

    async def scenario() -> tuple[threading.Thread, threading.Thread]:
        first = await lane.run(threading.current_thread)
        deadline = time.monotonic() + 5
        while lane.running():
            assert time.monotonic() < deadline, "the idle thread did not end"
            await asyncio.sleep(0.005)
        return first, await lane.run(threading.current_thread)

    first, second = asyncio.run(scenario())
    assert first is not second and not first.is_alive()
    lane.close()


def test_closing_ends_the_thread_after_the_calls_given_and_a_later_call_still_runs() -> None:
    lane = Lane("test-lane")
    gate = threading.Event()

    async def scenario() -> list[str]:
        started = [lane.run(gate.wait), lane.run(str, "after")]
        tasks = [asyncio.ensure_future(c) for c in started]
        await asyncio.sleep(0.01)
        lane.close()  # while a call is running and one is queued
        late = asyncio.ensure_future(lane.run(str, "late"))
        gate.set()
        done = await asyncio.gather(*tasks, late)
        return [str(d) for d in done]

    assert asyncio.run(scenario()) == ["True", "after", "late"]
    deadline = time.monotonic() + 5
    lane.close()
    while lane.running():
        assert time.monotonic() < deadline, "the closed lane's thread did not end"
        time.sleep(0.005)


def test_a_cancelled_wait_drops_the_result_of_its_call() -> None:
    lane = Lane("test-lane")
    gate = threading.Event()

    async def scenario() -> str:
        waiting = asyncio.ensure_future(lane.run(gate.wait))
        await asyncio.sleep(0.01)
        waiting.cancel()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return await lane.run(str, "next")

    try:
        assert asyncio.run(scenario()) == "next"
    finally:
        lane.close()
