"""Runs of updates to one user go in one step with exactly the outcome of going one by one.

``MemoryBroker.emit_many`` hands consecutive updates that share a user,
filter and skip to ``EventRouter.accept_update_run``.  Here two routers with
the same connections take the same batches: one through ``emit_many``, the
other one emit at a time (the path every emit took before runs existed).
Results, what every connection has queued, which queues closed, and the
counters must be the same, for batches with repeated ids, skips, ephemerals
in between and queues small enough to fill up and overflow.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventrouter.server.broker.base import EmitItem
from eventrouter.server.broker.memory import MemoryBroker
from eventrouter.server.core.connections import (
    ClientConnection,
    MachineScopedConnection,
    SessionScopedConnection,
    UserScopedConnection,
)
from eventrouter.server.core.filters import (
    ALL_CONNECTIONS,
    AllInterestedInSession,
    MachineOnly,
    RecipientFilter,
    UserScopedOnly,
)
from eventrouter.server.core.queue import ConnectionQueue, QueueLimits
from eventrouter.server.core.router import EmitResult, EventRouter, RouterLimits
from tests.support.model import ephemeral_payload, take_queued, update_payload

USERS = ("u0", "u1")
FILTERS: tuple[RecipientFilter, ...] = (
    ALL_CONNECTIONS,
    UserScopedOnly(),
    AllInterestedInSession("s1"),
    MachineOnly("m1"),
)


def connections(user: str) -> list[ClientConnection]:
    # Fixed ids, so that both routers skip the same connection.
    return [
        UserScopedConnection(user, connection_id=f"{user}-app-a"),
        UserScopedConnection(user, connection_id=f"{user}-app-b"),
        SessionScopedConnection(user, connection_id=f"{user}-s1", session_id="s1"),
        MachineScopedConnection(user, connection_id=f"{user}-m1", machine_id="m1"),
    ]


@dataclass(frozen=True)
class Group:
    """A stretch of emits sharing user, filter and skip (a run when they are updates)."""

    user: int
    flt: int
    skip: int  # -1 none, else the index of the user's connection to skip
    ids: tuple[int, ...]  # small numbers, so that ids repeat
    ephemeral_after: bool
    pad: int


groups = st.lists(
    st.builds(
        Group,
        user=st.integers(0, 1),
        flt=st.integers(0, len(FILTERS) - 1),
        skip=st.integers(-1, 3),
        ids=st.lists(st.integers(0, 30), min_size=1, max_size=12).map(tuple),
        ephemeral_after=st.booleans(),
        pad=st.sampled_from([0, 40, 400]),
    ),
    max_size=8,
)
limits = st.sampled_from(
    [
        QueueLimits(),
        QueueLimits(max_events=6),
        QueueLimits(max_events=20),
        QueueLimits(max_events=200, max_bytes=3000),
    ]
)


def items_of(batch: list[Group], first_id: int) -> list[EmitItem]:
    items = []
    for g in batch:
        user = USERS[g.user]
        skip = connections(user)[g.skip].connection_id if g.skip >= 0 else None
        for i in g.ids:
            payload = update_payload(f"e{first_id + i}", g.pad)
            items.append(EmitItem(user, payload, FILTERS[g.flt], skip))
        if g.ephemeral_after:
            items.append(EmitItem(user, ephemeral_payload(f"x{len(items)}"), FILTERS[g.flt], skip))
    return items


def build_router(
    queue_limits: QueueLimits,
) -> tuple[EventRouter, list[ClientConnection], list[list[int]]]:
    """A router with both users' connections, and the turns it gives writers.

    Each turn is recorded as every queue's depth at that moment: the one-step
    path must give the writers exactly the turns going one by one does.
    """
    router = EventRouter(RouterLimits(queue=queue_limits))
    conns = [c for user in USERS for c in connections(user)]
    for c in conns:
        router.add_connection(c.user_id, c)
    turns: list[list[int]] = []
    take_turn = router.take_turn

    async def recorded() -> None:
        turns.append([c.queue.depth if c.queue is not None else -1 for c in conns])
        await take_turn()

    router.take_turn = recorded  # type: ignore[method-assign]
    return router, conns, turns


async def one_by_one(router: EventRouter, items: list[EmitItem]) -> list[EmitResult]:
    results = []
    for item in items:
        if item.idempotency_key is None and item.payload.DESCRIPTOR.name == "UpdatePayload":
            result = router.accept_update(
                item.user_id,
                item.payload,  # type: ignore[arg-type]
                item.recipient_filter,
                item.skip_connection_id,
            )
        else:
            result = router.accept_ephemeral(
                item.user_id,
                item.payload,  # type: ignore[arg-type]
                item.recipient_filter,
                item.skip_connection_id,
            )
        results.append(result)
        if router.turn_wanted:
            await router.take_turn()
    return results


def queued(connection: ClientConnection) -> list[object]:
    """What the connection has queued (drained), then why it closed (None: open)."""
    assert connection.queue is not None
    closure = connection.queue.closure
    return [*take_queued(connection), closure.reason.value if closure else None]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(groups, min_size=1, max_size=3), queue_limits=limits)
def test_emit_many_matches_one_by_one(
    batches: list[list[Group]], queue_limits: QueueLimits
) -> None:
    async def scenario() -> None:
        fast, fast_conns, fast_turns = build_router(queue_limits)
        slow, slow_conns, slow_turns = build_router(queue_limits)
        broker = MemoryBroker(fast)
        for n, batch in enumerate(batches):
            # Ids repeat within a batch and, sometimes, across batches.
            items = items_of(batch, first_id=10 * n)
            got = await broker.emit_many(items)
            want = await one_by_one(slow, items)
            assert [(r.reached, r.duplicate, r.offset) for r in got] == [
                (r.reached, r.duplicate, r.offset) for r in want
            ]
            if n % 2:  # sometimes the writers drain between batches, sometimes not
                assert [queued(c) for c in fast_conns] == [queued(c) for c in slow_conns]
        assert [queued(c) for c in fast_conns] == [queued(c) for c in slow_conns]
        assert fast.stats == slow.stats
        assert fast_turns == slow_turns

    asyncio.run(scenario())


class CountingQueue(ConnectionQueue):
    """Counts the updates each push_run call brings."""

    __slots__ = ("runs",)

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[int] = []

    def push_run(self, items: list[tuple[int, bytes]], nbytes: int) -> None:
        self.runs.append(len(items))
        super().push_run(items, nbytes)


def test_a_burst_to_one_user_takes_the_one_step_path() -> None:
    # Taken, not only equivalent: each of u0's queues gets the burst in one call.
    router = EventRouter()
    conns = connections("u0")  # its own, not build_router's
    for c in conns:
        c.queue = CountingQueue()
        router.add_connection("u0", c)
    items = [EmitItem("u0", update_payload(f"b{i}"), ALL_CONNECTIONS, None) for i in range(10)]
    results = asyncio.run(MemoryBroker(router).emit_many(items))
    assert [r.reached for r in results] == [4] * 10
    assert [r.offset for r in results] == list(range(1, 11))
    assert [c.queue.runs for c in conns if isinstance(c.queue, CountingQueue)] == [[10]] * 4
