"""The broker contract: one suite, run against every broker (memory, Redis, Redis Cluster).

What a broker promises the service (broker/base.py): an acknowledged update
has a position and reaches every selected connection of the user, on every
node, in one order; a repeat within the idempotency window is acknowledged,
not delivered; a resume either replays the whole gap or fails with the
reason; presence lists every node's connections; ephemerals are never kept.

Where a test uses two nodes, the memory broker gives the same node twice.
"""

from __future__ import annotations

import asyncio

import pytest

from eventrouter.server.core.filters import (
    ALL_CONNECTIONS,
    AllInterestedInSession,
    MachineOnly,
    MachineScopedOnly,
    RecipientFilter,
    UserScopedOnly,
)
from eventrouter.server.core.history import HistoryLimits, ResumeFailure
from eventrouter.server.core.router import ResumeStatus
from tests.brokers.conftest import MakeNodes
from tests.brokers.harness import Got, Inbox, eventually

SCOPES = ["user", "session:s1", "session:s2", "machine:m1", "machine:m2"]
# GUIDE.md's table for these five connections: who receives each filter.
SPEC: list[tuple[RecipientFilter, set[str]]] = [
    (ALL_CONNECTIONS, set(SCOPES)),
    (UserScopedOnly(), {"user"}),
    (AllInterestedInSession("s1"), {"user", "session:s1"}),
    (MachineScopedOnly("m1"), {"user", "machine:m1"}),
    (MachineOnly("m1"), {"machine:m1"}),
]


async def test_every_connection_on_every_node_gets_every_update_in_one_order(
    nodes: MakeNodes,
) -> None:
    a, b = await nodes(2)
    inboxes = [await a.open("u1"), await b.open("u1"), await b.open("u1", "session:s1")]
    epoch = inboxes[0].opened.epoch
    assert all(i.opened.epoch == epoch and i.opened.offset == 0 for i in inboxes)
    # Emits accepted by both nodes concurrently: one order, numbered 1..N.
    results = await asyncio.gather(
        *(node.update("u1", f"e{i}") for i, node in enumerate([a, b] * 10))
    )
    assert sorted(r.offset for r in results) == list(range(1, 21))
    assert {r.epoch for r in results} == {epoch}
    assert all(r.reached == 3 and not r.duplicate for r in results)
    for inbox in inboxes:
        await inbox.until(lambda inbox=inbox: len(inbox.updates) == 20, "20 updates")  # type: ignore[misc]
        assert [g.offset for g in inbox.got] == list(range(1, 21))
        assert {g.epoch for g in inbox.got} == {epoch}
    assert inboxes[0].got == inboxes[1].got == inboxes[2].got
    by_offset = {r.offset: f"e{i}" for i, r in enumerate(results)}
    assert inboxes[0].updates == [by_offset[o] for o in range(1, 21)]


async def test_ephemerals_reach_the_connections_open_now(nodes: MakeNodes) -> None:
    a, b = await nodes(2)
    first, second = await a.open("u1"), await b.open("u1")
    result = await b.ephemeral("u1", "typing")
    assert (result.reached, result.offset, result.epoch, result.duplicate) == (2, 0, "", False)
    await first.has_ephemeral("typing")
    await second.has_ephemeral("typing")
    other = await a.open("u2")
    assert (await a.ephemeral("u3", "nobody")).reached == 0
    await a.ephemeral("u2", "sentinel")
    await other.has_ephemeral("sentinel")
    assert other.ephemerals == ["sentinel"]


async def test_an_ephemeral_acknowledged_before_a_connection_opened_never_reaches_it(
    nodes: MakeNodes,
) -> None:
    a, b = await nodes(2)
    # b already watches u1, so an ephemeral may still be in flight to b when
    # the next connection of u1 registers there.
    watcher = await b.open("u1")
    for i in range(30):
        await a.ephemeral("u1", f"before-{i}")
        late = await b.open("u1")
        await a.ephemeral("u1", f"after-{i}")
        await late.has_ephemeral(f"after-{i}")
        assert late.ephemerals == [f"after-{i}"], i
        b.close(late)
    await watcher.has_ephemeral("after-29")
    assert len(watcher.ephemerals) == 60


