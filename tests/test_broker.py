"""The event broker both portals share: topics, order, thread hops, and listeners."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from portal_common.broker import Broker


def test_a_subscriber_gets_its_topics_messages_in_order_and_nothing_else() -> None:
    async def scenario() -> list[str]:
        broker: Broker[str] = Broker()
        async with broker.subscribe(1) as queue:
            assert broker.subscribers(1) == 1
            for message in ("a", "b", "c"):
                broker.publish(1, message)
            broker.publish(2, "other job")
            got = [queue.get_nowait() for _ in range(3)]
            assert queue.empty()
        assert broker.subscribers(1) == 0
        broker.publish(1, "nobody listens")  # no topic is kept for it
        assert broker._topics == {}
        return got

    assert asyncio.run(scenario()) == ["a", "b", "c"]


def test_a_message_from_a_worker_thread_is_delivered_on_the_loop() -> None:
    seen: list[tuple[object, str, int]] = []

    async def scenario() -> int:
        broker: Broker[str] = Broker()
        broker.bind(asyncio.get_running_loop())
        broker.listen(lambda topic, m: seen.append((topic, m, threading.get_ident())))
        async with broker.subscribe("job") as queue:
            await asyncio.to_thread(broker.publish, "job", "from a thread")
            assert await asyncio.wait_for(queue.get(), 5) == "from a thread"
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert seen == [("job", "from a thread", loop_thread)]


def test_listeners_run_before_subscribers_wake_and_one_failing_stops_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorded: list[str] = []

    def broken(topic: object, message: str) -> None:
        raise RuntimeError("listener bug")

    async def scenario() -> str:
        broker: Broker[str] = Broker()
        broker.listen(broken)
        broker.listen(lambda topic, message: recorded.append(message))
        async with broker.subscribe(3) as queue:
            broker.publish(3, "state")
            return await queue.get()

    with caplog.at_level(logging.ERROR):
        assert asyncio.run(scenario()) == "state"
    assert recorded == ["state"]
    assert any("listener failed" in r.getMessage() for r in caplog.records)
