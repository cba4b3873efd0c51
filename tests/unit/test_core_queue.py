"""A connection's bounded queue: overflow policy, byte limit, write budget, backlog."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventrouter.server.core.connections import UserScopedConnection
from eventrouter.server.core.queue import CROWDED, CloseReason, ConnectionQueue, QueueLimits
from eventrouter.server.core.router import EventRouter, RouterLimits
from tests.support.model import ModelQueue, update_payload


def frame(name: str, size: int = 0) -> bytes:
    """An opaque frame (the queue never parses frames): ``name`` padded to ``size``."""
    return name.encode().ljust(size, b".")


def drain_all(queue: ConnectionQueue) -> list[bytes]:
    out: list[bytes] = []
    while queue.has_pending():
        out.extend(queue.drain())
    return out


def names(frames: list[bytes]) -> list[str]:
    return [f.rstrip(b".").decode() for f in frames]


def test_oldest_ephemerals_are_dropped_first_and_counted() -> None:
    queue = ConnectionQueue(QueueLimits(max_events=4))
    assert queue.push_ephemeral(frame("e1"))
    assert queue.push_update(frame("u1"))
    assert queue.push_ephemeral(frame("e2"))
    assert queue.push_ephemeral(frame("e3"))
    assert queue.push_update(frame("u2"))
    assert queue.dropped_ephemeral == 1
    assert queue.push_ephemeral(frame("e4"))
    assert queue.dropped_ephemeral == 2
    assert queue.closure is None
    assert names(drain_all(queue)) == ["u1", "e3", "u2", "e4"]


def test_new_ephemeral_is_dropped_when_only_updates_are_pending() -> None:
    queue = ConnectionQueue(QueueLimits(max_events=2))
    assert queue.push_update(frame("u1"))
    assert queue.push_update(frame("u2"))
    assert not queue.push_ephemeral(frame("e1"))
    assert queue.dropped_ephemeral == 1
    assert queue.closure is None, "a dropped ephemeral must not close the connection"
    assert queue.depth == 2
    assert names(drain_all(queue)) == ["u1", "u2"]


def test_update_overflow_closes_as_too_slow() -> None:
    queue = ConnectionQueue(QueueLimits(max_events=2))
    assert queue.push_update(frame("u1"))
    assert queue.push_update(frame("u2"))
    assert not queue.push_update(frame("u3"))
    assert queue.closure is not None
    assert queue.closure.reason is CloseReason.TOO_SLOW
    assert "too slow" in queue.closure.message
    # Closed for good: nothing more is accepted, no update was silently dropped.
    assert not queue.push_update(frame("u4"))
    assert not queue.push_ephemeral(frame("e1"))
    assert queue.dropped_ephemeral == 0


def test_byte_limit() -> None:
    queue = ConnectionQueue(QueueLimits(max_events=100, max_bytes=20))
    assert queue.push_update(frame("u1", 10))
    assert queue.push_ephemeral(frame("e1", 6))
    assert queue.pending_bytes == 16
    # 10 + 6 + 8 > 20: the ephemeral makes room for the update.
    assert queue.push_update(frame("u2", 8))
    assert queue.dropped_ephemeral == 1
    assert queue.pending_bytes == 18
    # An ephemeral that does not fit beside the updates is dropped.
    assert not queue.push_ephemeral(frame("e2", 3))
    assert queue.dropped_ephemeral == 2
    assert queue.closure is None
    # An update that does not fit closes the queue.
    assert not queue.push_update(frame("u3", 3))
    assert queue.closure is not None
    assert queue.closure.reason is CloseReason.TOO_SLOW


def test_drain_respects_max_write_bytes() -> None:
    queue = ConnectionQueue(QueueLimits(max_write_bytes=10))
    for name in ("a", "b", "c"):
        queue.push_update(frame(name, 4))
    queue.push_update(frame("big", 25))
    queue.push_update(frame("d", 4))
    assert names(queue.drain()) == ["a", "b"]  # 8 bytes; a third frame would make 12
    assert names(queue.drain()) == ["c"]  # the big one does not fit beside it
    assert names(queue.drain()) == ["big"]  # alone, a frame over budget still goes
    assert names(queue.drain()) == ["d"]
    assert queue.drain() == []
    assert queue.pending_bytes == 0
    assert queue.pending_updates == 0
    assert queue.delivered == 5


def test_backlog_is_not_counted_and_goes_first() -> None:
    queue = ConnectionQueue(QueueLimits(max_events=2, max_bytes=100, max_write_bytes=1000))
    queue.push_backlog([frame(f"r{i}", 30) for i in range(10)])  # 300 bytes, 10 events
    assert queue.depth == 10
    assert queue.pending_bytes == 0
    assert queue.push_update(frame("u1", 30))
    assert queue.push_update(frame("u2", 30))
    assert queue.closure is None
    assert names(drain_all(queue)) == [*(f"r{i}" for i in range(10)), "u1", "u2"]


async def test_wait_wakes_on_push_and_on_close() -> None:
    queue = ConnectionQueue()
    waiter = asyncio.create_task(queue.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    queue.push_ephemeral(frame("e"))
    async with asyncio.timeout(5):
        await waiter
    queue.drain()
    waiter = asyncio.create_task(queue.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    queue.close(CloseReason.SHUTDOWN, "bye")
    async with asyncio.timeout(5):
        await waiter
    assert queue.closure is not None
    assert queue.closure.reason is CloseReason.SHUTDOWN


def test_first_closure_wins() -> None:
    queue = ConnectionQueue()
    queue.close(CloseReason.SHUTDOWN, "first")
    queue.close(CloseReason.TOO_SLOW, "second")
    assert queue.closure is not None
    assert (queue.closure.reason, queue.closure.message) == (CloseReason.SHUTDOWN, "first")


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        QueueLimits(max_events=0)


pushes = st.lists(
    st.one_of(
        st.tuples(st.booleans(), st.integers(1, 40)),  # (is_update, size)
        st.just(None),  # drain everything
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    max_events=st.integers(1, 8),
    max_bytes=st.integers(1, 120),
    ops=pushes,
)
def test_queue_matches_the_policy_model(
    max_events: int, max_bytes: int, ops: list[tuple[bool, int] | None]
) -> None:
    queue = ConnectionQueue(QueueLimits(max_events=max_events, max_bytes=max_bytes))
    model = ModelQueue(max_events, max_bytes)
    for i, op in enumerate(ops):
        if op is None:
            drained = drain_all(queue)
            assert [len(f) for f in drained] == [size for _, size in model.items]
            model.items.clear()
            model.bytes = 0
            continue
        is_update, size = op
        data = frame(str(i), size)[:size] if size >= len(str(i)) else b"." * size
        push = queue.push_update if is_update else queue.push_ephemeral
        pushed = push(data)
        assert bool(pushed) == model.push(is_update, size)
        if pushed:
            # CROWDED exactly when the push left the queue half full or more.
            half_full = len(model.items) * 2 >= max_events or model.bytes * 2 >= max_bytes
            assert (pushed == CROWDED) == half_full == queue.crowded
        assert (queue.closure is not None) == model.closed
        assert queue.dropped_ephemeral == model.dropped
        if not model.closed:
            assert queue.depth == len(model.items) <= max_events
            assert queue.pending_bytes == model.bytes <= max_bytes
            assert queue.pending_updates == model.pending_updates


def test_crowded_queues_are_tracked_once_and_forgotten_with_their_connection() -> None:
    # An embedding that emits without ever awaiting let_writers_drain() (the
    # sync API) must not make the router remember a queue once per delivery.
    router = EventRouter(RouterLimits(queue=QueueLimits(max_events=100)))
    stalled = UserScopedConnection("u")
    router.add_connection("u", stalled)
    for i in range(90):
        router.emit_update("u", update_payload(f"u{i}"))
    assert router.crowded
    assert len(router._crowded) == 1  # one entry, not one per delivery past half full
    router.remove_connection("u", stalled)
    assert not router.crowded