@pytest.mark.parametrize(("target", "expected"), SPEC, ids=lambda v: type(v).__name__)
async def test_filters_and_skip_select_the_routing_rule(
    nodes: MakeNodes, target: RecipientFilter, expected: set[str]
) -> None:
    a, b = await nodes(2)
    inboxes = {scope: await (a if i % 2 else b).open("u1", scope) for i, scope in enumerate(SCOPES)}
    result = await a.update("u1", "filtered", target)
    assert result.reached == len(expected)
    skipped = inboxes["user"].conn.connection_id
    result = await b.ephemeral("u1", "skipping", target, skip=skipped)
    assert result.reached == len(expected - {"user"})
    await a.update("u1", "sentinel")
    for scope, inbox in inboxes.items():
        await inbox.has_update("sentinel")
        assert ("filtered" in inbox.updates) == (scope in expected), scope
        assert ("skipping" in inbox.ephemerals) == (scope in expected and scope != "user"), scope


async def test_a_repeated_update_id_is_acknowledged_not_delivered(nodes: MakeNodes) -> None:
    a, b = await nodes(2)
    inbox = await a.open("u1")
    first = await a.update("u1", "same")
    again = await b.update("u1", "same")
    assert not first.duplicate
    assert again.duplicate
    assert (again.offset, again.epoch, again.reached) == (first.offset, first.epoch, 1)
    # Ephemerals: only with an idempotency key.
    assert not (await a.ephemeral("u1", "k", key="key-1")).duplicate
    assert (await b.ephemeral("u1", "k", key="key-1")).duplicate
    await a.ephemeral("u1", "nokey")
    await b.ephemeral("u1", "nokey")
    await a.update("u1", "sentinel")
    await inbox.has_update("sentinel")
    assert inbox.updates == ["same", "sentinel"]
    assert inbox.ephemerals == ["k", "nokey", "nokey"]
    assert [g.offset for g in inbox.got if g.kind == "update"] == [1, 2]


async def test_concurrent_repeats_number_and_deliver_once(nodes: MakeNodes) -> None:
    a, b, c = await nodes(3)
    inbox = await c.open("u1")
    results = await asyncio.gather(*(n.update("u1", "racy") for n in [a, b, c] * 4))
    assert sum(not r.duplicate for r in results) == 1
    assert {(r.offset, r.epoch) for r in results} == {(1, inbox.opened.epoch)}
    keyed = await asyncio.gather(*(n.ephemeral("u1", "e", key="k") for n in [a, b, c] * 4))
    assert sum(not r.duplicate for r in keyed) == 1
    await a.update("u1", "sentinel")
    await inbox.has_update("sentinel")
    assert inbox.updates == ["racy", "sentinel"]
    assert inbox.ephemerals == ["e"]


async def test_a_repeat_after_the_window_is_a_new_update(nodes: MakeNodes) -> None:
    (a,) = await nodes(1, window=0.0)
    first, again = await a.update("u1", "same"), await a.update("u1", "same")
    assert not again.duplicate
    assert again.offset == first.offset + 1


async def test_resume_replays_exactly_the_gap_then_goes_live(nodes: MakeNodes) -> None:
    a, b = await nodes(2)
    first = await a.open("u1")
    for i in range(5):
        await a.update("u1", f"e{i}")
    await first.until(lambda: len(first.updates) == 5, "5 updates")
    last = first.got[-1]
    a.close(first)
    for i in range(5, 8):
        await b.update("u1", f"e{i}")
    # The session watcher resumes on the other node: the gap, filtered as live would be.
    await b.update("u1", "for-s2", AllInterestedInSession("s2"))
    resumed = await b.open("u1", "session:s1", resume_from=(last.offset, last.epoch))
    assert resumed.opened.status is ResumeStatus.RESUMED
    assert resumed.opened.failure is None
    assert resumed.opened.replayed == 3
    # Reported where it asked to resume: the replay moves it forward.
    assert (resumed.opened.offset, resumed.opened.epoch) == (last.offset, last.epoch)
    await a.update("u1", "live")
    await resumed.has_update("live")
    assert resumed.updates == ["e5", "e6", "e7", "live"]
    assert [g.offset for g in resumed.got] == [6, 7, 8, 10]


