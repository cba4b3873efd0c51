"""The Redis broker when Redis fails: each test runs its own redis-server and breaks it.

* Redis killed: emits and opens fail with BrokerUnavailable, health turns
  false; Redis back (empty): health true, emits flow, streams opened in the
  lost epoch are ended (UNAVAILABLE) and their resume says EPOCH_CHANGED.
* Subscription interrupted, data kept: the missed updates are delivered from
  the log, in order, once; a gap the log no longer holds ends the streams.
* The control stream carries Disconnect to the other nodes, missed or not.

The subscriber's reconnection is held back through a gate on its connect
function, so "messages published while it was away" is certain, not a race.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eventrouter.server.broker.base import BrokerUnavailable
from eventrouter.server.broker.redis import RedisBroker
from eventrouter.server.core.history import ResumeFailure
from eventrouter.server.core.queue import CloseReason
from eventrouter.server.core.router import EventRouter, ResumeStatus
from eventrouter.v1 import router_service_pb2 as pb
from tests.brokers.conftest import TEST_OPTIONS, make_broker
from tests.brokers.harness import Node, eventually
from tests.conftest import require_tool
from tests.support.redis import REDIS_SERVER, RedisProcess, command, free_port


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    require_tool(REDIS_SERVER is not None, "redis-server")
    server = RedisProcess(tmp_path / "redis")
    try:
        server.start()
        yield server
    finally:
        server.stop()


class Gate:
    """Holds the subscriber's (re)connections while closed."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()

    def wrap(self, connect: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def gated(*args: Any) -> Any:
            if not self.open.is_set():
                raise ConnectionError("gate closed by the test")
            return await connect(*args)

        return gated


Make = Callable[..., Awaitable[tuple[Node, Gate]]]


@pytest.fixture
async def make(redis: RedisProcess) -> AsyncIterator[Make]:
    brokers: list[RedisBroker] = []

    async def start(
        node_id: str, url: str | None = None, options: str = TEST_OPTIONS
    ) -> tuple[Node, Gate]:
        broker = make_broker(EventRouter(node_id=node_id), url or redis.url, "f", options)
        assert isinstance(broker, RedisBroker)
        gate = Gate()
        broker._connect = gate.wrap(broker._connect)  # type: ignore[method-assign,assignment]
        await broker.start()
        brokers.append(broker)
        return Node(broker), gate

    try:
        yield start
    finally:
        for broker in brokers:
            await broker.close()


def kill_subscribers(redis: RedisProcess) -> None:
    command(redis.port, "CLIENT", "KILL", "TYPE", "pubsub")


async def bounded(awaitable: Awaitable[Any]) -> Any:
    """No hang: anything the broker promises to bound must end well within this."""
    async with asyncio.timeout(10):
        return await awaitable


async def test_redis_down_fails_fast_and_recovery_needs_no_restart(
    redis: RedisProcess, make: Make
) -> None:
    (node, _) = await make("a")
    assert node.broker.healthy()
    inbox = await node.open("u1")
    before = await node.update("u1", "before")
    await inbox.has_update("before")
    redis.kill()
    with pytest.raises(BrokerUnavailable):
        await bounded(node.update("u1", "during"))
    with pytest.raises(BrokerUnavailable):
        await bounded(node.open("u2"))
    await eventually(_async(lambda: not node.broker.healthy()), "health to turn false")
    assert not inbox.closed  # nothing is known to be lost yet

    redis.start()  # empty: the history is gone
    await eventually(_async(node.broker.healthy), "health to turn true again")
    await eventually(_succeeds(lambda: node.update("u1", "after")), "emits to flow again")
    # The stream opened in the lost epoch ends (UNAVAILABLE), and its resume says why.
    await inbox.until(lambda: inbox.closed, "the old-epoch stream to end")
    assert inbox.conn.queue is not None
    assert inbox.conn.queue.closure is not None
    assert inbox.conn.queue.closure.reason is CloseReason.SHUTDOWN
    node.close(inbox)
    again = await node.open("u1", resume_from=(before.offset, before.epoch))
    assert again.opened.failure is ResumeFailure.EPOCH_CHANGED
    await node.update("u1", "later")
    await again.has_update("later")


async def test_start_while_redis_is_down_then_serve_once_it_is_up(
    tmp_path: Path, make: Make
) -> None:
    absent = RedisProcess(tmp_path / "later", free_port(below=55536))
    # A short timeout: start() waits that long (twice) for Redis before serving anyway.
    (node, _) = await make("a", absent.url, TEST_OPTIONS.replace("timeout=1", "timeout=0.3"))
    try:
        assert not node.broker.healthy()
        with pytest.raises(BrokerUnavailable):
            await bounded(node.open("u1"))
        absent.start()
        await eventually(_async(node.broker.healthy), "health once Redis is up")
        inbox = await node.open("u1")
        await node.update("u1", "hello")
        await inbox.has_update("hello")
    finally:
        absent.stop()


async def test_updates_missed_by_a_broken_subscription_come_from_the_log(
    redis: RedisProcess, make: Make
) -> None:
    (a, gate), (b, _) = await make("a"), await make("b")
    inbox = await a.open("u1")
    await b.update("u1", "e0")
    await inbox.has_update("e0")
    gate.open.clear()
    kill_subscribers(redis)
    await eventually(_async(lambda: not a.broker.healthy()), "a's subscriber to be down")
    for i in range(1, 6):
        await b.update("u1", f"e{i}")  # published while a is not subscribed
    gate.open.set()
    await b.update("u1", "e6")
    await inbox.until(lambda: len(inbox.updates) == 7, "every update")
    assert inbox.updates == [f"e{i}" for i in range(7)]
    assert [g.offset for g in inbox.got] == list(range(1, 8))
    assert not inbox.closed


async def test_a_gap_the_log_lost_ends_the_streams_never_skips(
    redis: RedisProcess, make: Make
) -> None:
    (a, gate), (b, _) = await make("a"), await make("b")
    inbox = await a.open("u1")
    bystander = await a.open("u2")
    first = await b.update("u1", "e0")
    await inbox.has_update("e0")
    gate.open.clear()
    kill_subscribers(redis)
    await eventually(_async(lambda: not a.broker.healthy()), "a's subscriber to be down")
    await b.update("u1", "missed")
    command(redis.port, "DEL", "f:{u1}:log")  # the history of the gap is gone
    gate.open.set()
    await inbox.until(lambda: inbox.closed, "the stream to end")
    assert inbox.updates == ["e0"]
    assert not bystander.closed
    a.close(inbox)
    resumed = await a.open("u1", resume_from=(first.offset, first.epoch))
    assert resumed.opened.status is ResumeStatus.FAILED
    assert resumed.opened.failure is ResumeFailure.TOO_OLD


async def test_a_reset_history_ends_streams_of_the_old_epoch(
    redis: RedisProcess, make: Make
) -> None:
    (a, _), (b, _) = await make("a"), await make("b")
    inbox = await a.open("u1")
    first = await b.update("u1", "e0")
    await inbox.has_update("e0")
    command(redis.port, "FLUSHALL")  # Redis lost it (here without disconnecting anyone)
    fresh = await b.update("u1", "e1")
    assert fresh.epoch != first.epoch
    assert fresh.offset == 1
    await inbox.until(lambda: inbox.closed, "the old-epoch stream to end")
    assert inbox.updates == ["e0"]
    a.close(inbox)
    resumed = await a.open("u1", resume_from=(first.offset, first.epoch))
    assert resumed.opened.failure is ResumeFailure.EPOCH_CHANGED
    assert (resumed.opened.offset, resumed.opened.epoch) == (1, fresh.epoch)


async def test_disconnect_reaches_the_other_nodes_even_after_a_missed_message(
    redis: RedisProcess, make: Make
) -> None:
    (a, _), (b, gate) = await make("a"), await make("b")
    seen: dict[str, list[str]] = {"a": [], "b": []}
    for name, node in (("a", a), ("b", b)):

        def apply(request: pb.DisconnectRequest, name: str = name) -> int:
            seen[name].append(request.user_id)
            return 0

        node.broker.disconnect_locally = apply
    await bounded(a.broker.broadcast_disconnect(pb.DisconnectRequest(user_id="u1")))
    await eventually(_async(lambda: seen["b"] == ["u1"]), "b to apply the Disconnect")
    gate.open.clear()
    kill_subscribers(redis)
    await eventually(_async(lambda: not b.broker.healthy()), "b's subscriber to be down")
    await a.broker.broadcast_disconnect(pb.DisconnectRequest(user_id="u2"))
    gate.open.set()
    await eventually(_async(lambda: seen["b"] == ["u1", "u2"]), "b to apply the missed one")
    assert seen["a"] == []  # the origin applied it itself, before broadcasting


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def run() -> bool:
        return check()

    return run


def _succeeds(attempt: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[bool]]:
    """Try again (an emit, say) until it is accepted."""

    async def run() -> bool:
        try:
            await attempt()
        except BrokerUnavailable:
            return False
        return True

    return run
