"""EmitBatch through every broker: one script call per user and one message per call.

The Redis broker sends a batch in one round trip and publishes each user's
events of a call as one message, which the receiving node delivers in runs.
These tests hold it to what one emit at a time gives: idempotency inside a
batch and across batches, each user's order on every node whatever the mix
of users, filters, skips and ephemerals, and, when Redis dies in the middle
of a batch, nothing acknowledged lost and nothing delivered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventrouter.server.broker.base import BrokerUnavailable, EmitItem
from eventrouter.server.broker.redis_client import pack_evalsha
from eventrouter.server.core.filters import (
    ALL_CONNECTIONS,
    AllInterestedInSession,
    MachineOnly,
    RecipientFilter,
    UserScopedOnly,
)
from eventrouter.server.core.registry import accepts
from eventrouter.server.core.router import EventRouter
from eventrouter.v1 import events_pb2
from tests.brokers.conftest import MakeNodes, make_broker
from tests.brokers.harness import Inbox, Node, ephemeral_payload, update_payload
from tests.conftest import require_tool
from tests.support.redis import REDIS_SERVER, RedisProcess


async def _until_count(inbox: Inbox, count: int) -> None:
    """Until ``count`` events arrived (the test then checks which)."""
    await inbox.until(lambda: len(inbox.poll()) >= count, f"{count} events")


def update(user: str, ident: str, target: RecipientFilter = ALL_CONNECTIONS) -> EmitItem:
    return EmitItem(user, update_payload(ident), target, None)


def ephemeral(user: str, tag: str, key: str | None = None) -> EmitItem:
    return EmitItem(user, ephemeral_payload(tag), ALL_CONNECTIONS, None, key)


async def test_a_repeated_key_inside_and_across_batches_is_one_event(nodes: MakeNodes) -> None:
    a, b = await nodes(2)
    there, here = await b.open("u1"), await a.open("u1")
    first = await a.broker.emit_many(
        [
            update("u1", "x"),
            update("u2", "y"),
            update("u1", "x"),  # repeated inside the batch
            ephemeral("u1", "e1", key="k"),
            ephemeral("u1", "e1-again", key="k"),  # same key: the same event
            update("u1", "z"),
        ]
    )
    assert [(r.duplicate, r.offset) for r in first] == [
        (False, 1), (False, 1), (True, 1), (False, 0), (True, 0), (False, 2)
    ]  # fmt: skip
    second = await b.broker.emit_many(
        [update("u1", "z"), ephemeral("u1", "e1-third", key="k"), update("u1", "w")]
    )
    assert [(r.duplicate, r.offset) for r in second] == [(True, 2), (True, 0), (False, 3)]
    for inbox in (there, here):
        await _until_count(inbox, 4)
        assert inbox.updates == ["x", "z", "w"]
        assert inbox.ephemerals == ["e1"]


def _mixed_batch(rng: random.Random, users: list[str], start: int, size: int) -> list[EmitItem]:
    targets: list[RecipientFilter] = [
        ALL_CONNECTIONS,
        UserScopedOnly(),
        AllInterestedInSession("s1"),
        MachineOnly("m1"),
    ]
    items = []
    for k in range(start, start + size):
        user = rng.choice(users)
        if rng.random() < 0.15:
            items.append(ephemeral(user, f"{user}-e{k}"))
        else:
            # Runs of one filter (delivered as a run) broken now and then.
            target = targets[0] if rng.random() < 0.6 else rng.choice(targets)
            items.append(update(user, f"{user}-{k}", target))
    return items


def _ident(item: EmitItem) -> str:
    payload = item.payload
    if isinstance(payload, events_pb2.UpdatePayload):
        return payload.id
    return payload.activity.session_id


async def test_each_users_order_holds_on_every_node_across_a_mixed_batch(
    nodes: MakeNodes,
) -> None:
    made = await nodes(3)
    users = ["u1", "u2", "u3"]
    scopes = ["user", "session:s1", "machine:m1", "session:s2"]
    inboxes: list[Inbox] = []
    for i, node in enumerate(made):
        for user in users:
            inboxes.append(await node.open(user, scopes[(i + len(inboxes)) % len(scopes)]))
    rng = random.Random(18)
    sent: list[EmitItem] = []
    for n in range(6):
        batch = _mixed_batch(rng, users, n * 40, 40)
        await made[n % len(made)].broker.emit_many(batch)
        sent += batch
    for inbox in inboxes:
        conn = inbox.conn
        wanted = [
            _ident(item)
            for item in sent
            if item.user_id == conn.user_id and accepts(item.recipient_filter, conn)
        ]
        await _until_count(inbox, len(wanted))
        assert [g.ident for g in inbox.poll()] == wanted
        offsets = [g.offset for g in inbox.got if g.kind == "update"]
        assert offsets == sorted(offsets)


# -- Redis dies in the middle of a batch -----------------------------------------


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server that keeps what it acknowledged across a SIGKILL (AOF, fsync always)."""
    require_tool(REDIS_SERVER is not None, "redis-server")
    server = RedisProcess(
        tmp_path / "redis", None, "--appendonly", "yes", "--appendfsync", "always"
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


# redis-py's pool sometimes drops a connection it was opening when Redis dies
# under it; the garbage collector closes it later (seen with its own pipeline
# as with the broker's packed one): a warning about redis-py, not a failure here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_redis_killed_mid_batch_loses_nothing_acknowledged(
    durable_redis: RedisProcess,
) -> None:
    """Whatever part of the batch ran before the kill, the retry completes it exactly once."""
    brokers = [make_broker(EventRouter(node_id=n), durable_redis.url, "crash") for n in ("a", "b")]
    for broker in brokers:
        await broker.start()
    a, b = (Node(broker) for broker in brokers)
    try:
        users = [f"u{i}" for i in range(8)]
        inboxes = {user: await b.open(user) for user in users}
        acknowledged = [update(user, f"{user}-first") for user in users]
        await a.broker.emit_many(acknowledged)
        batch = [update(users[k % 8], f"{users[k % 8]}-{k}") for k in range(1600)]
        sending = asyncio.create_task(a.broker.emit_many(batch))
        await asyncio.sleep(0.005)  # the pipeline is on its way, or being run
        durable_redis.kill()
        # Not acknowledged: the service would answer UNAVAILABLE; the caller retries.
        with contextlib.suppress(BrokerUnavailable):
            await sending
        durable_redis.start()
        async with asyncio.timeout(20):
            while True:
                try:
                    results = await a.broker.emit_many(batch)
                    break
                except BrokerUnavailable:
                    await asyncio.sleep(0.1)
        assert len({(r.offset, batch[i].user_id) for i, r in enumerate(results)}) == len(batch)
        for user, inbox in inboxes.items():
            wanted = [f"{user}-first"] + [_ident(e) for e in batch if e.user_id == user]
            await _until_count(inbox, len(wanted))
            assert inbox.updates == wanted
            assert not inbox.closed
    finally:
        for broker in brokers:
            await broker.close()


# -- the packed pipeline ---------------------------------------------------------------


def test_packed_script_calls_are_the_commands_redis_reads() -> None:
    hiredis = pytest.importorskip("hiredis")
    packed = pack_evalsha("f" * 40, [(["k1", "k2"], ["e", 7, b"\x00\r\n"]), ([], [-1])])
    reader = hiredis.Reader()
    reader.feed(packed)
    assert reader.gets() == [b"EVALSHA", b"f" * 40, b"2", b"k1", b"k2", b"e", b"7", b"\x00\r\n"]
    assert reader.gets() == [b"EVALSHA", b"f" * 40, b"0", b"-1"]
    assert reader.gets() is False
    with pytest.raises(TypeError):
        pack_evalsha("f" * 40, [([], [1.5])])