async def test_resume_at_the_head_replays_nothing(nodes: MakeNodes) -> None:
    (a,) = await nodes(1)
    head = await a.update("u1", "e0")
    inbox = await a.open("u1", resume_from=(head.offset, head.epoch))
    assert inbox.opened.status is ResumeStatus.RESUMED
    assert (inbox.opened.replayed, inbox.opened.offset) == (0, 1)
    fresh = await a.open("u2", resume_from=(0, (await a.open("u2")).opened.epoch))
    assert (fresh.opened.status, fresh.opened.offset) == (ResumeStatus.RESUMED, 0)


async def test_resume_failures_say_why(nodes: MakeNodes) -> None:
    (a,) = await nodes(1, history=HistoryLimits(max_updates=3))
    results = [await a.update("u1", f"e{i}") for i in range(10)]
    epoch = results[0].epoch
    cases = {
        (5, "not-the-epoch"): ResumeFailure.EPOCH_CHANGED,
        (11, epoch): ResumeFailure.UNKNOWN_POSITION,
        (2, epoch): ResumeFailure.TOO_OLD,
        (6, epoch): ResumeFailure.TOO_OLD,
    }
    for position, failure in cases.items():
        inbox = await a.open("u1", resume_from=position)
        assert inbox.opened.status is ResumeStatus.FAILED, position
        assert inbox.opened.failure is failure, position
        assert (inbox.opened.replayed, inbox.opened.offset, inbox.opened.epoch) == (0, 10, epoch)
    kept = await a.open("u1", resume_from=(7, epoch))
    assert (kept.opened.status, kept.opened.replayed) == (ResumeStatus.RESUMED, 3)
    await kept.until(lambda: kept.updates == ["e7", "e8", "e9"], "the 3 retained updates")
    # A failed resume still registers the stream: it gets what comes next.
    await a.update("u1", "next")
    await kept.has_update("next")


async def test_resume_past_the_age_limit_is_too_old(nodes: MakeNodes) -> None:
    (a,) = await nodes(1, history=HistoryLimits(max_age_s=0.2))
    first = await a.update("u1", "old")
    await a.update("u1", "older-than-needed")

    async def too_old() -> bool:
        inbox = await a.open("u1", resume_from=(first.offset - 1, first.epoch))
        a.close(inbox)
        return inbox.opened.failure is ResumeFailure.TOO_OLD

    await eventually(too_old, "the first update to age out")


async def test_ephemerals_are_never_replayed(nodes: MakeNodes) -> None:
    (a,) = await nodes(1)
    await a.update("u1", "u-1")
    await a.ephemeral("u1", "gone")
    last = await a.update("u1", "u-2")
    inbox = await a.open("u1", resume_from=(0, last.epoch))
    assert (inbox.opened.status, inbox.opened.replayed) == (ResumeStatus.RESUMED, 2)
    await inbox.until(lambda: inbox.updates == ["u-1", "u-2"], "both updates")
    assert inbox.ephemerals == []


