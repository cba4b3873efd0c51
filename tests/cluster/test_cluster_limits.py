"""Limits and state that hold across nodes: real node processes sharing a private Redis.

The limits and the revocations are tested on one Redis and on a 3-shard Redis
Cluster (their keys live on other slots than the users'); the rest on one Redis.

* ``max_streams_per_user`` counts a user's streams on every node: N on node A
  and one more on node B is refused exactly as one node refuses it; closing a
  stream on one node frees a slot on the other, and a crashed node's streams
  stop counting when its presence lease runs out.
* The emit rate limit is one budget per service across nodes.
* A revocation made before a third node starts is honoured by that node as
  soon as it reports SERVING, and is kept in Redis with its expiry.
* ``GetConnections`` and the status page list every live node.
* Redis down: Subscribe, Emit (rate limited) and a revoking Disconnect fail
  with UNAVAILABLE, nothing is admitted unchecked; Redis back: they work again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from eventrouter.server.auth import Metadata
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.cluster.conftest import Backend
from tests.cluster.nodes import READ_DEADLINE_S, NodeProcess, update_request
from tests.conftest import require_tool
from tests.ops._support import http_get
from tests.security.helpers import Keys, Stream, bearer, open_stream, subscribe_error
from tests.support.redis import (
    REDIS_CLI,
    REDIS_SERVER,
    RedisProcess,
    command,
    free_port,
    redis_server,
)
from tests.support.servers import running_server, user_metadata, user_scope

pytestmark = pytest.mark.slow

LIMIT = 2
SERVING = health_pb2.HealthCheckResponse.SERVING
# Presence lease of the nodes (tests/cluster/nodes.py BROKER_OPTIONS: presence_ttl=2).
LEASE_S = 2.0


@pytest.fixture
def redis() -> Iterator[RedisProcess]:
    """A private redis-server, stopped by PID after the test."""
    require_tool(REDIS_SERVER is not None and REDIS_CLI is not None, "redis-server and redis-cli")
    with redis_server() as process:
        yield process


def secure_setup(tmp_path: Path) -> tuple[Keys, Path, Metadata]:
    """Keys, their JWKS file for the nodes, and a service credential."""
    keys = Keys()
    return keys, keys.write(tmp_path / "keys.json"), bearer(keys.service())


@contextlib.asynccontextmanager
async def nodes_up(
    tmp_path: Path,
    redis: RedisProcess | Backend,
    names: Sequence[str],
    *extra: str,
    keys_file: Path | None = None,
) -> AsyncIterator[list[NodeProcess]]:
    """Nodes started and SERVING, stopped (by PID) on exit; Redis must run."""
    nodes = [NodeProcess(tmp_path, n, redis.url, *extra, keys_file=keys_file) for n in names]
    try:
        for node in nodes:
            node.spawn()
        for node in nodes:
            await serving(node)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


async def serving(node: NodeProcess) -> None:
    """Wait until the node's health is SERVING (it has read what Redis keeps)."""
    await node.wait_ready()
    async with grpc.aio.insecure_channel(node.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        await until(lambda: _status_is(health, SERVING), f"{node.name} SERVING\n{node.log()}")


async def _status_is(health: health_pb2_grpc.HealthStub, wanted: int) -> bool:
    request = health_pb2.HealthCheckRequest(service="eventrouter.v1.EventRouterService")
    response = await health.Check(request, timeout=READ_DEADLINE_S)
    return bool(response.status == wanted)


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``condition`` until it holds; fail after READ_DEADLINE_S."""
    deadline = time.monotonic() + READ_DEADLINE_S
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.05)  # the polling interval of a bounded wait


@contextlib.asynccontextmanager
async def stubs(
    nodes: Sequence[NodeProcess],
) -> AsyncIterator[list[pb_grpc.EventRouterServiceStub]]:
    channels = [grpc.aio.insecure_channel(n.address) for n in nodes]
    try:
        yield [pb_grpc.EventRouterServiceStub(c) for c in channels]
    finally:
        for channel in channels:
            await channel.close()


async def refusal(stub: pb_grpc.EventRouterServiceStub, user: str) -> grpc.aio.AioRpcError:
    return await subscribe_error(stub, None, metadata=user_metadata(user))


async def stream(stub: pb_grpc.EventRouterServiceStub, user: str) -> Stream:
    return await open_stream(stub, None, metadata=user_metadata(user))


async def opens(
    stub: pb_grpc.EventRouterServiceStub,
    metadata: Any,
    kept: list[Any],
    not_yet: grpc.StatusCode = grpc.StatusCode.RESOURCE_EXHAUSTED,
) -> bool:
    """Try one Subscribe: True (kept open), False if refused with ``not_yet``."""
    call = stub.Subscribe(pb.SubscribeRequest(scope=user_scope()), metadata=metadata)
    try:
        first = await call.read()
    except grpc.aio.AioRpcError as e:
        return refused_with(e, not_yet)
    assert first is not grpc.aio.EOF
    kept.append(call)
    return True


def refused_with(error: grpc.aio.AioRpcError, code: grpc.StatusCode) -> bool:
    """False for the refusal a bounded wait expects; anything else fails the test."""
    if error.code() != code:
        raise AssertionError(f"unexpected refusal: {error}")
    return False


async def one_node_refusal(**limits: object) -> grpc.aio.AioRpcError:
    """What a single node answers to the stream past the limit."""
    async with (
        running_server(metrics_listen="", **limits) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = pb_grpc.EventRouterServiceStub(channel)
        held = [await stream(stub, "alice") for _ in range(LIMIT)]
        refused = await refusal(stub, "alice")
        for s in held:
            s.cancel()
        return refused


async def test_stream_limit_holds_across_nodes(tmp_path: Path, backend: Backend) -> None:
    single = await one_node_refusal(max_streams_per_user=LIMIT)
    assert single.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    limit = ("--max-streams-per-user", str(LIMIT))
    async with nodes_up(tmp_path, backend, ["a", "b"], *limit) as nodes, stubs(nodes) as (a, b):
        held = [await stream(a, "alice") for _ in range(LIMIT)]
        refused = await refusal(b, "alice")
        assert (refused.code(), refused.details()) == (single.code(), single.details())
        # Other users are not affected.
        bob = await stream(b, "bob")

        # Closing one on A frees a slot on B.
        held.pop().cancel()
        kept: list[Any] = []
        await until(lambda: opens(b, user_metadata("alice"), kept), "a slot freed on B")
        # Now A counts B's stream: its own count (1) is under the limit.
        refused = await refusal(a, "alice")
        assert (refused.code(), refused.details()) == (single.code(), single.details())

        # A crashed node's streams stop counting once its lease runs out.
        nodes[1].kill()
        await until(
            lambda: opens(a, user_metadata("alice"), kept), "B's stream released by its lease"
        )
        for call in [*held, bob, *kept]:
            call.cancel()


async def test_concurrent_opens_on_two_nodes_take_exactly_the_limit(
    tmp_path: Path, redis: RedisProcess
) -> None:
    limit = ("--max-streams-per-user", "4")
    async with nodes_up(tmp_path, redis, ["a", "b"], *limit) as nodes, stubs(nodes) as (a, b):
        kept: list[Any] = []
        # Twelve at once, six per node: a node's own count never sees the
        # other's streams, so only the count in Redis keeps the total at four.
        results = await asyncio.gather(
            *(opens(stub, user_metadata("carol"), kept) for stub in [a, b] * 6)
        )
        assert sorted(results) == [False] * 8 + [True] * 4
        for call in kept:
            call.cancel()


def batch(n: int, tag: str) -> pb.EmitBatchRequest:
    return pb.EmitBatchRequest(emits=[update_request("u", f"{tag}-{i}") for i in range(n)])


async def test_emit_rate_limit_holds_across_nodes(tmp_path: Path, backend: Backend) -> None:
    # A burst of 10 and almost no refill (one event per 100 s): the counts are exact.
    rate = ("--emit-rate-per-service", "0.01", "--emit-burst-per-service", "10")
    async with (
        running_server(
            metrics_listen="", emit_rate_per_service=0.01, emit_burst_per_service=10
        ) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        one = pb_grpc.EventRouterServiceStub(channel)
        await one.EmitBatch(batch(6, "s"))
        with pytest.raises(grpc.aio.AioRpcError) as single:
            await one.EmitBatch(batch(6, "t"))
    async with nodes_up(tmp_path, backend, ["a", "b"], *rate) as nodes, stubs(nodes) as (a, b):
        await a.EmitBatch(batch(6, "a"), timeout=READ_DEADLINE_S)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await b.EmitBatch(batch(6, "b"), timeout=READ_DEADLINE_S)
        got = (refused.value.code(), refused.value.details())
        assert got == (single.value.code(), single.value.details())
        assert got[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        # The refused batch took nothing: the 4 left are there, on either node.
        await b.EmitBatch(batch(4, "c"), timeout=READ_DEADLINE_S)
        with pytest.raises(grpc.aio.AioRpcError) as empty:
            await a.Emit(update_request("u", "d"), timeout=READ_DEADLINE_S)
        assert empty.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_revocation_before_a_node_starts_is_honoured_by_it(
    tmp_path: Path, backend: Backend
) -> None:
    keys, keys_file, service = secure_setup(tmp_path)
    held_token = keys.user("alice", token_id="jti-held", ttl_s=7200)
    idle_token = keys.user("alice", token_id="jti-idle", ttl_s=7200)
    ttl = ("--revocation-ttl-s", "600")
    async with (
        nodes_up(tmp_path, backend, ["a", "b"], *ttl, keys_file=keys_file) as nodes,
        stubs(nodes) as (a, b),
    ):
        held = await open_stream(b, held_token)
        revoked_at = time.time()
        for jti in ("jti-held", "jti-idle"):
            request = pb.DisconnectRequest(token_id=jti, revoke=True, reason="stolen")
            await a.Disconnect(request, metadata=service, timeout=READ_DEADLINE_S)
        assert (await held.ended()).code() == grpc.StatusCode.PERMISSION_DENIED

        # Kept with its expiry: the idle token's for revocation_ttl_s, the held
        # one's until the token expires (B saw it, and extended what A stored).
        key, control = "er:{%ctl}:revoked", backend.owner_of("%ctl")

        async def held_extended() -> bool:
            score = command(control.port, "ZSCORE", key, "jti-held")
            return bool(score) and float(score) > (revoked_at + 7000) * 1000

        await until(held_extended, "the held token's revocation kept until it expires")
        idle = float(command(control.port, "ZSCORE", key, "jti-idle")) / 1000
        assert revoked_at + 590 < idle < time.time() + 610

        async with (
            nodes_up(tmp_path, backend, ["c"], *ttl, keys_file=keys_file) as later,
            stubs(later) as (c,),
        ):
            # SERVING already: the revocations were read before.
            for token in (held_token, idle_token):
                refused = await subscribe_error(c, token)
                assert refused.code() == grpc.StatusCode.PERMISSION_DENIED, refused
                assert "revoked" in (refused.details() or "")
            fresh_token = keys.user("alice", token_id="jti-fresh")
            fresh = await open_stream(c, fresh_token)
            # Live pushes reach it too.
            request = pb.DisconnectRequest(token_id="jti-fresh", revoke=True)
            await b.Disconnect(request, metadata=service, timeout=READ_DEADLINE_S)
            assert (await fresh.ended()).code() == grpc.StatusCode.PERMISSION_DENIED
            again = await subscribe_error(c, fresh_token)
            assert again.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_get_connections_and_status_page_list_every_node(
    tmp_path: Path, redis: RedisProcess
) -> None:
    ports = {"a": free_port(), "b": free_port()}
    metrics = [("--metrics-listen", f"127.0.0.1:{port}") for port in ports.values()]
    async with (
        nodes_up(tmp_path, redis, ["a"], *metrics[0]) as (node_a,),
        nodes_up(tmp_path, redis, ["b"], *metrics[1]) as (node_b,),
        stubs([node_a, node_b]) as (a, b),
    ):
        on_a = await stream(a, "alice")
        on_b = [await stream(b, "alice"), await stream(b, "bob")]
        for stub in (a, b):
            request = pb.GetConnectionsRequest(user_id="alice")
            listed = (await stub.GetConnections(request, timeout=READ_DEADLINE_S)).connections
            assert {(c.connection_id, c.node_id) for c in listed} == {
                (on_a.connection_id, "a"),
                (on_b[0].connection_id, "b"),
            }

        async def nodes_listed(wanted: list[dict[str, Any]]) -> bool:
            status = (await http_get(ports["a"], "/status.json")).json()
            return bool(status["nodes"] == wanted)

        both = [
            {"id": "a", "self": True, "healthy": True, "streams": 1},
            {"id": "b", "self": False, "healthy": True, "streams": 2},
        ]
        await until(lambda: nodes_listed(both), "a's status page lists a and b")
        assert "<th>streams</th>" in (await http_get(ports["a"], "/")).body.decode()

        # A node that died leaves the table when its lease runs out.
        node_b.kill()
        await until(lambda: nodes_listed(both[:1]), "b gone from a's status page")
        on_a.cancel()


async def test_redis_down_admits_nothing_unchecked(tmp_path: Path, redis: RedisProcess) -> None:
    keys, keys_file, service = secure_setup(tmp_path)
    options = ("--max-streams-per-user", str(LIMIT), "--emit-rate-per-service", "1000")
    alice = keys.user("alice")
    revoke = pb.DisconnectRequest(token_id="jti-x", revoke=True)
    async with (
        nodes_up(tmp_path, redis, ["a", "b"], *options, keys_file=keys_file) as nodes,
        stubs(nodes) as (a, b),
    ):
        held = await open_stream(a, alice)
        redis.kill()
        refused = await subscribe_error(b, alice)
        assert refused.code() == grpc.StatusCode.UNAVAILABLE, refused
        with pytest.raises(grpc.aio.AioRpcError) as emit:
            await b.Emit(update_request("alice", "x"), metadata=service, timeout=READ_DEADLINE_S)
        assert emit.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as disconnect:
            await b.Disconnect(revoke, metadata=service, timeout=READ_DEADLINE_S)
        assert disconnect.value.code() == grpc.StatusCode.UNAVAILABLE

        # A node started meanwhile opens nothing it could not check.
        later = NodeProcess(tmp_path, "c", redis.url, *options, keys_file=keys_file)
        later.spawn()
        try:
            await later.wait_ready()
            async with stubs([later]) as (c,):
                refused = await subscribe_error(c, alice)
                assert refused.code() == grpc.StatusCode.UNAVAILABLE, refused

                # Redis back (empty, as after a crash): everything works again.
                redis.start()
                for node in [*nodes, later]:
                    await serving(node)
                await b.Disconnect(revoke, metadata=service, timeout=READ_DEADLINE_S)
                await until(lambda: emits(c, service), "an emit accepted once Redis is back")
                carol = keys.user("carol")
                kept: list[Any] = []
                unavailable = grpc.StatusCode.UNAVAILABLE
                for _ in range(LIMIT):
                    await until(
                        lambda: opens(c, bearer(carol), kept, unavailable), "a stream opens on c"
                    )
                refused = await subscribe_error(b, carol)
                assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused
                for call in kept:
                    call.cancel()
        finally:
            later.stop()
        held.cancel()


async def emits(stub: pb_grpc.EventRouterServiceStub, service: Any) -> bool:
    try:
        await stub.Emit(update_request("alice", "y"), metadata=service, timeout=READ_DEADLINE_S)
    except grpc.aio.AioRpcError as e:
        return refused_with(e, grpc.StatusCode.UNAVAILABLE)
    return True
