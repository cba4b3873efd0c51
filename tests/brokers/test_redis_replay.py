"""A user's resuming streams on one cluster node share what they replay (broker/redis_replay.py).

Against a real redis-server: N streams of one user resuming from far back
hold one copy of the replayed history between them, not N (measured with
tracemalloc), concurrent resumes included; each still gets every update in
order; and the node lets the shared entries go as soon as no stream of the
user has replay left to write, whether the streams wrote it or ended first.
"""

from __future__ import annotations

import asyncio
import gc
import secrets
import tracemalloc
from collections.abc import AsyncIterator

import pytest

from eventrouter.server.broker.redis import RedisBroker
from eventrouter.server.core.connections import UserScopedConnection
from eventrouter.server.core.filters import ALL_CONNECTIONS
from eventrouter.server.core.queue import CloseReason, QueueLimits
from eventrouter.server.core.router import EventRouter, ResumeStatus, RouterLimits
from tests.brokers.conftest import make_broker
from tests.brokers.harness import Inbox
from tests.support.model import update_payload
from tests.support.redis import RedisProcess

UPDATES, PAD, STREAMS = 40, 50_000, 8
HISTORY_BYTES = UPDATES * PAD  # about 2 MB


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


@pytest.fixture
async def broker(redis_single: RedisProcess) -> AsyncIterator[RedisBroker]:
    router = EventRouter(RouterLimits(queue=QueueLimits(max_write_bytes=64 * 1024)), node_id="n0")
    made = make_broker(router, redis_single.url, "t" + secrets.token_hex(4))
    assert isinstance(made, RedisBroker)
    await made.start()
    try:
        yield made
    finally:
        await made.close()


async def history_of(broker: RedisBroker, user: str) -> str:
    """Emit UPDATES padded updates to ``user``; their epoch."""
    first = await broker.emit_update(user, update_payload("u0", PAD), ALL_CONNECTIONS, None)
    for i in range(1, UPDATES):
        await broker.emit_update(user, update_payload(f"u{i}", PAD), ALL_CONNECTIONS, None)
    return first.epoch


async def resume(broker: RedisBroker, user: str, epoch: str) -> Inbox:
    conn = UserScopedConnection(user)
    opened = await broker.open(conn, (0, epoch))
    assert opened.status is ResumeStatus.RESUMED
    assert opened.replayed == UPDATES
    return Inbox(conn, opened)


# tracemalloc's readings need gc.collect(), which also finalizes sockets that
# earlier tests' killed Redis servers left to redis-py's pools and the garbage
# collector (see test_broker_batches): their warnings are not this test's.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_resuming_streams_share_one_copy_and_let_it_go_once_written(
    broker: RedisBroker,
) -> None:
    epoch = await history_of(broker, "u")
    tracemalloc.start()
    try:
        before = traced()
        one_by_one = [await resume(broker, "u", epoch) for _ in range(STREAMS)]
        at_once = await asyncio.gather(*(resume(broker, "u", epoch) for _ in range(STREAMS)))
        # One copy of the history between the 2 x STREAMS streams (a copy each
        # would be 2 x STREAMS x HISTORY_BYTES).
        cost = traced() - before
        assert cost < 1.5 * HISTORY_BYTES, cost
        assert broker.replays.kept("u") == UPDATES

        inboxes = [*one_by_one, *at_once]
        expected = [f"u{i}" for i in range(UPDATES)]
        for inbox in inboxes[:-1]:
            assert inbox.updates == expected
        # One stream still has its replay to write: the entries stay for it.
        assert broker.replays.kept("u") == UPDATES
        assert inboxes[-1].updates == expected
        assert broker.replays.kept("u") == 0
        assert [g.offset for g in inboxes[-1].got] == list(range(1, UPDATES + 1))

        for inbox in inboxes:
            broker.router.remove_connection("u", inbox.conn)
            broker.closed(inbox.conn)
        del inboxes, one_by_one, at_once, inbox
        assert traced() - before < HISTORY_BYTES / 10
    finally:
        tracemalloc.stop()


async def test_streams_that_end_before_writing_their_replay_let_it_go(
    broker: RedisBroker,
) -> None:
    epoch = await history_of(broker, "v")
    cancelled = await resume(broker, "v", epoch)
    closed = await resume(broker, "v", epoch)
    assert broker.replays.kept("v") == UPDATES
    # A client that went away: the service unregisters it, its queue unread.
    broker.router.remove_connection("v", cancelled.conn)
    broker.closed(cancelled.conn)
    assert broker.replays.kept("v") == UPDATES  # the other still replays
    # A stream the server ends (e.g. too slow) with its replay unwritten.
    broker.router.close_connection(closed.conn, CloseReason.SHUTDOWN, "bye")
    broker.closed(closed.conn)
    assert broker.replays.kept("v") == 0


async def test_a_resume_after_the_shared_entries_reads_only_what_is_new(
    broker: RedisBroker,
) -> None:
    epoch = await history_of(broker, "w")
    holding = await resume(broker, "w", epoch)  # keeps the entries shared, unread
    await broker.emit_update("w", update_payload("late", PAD), ALL_CONNECTIONS, None)
    later = UserScopedConnection("w")
    opened = await broker.open(later, (0, epoch))
    assert opened.replayed == UPDATES + 1
    late = Inbox(later, opened)
    everything = [*(f"u{i}" for i in range(UPDATES)), "late"]
    await late.has_update("late")
    assert late.updates == everything
    # The first stream gets "late" live, after its replay, exactly once.
    await holding.has_update("late")
    assert holding.updates == everything
    assert broker.replays.kept("w") == 0