async def test_an_open_during_emits_has_no_gap_and_no_duplicate(nodes: MakeNodes) -> None:
    """The position reported at open is exact: the stream then gets position+1, +2, ..."""
    a, b = await nodes(2)
    total = 60
    opened: list[Inbox] = []

    async def emit_all() -> None:
        for i in range(total):
            await a.update("u1", f"e{i}")

    async def open_some() -> None:
        for i in range(6):
            opened.append(await (a, b)[i % 2].open("u1"))
            await asyncio.sleep(0)

    await asyncio.gather(emit_all(), open_some())
    for inbox in opened:
        start = inbox.opened.offset
        expected = total - start
        await inbox.until(lambda i=inbox, n=expected: len(i.updates) == n, "the rest")  # type: ignore[misc]
        assert [g.offset for g in inbox.got] == list(range(start + 1, total + 1))


async def test_presence_lists_every_node_oldest_first(nodes: MakeNodes) -> None:
    a, b = await nodes(2)
    one = await a.open("u1")
    two = await b.open("u1", "session:s1")
    three = await a.open("u1", "machine:m1")
    await a.open("u2")
    records = await b.broker.connections("u1")
    assert {r.connection_id for r in records} == {i.conn.connection_id for i in (one, two, three)}
    opened_at = [r.opened_at_ms for r in records]
    assert opened_at == sorted(opened_at)
    assert opened_at == sorted(i.conn.opened_at_ms for i in (one, two, three))
    by_id = {r.connection_id: r for r in records}
    assert by_id[two.conn.connection_id].scope == "session:s1"
    assert by_id[three.conn.connection_id].scope == "machine:m1"
    assert by_id[one.conn.connection_id].node_id == a.router.node_id
    assert by_id[two.conn.connection_id].node_id == b.router.node_id
    assert {r.user_id for r in records} == {"u1"}
    a.close(one)

    async def gone() -> bool:
        ids = {r.connection_id for r in await a.broker.connections("u1")}
        return one.conn.connection_id not in ids and len(ids) == 2

    await eventually(gone, "the closed connection to leave presence")
    assert await a.broker.connections("nobody") == []


async def test_emit_many_keeps_each_users_order(nodes: MakeNodes) -> None:
    from eventrouter.server.broker.base import EmitItem
    from tests.brokers.harness import ephemeral_payload, update_payload

    a, b = await nodes(2)
    first, second = await a.open("u1"), await b.open("u2")
    items = [
        EmitItem(user, update_payload(f"{user}-{i}"), ALL_CONNECTIONS, None)
        for i in range(5)
        for user in ("u1", "u2")
    ]
    items.insert(3, EmitItem("u1", ephemeral_payload("eph"), ALL_CONNECTIONS, None, "k"))
    items.append(EmitItem("u1", update_payload("u1-0"), ALL_CONNECTIONS, None))
    results = await b.broker.emit_many(items)
    assert len(results) == len(items)
    assert [r.offset for r in results if r.epoch and not r.duplicate] == [
        1, 1, 2, 2, 3, 3, 4, 4, 5, 5
    ]  # fmt: skip
    assert results[3].offset == 0
    assert results[-1].duplicate
    assert results[-1].offset == 1
    await first.until(lambda: len(first.updates) == 5, "u1's updates")
    await second.until(lambda: len(second.updates) == 5, "u2's updates")
    assert first.updates == [f"u1-{i}" for i in range(5)]
    assert first.got[2] == Got("ephemeral", "eph")


async def test_a_burst_larger_than_a_queue_reaches_a_reading_subscriber(nodes: MakeNodes) -> None:
    """Fan-out yields to the writers when queues fill, so only a slow reader is cut off."""
    from eventrouter.server.broker.base import EmitItem
    from eventrouter.server.core.queue import QueueLimits
    from tests.brokers.harness import update_payload

    a, b = await nodes(2, queue=QueueLimits(max_events=32))
    inbox = await b.open("u1")
    total = 300
    reading = asyncio.create_task(inbox.until(lambda: len(inbox.updates) == total, "the burst"))
    items = [EmitItem("u1", update_payload(f"e{i}"), ALL_CONNECTIONS, None) for i in range(total)]
    await a.broker.emit_many(items)
    await reading
    assert inbox.updates == [f"e{i}" for i in range(total)]
    assert not inbox.closed
