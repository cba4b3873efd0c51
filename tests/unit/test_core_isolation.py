"""Isolation by construction: delivering never waits for any connection.

A coroutine suspends either on a bare yield (``asyncio.sleep(0)``: the loop
runs whatever is ready, then resumes it) or on a future (a real wait, which
one stalled connection could hold for as long as it likes).  Driving the
delivery coroutines by hand shows every suspension is a bare yield, with a
stalled connection present, and that a burst yields once per queue fill,
not once per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from eventrouter.server.broker.base import EmitItem
from eventrouter.server.broker.memory import MemoryBroker
from eventrouter.server.broker.redis import RedisBroker
from eventrouter.server.broker.redis_config import parse_broker_url
from eventrouter.server.broker.redis_scripts import encode_route
from eventrouter.server.core.connections import SessionScopedConnection, UserScopedConnection
from eventrouter.server.core.filters import ALL_CONNECTIONS
from eventrouter.server.core.queue import QueueLimits
from eventrouter.server.core.router import EventRouter, RouterLimits
from tests.support.model import ephemeral_payload, update_payload


def suspensions(coroutine: Coroutine[Any, Any, Any]) -> tuple[list[Any], Any]:
    """Run a coroutine to its end by hand: what it suspended on each time, and its result.

    A bare yield hands ``None`` to the driver; awaiting a future hands the
    future.  Nothing else runs meanwhile, so a coroutine that needed another
    task (a writer draining a queue) to make progress would never finish.
    """
    seen: list[Any] = []
    while True:
        try:
            seen.append(coroutine.send(None))
        except StopIteration as done:
            return seen, done.value
        if len(seen) > 10_000:
            coroutine.close()
            raise AssertionError("the coroutine does not finish without other tasks running")


def stalled_router(max_events: int = 16) -> tuple[EventRouter, UserScopedConnection]:
    router = EventRouter(RouterLimits(queue=QueueLimits(max_events=max_events)))
    stalled = UserScopedConnection("sam")  # registered, and nobody ever drains it
    router.add_connection("sam", stalled)
    return router, stalled


def test_a_batch_through_a_stalled_queue_never_waits() -> None:
    router, stalled = stalled_router()
    other = SessionScopedConnection("bea", session_id="s1")
    router.add_connection("bea", other)
    items = []
    for i in range(200):  # far more than the stalled queue can hold
        items.append(EmitItem("sam", update_payload(f"s{i}"), ALL_CONNECTIONS, None))
        items.append(EmitItem("bea", ephemeral_payload(f"b{i}"), ALL_CONNECTIONS, None))
    seen, results = suspensions(MemoryBroker(router).emit_many(items))
    assert all(s is None for s in seen), f"waited on {[s for s in seen if s is not None]}"
    # Per queue (nobody drains bea's either), one turn when it filled to half
    # and one when it went over its limits.  Not one per event.
    assert len(seen) <= 2 * 2, seen
    assert stalled.queue is not None
    assert stalled.queue.closure is not None
    assert [r.reached for r in results[1::2]] == [1] * 200, "bea got every one of hers"
    assert router.get_connections("sam") == []


def test_single_emits_to_a_stalled_user_are_not_held() -> None:
    router, stalled = stalled_router()
    broker = MemoryBroker(router)
    held = 0
    for i in range(30):  # past half full and over the limits, inside the overdraft
        seen, results = suspensions(
            broker.emit_many([EmitItem("sam", update_payload(f"s{i}"), ALL_CONNECTIONS, None)])
        )
        assert all(s is None for s in seen)
        held += len(seen)
        assert results[0].reached == 1
    assert held <= 2, "a single emit yields at most once per fill of a queue"
    assert stalled.queue is not None
    assert stalled.queue.over_limits


def _batch(offsets: range, route: bytes) -> bytes:
    """One EMIT call's message (redis_scripts): ``b<epoch>\\n`` then its updates."""
    events = b""
    for offset in offsets:
        payload = update_payload(f"s{offset}").SerializeToString()
        events += b"u%d:%d:%d:%s%s" % (offset, len(route), len(payload), route, payload)
    return b"bep0000000000\n" + events


@pytest.mark.parametrize("per_message", [1, 199], ids=["message-per-update", "one-message"])
def test_the_cluster_reader_only_yields(per_message: int) -> None:
    # The Redis subscriber calls on_message for each message and awaits what
    # it returns: with a stalled queue that is at most a bare yield, whether
    # the updates come one per message or all in one (an EmitBatch's run).
    # (No Redis is needed: messages are handed to the handler as they would be.)
    router, stalled = stalled_router()
    settings = parse_broker_url("redis://127.0.0.1:1/0")
    assert settings is not None
    broker = RedisBroker(router, settings)
    watch = broker._watch("sam")
    route = encode_route(ALL_CONNECTIONS, None)
    returned = []
    for first in range(1, 200, per_message):
        message = _batch(range(first, min(first + per_message, 200)), route)
        pending = broker.on_message(watch.keys.channel, message)
        if pending is not None:
            seen, _ = suspensions(pending)
            returned.append(seen)
    assert all(s is None for seen in returned for s in seen)
    assert len(returned) <= 2
    assert watch.last == 199
    assert stalled.queue is not None
    assert stalled.queue.closure is not None


def test_nothing_here_needs_a_running_writer() -> None:
    # The same batch with the loop running and a writer that never runs: it
    # completes (a wait on the writer would hang until the timeout).
    async def scenario() -> None:
        router, _ = stalled_router()
        items = [
            EmitItem("sam", update_payload(f"s{i}"), ALL_CONNECTIONS, None) for i in range(100)
        ]
        async with asyncio.timeout(5):
            await MemoryBroker(router).emit_many(items)

    asyncio.run(scenario())
