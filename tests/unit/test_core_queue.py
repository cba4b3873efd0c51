"""A connection's bounded queue: overflow policy, byte limit, write budget, backlog."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventrouter.server.core.connections import UserScopedConnection
from eventrouter.server.core.queue import (
    CROWDED,
    OVERDRAFT,
    CloseReason,
    ConnectionQueue,
    QueueLimits,
)
from eventrouter.server.core.router import EventRouter, RouterLimits
from tests.support.model import ModelQueue, update_payload, wait_until


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
    queue = ConnectionQueue(QueueLimits(max_events=4, overflow_grace_s=0))
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
    queue = ConnectionQueue(QueueLimits(max_events=2, overflow_grace_s=0))
    assert queue.push_update(frame("u1"))
    assert queue.push_update(frame("u2"))
    assert not queue.push_ephemeral(frame("e1"))
    assert queue.dropped_ephemeral == 1
    assert queue.closure is None, "a dropped ephemeral must not close the connection"
    assert queue.depth == 2
    assert names(drain_all(queue)) == ["u1", "u2"]


def test_update_overflow_closes_as_too_slow() -> None:
    queue = ConnectionQueue(QueueLimits(max_events=2, overflow_grace_s=0))
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
    queue = ConnectionQueue(QueueLimits(max_events=100, max_bytes=20, overflow_grace_s=0))
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


class Retained:
    """A history entry as the queue sees it: its frame is built when taken."""

    built = 0

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size

    def frame(self) -> bytes:
        Retained.built += 1
        return frame(self.name, self.size)


def test_replay_is_not_counted_goes_first_and_is_built_as_taken() -> None:
    queue = ConnectionQueue(QueueLimits(max_events=2, max_bytes=100, max_write_bytes=100))
    Retained.built = 0
    queue.push_replay([Retained(f"r{i}", 30) for i in range(10)])  # 300 bytes, 10 events
    assert queue.depth == 10
    assert queue.pending_bytes == 0
    assert Retained.built == 0, "replay frames are built when the writer takes them"
    assert queue.push_update(frame("u1", 30))
    assert queue.push_update(frame("u2", 30))
    assert queue.closure is None
    first = queue.drain()
    # One write's worth (3 x 30 bytes); the frame that did not fit is kept, not rebuilt.
    assert names(first) == ["r0", "r1", "r2"]
    assert Retained.built == 4
    assert names(drain_all(queue)) == [*(f"r{i}" for i in range(3, 10)), "u1", "u2"]
    assert Retained.built == 10


def test_closing_lets_pending_frames_and_replay_go() -> None:
    queue = ConnectionQueue(QueueLimits(max_events=10))
    queue.push_replay([Retained("r0", 10)])
    queue.push_update(frame("u1", 10))
    queue.close(CloseReason.SHUTDOWN, "bye")
    assert (queue.depth, queue.pending_bytes, queue.pending_updates) == (0, 0, 0)
    assert not queue.has_pending()


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
    in_grace=st.booleans(),
    ops=pushes,
)
def test_queue_matches_the_policy_model(
    max_events: int, max_bytes: int, in_grace: bool, ops: list[tuple[bool, int] | None]
) -> None:
    # in_grace: a grace that never ends here (twice the limits while over
    # them), or none at all (exactly the limits).
    grace = 3600.0 if in_grace else 0.0
    queue = ConnectionQueue(
        QueueLimits(max_events=max_events, max_bytes=max_bytes, overflow_grace_s=grace)
    )
    overdraft = OVERDRAFT if in_grace else 1
    model = ModelQueue(max_events, max_bytes, overdraft)
    over = False  # the queue went over its limits since it was last drained
    for i, op in enumerate(ops):
        if op is None:
            drained = drain_all(queue)
            assert [len(f) for f in drained] == [size for _, size in model.items]
            model.items.clear()
            model.bytes = 0
            over = False
            continue
        is_update, size = op
        data = frame(str(i), size)[:size] if size >= len(str(i)) else b"." * size
        count, nbytes, dropped = len(model.items), model.bytes, model.dropped
        under_limits = count < max_events and nbytes + size <= max_bytes
        push = queue.push_update if is_update else queue.push_ephemeral
        pushed = push(data)
        assert bool(pushed) == model.push(is_update, size)
        now_over = len(model.items) > max_events or model.bytes > max_bytes
        if pushed:
            # CROWDED: this push filled the queue to half, or took it over its limits.
            if under_limits:
                half_count, half_bytes = (max_events + 1) // 2, (max_bytes + 1) // 2
                crowded = count == half_count - 1 or nbytes < half_bytes <= nbytes + size
            else:
                crowded = now_over and not over
            assert (pushed == CROWDED) == crowded
        # Over since the last drain, unless the ephemerals this push dropped
        # brought the queue back within its limits (that ends it too).
        over = now_over or (over and model.dropped == dropped)
        assert queue.over_limits == (over and not model.closed)
        assert (queue.closure is not None) == model.closed
        assert queue.dropped_ephemeral == model.dropped
        assert queue.depth == len(model.items) <= max_events * overdraft
        assert queue.pending_bytes == model.bytes <= max_bytes * overdraft
        assert queue.pending_updates == model.pending_updates


def test_a_filling_queue_asks_for_one_turn_per_fill() -> None:
    # The router wants a turn for the writers when a queue fills to half, once
    # per fill: a stalled queue does not make a burst yield per event.
    router = EventRouter(RouterLimits(queue=QueueLimits(max_events=100)))
    stalled = UserScopedConnection("u")
    router.add_connection("u", stalled)
    wanted = []
    for i in range(90):
        router.emit_update("u", update_payload(f"u{i}"))
        wanted.append(router.turn_wanted)
        router.turn_wanted = False
    assert [i for i, w in enumerate(wanted) if w] == [49]
    assert stalled.queue is not None
    stalled.queue.drain()
    for i in range(90, 140):
        router.emit_update("u", update_payload(f"u{i}"))
        wanted.append(router.turn_wanted)
        router.turn_wanted = False
    assert [i for i, w in enumerate(wanted) if w] == [49, 139]


# ---------------------------------------------------------------------------
# Overdraft: a burst may take a queue over its limits while its writer catches up
# ---------------------------------------------------------------------------


def test_within_the_grace_a_queue_holds_up_to_twice_its_limits() -> None:
    queue = ConnectionQueue(QueueLimits(max_events=4, overflow_grace_s=3600))
    pushed = [queue.push_update(frame(f"u{i}")) for i in range(2 * 4)]
    assert all(pushed)
    assert pushed[4] == CROWDED, "going over the limits asks for a writer's turn, once"
    assert pushed[5:] == [1, 1, 1]
    assert queue.over_limits
    assert queue.depth == 8
    # Twice the limits is the hard bound: an ephemeral is dropped, an update closes.
    assert not queue.push_ephemeral(frame("e"))
    assert queue.dropped_ephemeral == 1
    assert not queue.push_update(frame("u8"))
    assert queue.closure is not None
    assert queue.closure.reason is CloseReason.TOO_SLOW
    assert queue.depth == 0, "a closed queue lets its frames go"


def test_a_writer_that_catches_up_ends_the_overdraft() -> None:
    queue = ConnectionQueue(QueueLimits(max_events=4, overflow_grace_s=3600))
    for i in range(6):
        assert queue.push_update(frame(f"u{i}"))
    assert queue.over_limits
    assert names(queue.drain()) == [f"u{i}" for i in range(6)]
    assert not queue.over_limits
    # A later burst gets a grace of its own.
    assert [queue.push_update(frame(f"v{i}")) for i in range(5)][-1] == CROWDED
    assert queue.over_limits


async def test_a_queue_still_over_its_limits_when_the_grace_ends_closes_itself() -> None:
    queue = ConnectionQueue(QueueLimits(max_events=4, overflow_grace_s=0.05))
    told: list[str] = []
    queue.on_too_slow = lambda: told.append("too slow")
    for i in range(6):
        assert queue.push_update(frame(f"u{i}"))
    await wait_until(lambda: queue.closure is not None, what="the grace to end")
    assert queue.closure is not None
    assert queue.closure.reason is CloseReason.TOO_SLOW
    assert told == ["too slow"]


async def test_when_the_grace_ends_ephemerals_go_first_and_updates_stay() -> None:
    queue = ConnectionQueue(QueueLimits(max_events=4, overflow_grace_s=0.05))
    assert queue.push_update(frame("u0"))
    for i in range(5):
        assert queue.push_ephemeral(frame(f"e{i}"))
    assert queue.over_limits
    await wait_until(lambda: not queue.over_limits, what="the grace to end")
    assert queue.closure is None, "dropping ephemerals brought it within its limits"
    assert queue.dropped_ephemeral == 2
    assert names(drain_all(queue)) == ["u0", "e2", "e3", "e4"]


async def test_the_router_unregisters_a_connection_whose_grace_ran_out() -> None:
    limits = RouterLimits(queue=QueueLimits(max_events=4, overflow_grace_s=0.05))
    router = EventRouter(limits)
    stalled, prompt = UserScopedConnection("u"), UserScopedConnection("u")
    router.add_connection("u", stalled)
    router.add_connection("u", prompt)
    closed: list[str] = []
    router.on_connection_closed = lambda c: closed.append(c.connection_id)
    for i in range(6):
        assert router.emit_update("u", update_payload(f"u{i}")).reached == 2
        assert prompt.queue is not None
        prompt.queue.drain()
    await wait_until(lambda: bool(closed), what="the stalled connection to close")
    assert closed == [stalled.connection_id]
    assert router.get_connections("u") == [prompt]
    assert router.stats.closed_too_slow == 1
