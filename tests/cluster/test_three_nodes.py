"""Three router nodes as real processes sharing Redis (single, or a 3-shard Redis Cluster).

* A user with a stream on every node receives every emit exactly once, in
  the same order everywhere, whichever nodes accepted the emits.
* A node killed with SIGKILL: its subscriber resumes on another node with
  no gap and no duplicate; its connections leave cluster-wide presence
  within the presence expiry.
* Redis killed: Emit fails with UNAVAILABLE (not a hang), the node reports
  the broker unreachable; Redis back: emits flow again with no node
  restarted, and the streams of the lost history end so their clients learn
  it (EPOCH_CHANGED) instead of silently missing updates.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventrouter.v1 import router_service_pb2 as pb
from tests.cluster.conftest import Backend
from tests.cluster.nodes import (
    READ_DEADLINE_S,
    Client,
    NodeProcess,
    Stream,
    client_for,
    log_shows,
    running_nodes,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def three_nodes(
    backend: Backend, tmp_path: Path
) -> Iterator[tuple[asyncio.Runner, list[NodeProcess]]]:
    """Nodes shared by every example of a property test, driven from one event loop."""
    with asyncio.Runner() as runner:
        nodes = [NodeProcess(tmp_path, f"node{i}", backend.url) for i in range(3)]
        try:
            for node in nodes:
                node.spawn()
            for node in nodes:
                runner.run(node.wait_ready())
            yield runner, nodes
        finally:
            for node in nodes:
                node.stop()


async def one_order_everywhere(nodes: list[NodeProcess], choices: list[int]) -> None:
    user = "u-" + uuid.uuid4().hex[:8]
    async with client_for(nodes) as client:
        streams = [await client.subscribe(i, user) for i in range(len(nodes))]
        try:
            responses = await asyncio.gather(
                *(client.emit(node, user, f"e{k}") for k, node in enumerate(choices))
            )
            n = len(choices)
            assert sorted(r.position.offset for r in responses) == list(range(1, n + 1))
            by_offset = {r.position.offset: f"e{k}" for k, r in enumerate(responses)}
            # A last emit after all of them: whatever precedes it was delivered by now.
            await client.emit(0, user, "end")
            for stream in streams:
                await stream.read_until(n + 1)
                assert stream.ids == [by_offset[o] for o in range(1, n + 1)] + ["end"]
                assert [u[1] for u in stream.updates] == list(range(1, n + 2))
            assert streams[0].updates == streams[1].updates == streams[2].updates
        finally:
            for stream in streams:
                stream.raw.cancel()


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(choices=st.lists(st.integers(min_value=0, max_value=2), min_size=1, max_size=12))
def test_every_emit_reaches_every_node_once_in_one_order(
    three_nodes: tuple[asyncio.Runner, list[NodeProcess]], choices: list[int]
) -> None:
    runner, nodes = three_nodes
    runner.run(one_order_everywhere(nodes, choices))


async def test_a_subscriber_of_a_killed_node_resumes_elsewhere_without_gap_or_duplicate(
    backend: Backend, tmp_path: Path
) -> None:
    async with running_nodes(tmp_path, backend.url) as nodes, client_for(nodes) as client:
        user = "u-crash"
        stream = await client.subscribe(0, user)
        emitted = [f"e{i}" for i in range(12)]
        for event_id in emitted[:5]:
            await client.emit(1, user, event_id)
        await stream.read_until(5)
        for event_id in emitted[5:8]:
            await client.emit(2, user, event_id)  # some of these may arrive before the crash
        nodes[0].kill()
        error = await read_to_the_end(stream)
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        for event_id in emitted[8:]:
            await client.emit(1, user, event_id)
        last_id, offset, epoch = stream.updates[-1]
        resumed = await client.subscribe(
            2, user, resume_from=pb.StreamPosition(offset=offset, epoch=epoch)
        )
        assert resumed.raw.opened.resume.status == pb.RESUME_STATUS_RESUMED
        await resumed.read_until(len(emitted) - len(stream.updates))
        got = stream.ids + resumed.ids
        assert got == emitted, f"resumed after {last_id}"
        assert [u[1] for u in stream.updates + resumed.updates] == list(range(1, 13))
        resumed.raw.cancel()


async def read_to_the_end(stream: Stream) -> grpc.aio.AioRpcError:
    try:
        return await stream.read_until_error()
    except grpc.aio.AioRpcError as e:
        return e


async def test_a_killed_nodes_connections_leave_presence_within_the_expiry(
    backend: Backend, tmp_path: Path
) -> None:
    async with running_nodes(tmp_path, backend.url) as nodes, client_for(nodes) as client:
        user = "u-presence"
        doomed = await client.subscribe(0, user)
        kept = await client.subscribe(1, user)
        listed = await client.connections(2, user)
        assert {(c.connection_id, c.node_id) for c in listed} == {
            (doomed.raw.connection_id, "node0"),
            (kept.raw.connection_id, "node1"),
        }
        nodes[0].kill()
        await until_true(
            lambda: connections_are(client, user, {kept.raw.connection_id}),
            "the killed node's connection to leave presence",
        )
        kept.raw.cancel()


async def connections_are(client: Client, user: str, expected: set[str]) -> bool:
    return {c.connection_id for c in await client.connections(2, user)} == expected


async def test_redis_down_fails_emits_and_recovers_without_restarting_nodes(
    backend: Backend, tmp_path: Path
) -> None:
    async with running_nodes(tmp_path, backend.url) as nodes, client_for(nodes) as client:
        user = "u-outage"
        stream = await client.subscribe(0, user)
        before = await client.emit(1, user, "before")
        await stream.read_until(1)
        backend.crash_owner_of(user)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await client.emit(1, user, "during")
        assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
        await log_shows(nodes[1], "Redis broker unreachable")

        backend.restart_crashed()  # empty: persistence is off
        await until_true(lambda: emit_accepted(client, user), "emits to be accepted again")
        await log_shows(nodes[1], "Redis broker reachable again")
        # The stream of the lost history ends; its resume says the history changed.
        error = await read_to_the_end(stream)
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        again = await client.subscribe(2, user, resume_from=before.position)
        assert again.raw.opened.resume.failure == pb.RESUME_FAILURE_EPOCH_CHANGED
        await client.emit(0, user, "later")
        await again.read_until(1)
        assert again.ids == ["later"]
        again.raw.cancel()


async def emit_accepted(client: Client, user: str) -> bool:
    try:
        await client.emit(1, user, "after-" + uuid.uuid4().hex[:6])
    except grpc.aio.AioRpcError as e:
        if e.code() is grpc.StatusCode.UNAVAILABLE:
            return False
        raise
    return True


async def until_true(check: object, what: str, deadline_s: float = 2 * READ_DEADLINE_S) -> None:
    """Poll an async condition with a deadline (for state with nothing to wait on)."""
    assert callable(check)
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not await check():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
