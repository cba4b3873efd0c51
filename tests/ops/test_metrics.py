"""/metrics after a scripted run: every counter equals what the run did.

A real server (insecure mode, in-memory broker), real Subscribe streams of
each scope, real Emit/EmitBatch calls, then a real HTTP scrape parsed with
prometheus_client's own parser.  The run's expectations are written down as
it goes (emits by labels, deliveries from the routing table), never read back
from the server.
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from collections.abc import AsyncIterator
from types import SimpleNamespace

import grpc
import pytest

from eventrouter.server import CloseReason, RouterServer, ServerConfig, UserScopedConnection
from eventrouter.server.binding import ListenError
from eventrouter.server.core.stats import Histogram
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.e2e.client_helpers import free_port, server_on_port
from tests.ops._support import family, http_get, scrape, value
from tests.support.model import (
    USER,
    Filter,
    Scope,
    StreamReader,
    ephemeral_request,
    machine,
    routes,
    session,
    subscribe,
    update_request,
    wait_until,
)
from tests.support.servers import running_server

QUEUE_MAX_EVENTS = 16
ALICE_SCOPES: list[Scope] = [USER, session("s1"), session("s2"), machine("m1"), machine("m2")]
UPDATE_KIND = "update:new_feed_post"
EPHEMERAL_KIND = "ephemeral:activity"
ALL = "all_user_authenticated_connections"
FILTER_LABEL = {
    "all": ALL,
    "user_scoped_only": "user_scoped_only",
    "interested_in_session": "all_interested_in_session",
    "machine_scoped_only": "machine_scoped_only",
    "machine_only": "machine_only",
}
# (payload type, filter or None for the default, how many emits)
PLAN: list[tuple[str, Filter | None, int]] = [
    ("update", Filter("all"), 3),
    ("update", Filter("user_scoped_only"), 2),
    ("update", Filter("interested_in_session", "s1"), 2),
    ("update", Filter("machine_scoped_only", "m1"), 1),
    ("update", Filter("machine_only", "m2"), 1),
    ("update", None, 1),
    ("ephemeral", Filter("all"), 2),
    ("ephemeral", Filter("machine_only", "m1"), 1),
    ("ephemeral", Filter("user_scoped_only"), 1),
]


@pytest.fixture
async def server() -> AsyncIterator[RouterServer]:
    async with running_server(
        metrics_listen="127.0.0.1:0",
        queue_max_events=QUEUE_MAX_EVENTS,
        # Exact limits: the stalled queues below overflow at QUEUE_MAX_EVENTS.
        queue_overflow_grace_ms=0,
        max_streams_per_user=len(ALICE_SCOPES),
    ) as server:
        yield server


class Expected:
    """What the script did, counted independently of the server."""

    def __init__(self) -> None:
        self.emits: Counter[tuple[str, str, str]] = Counter()
        self.routed: Counter[str] = Counter()
        self.deliveries = 0

    def emitted(self, request: pb.EmitRequest, outcome: str, reached: int = 0) -> None:
        kind = request.WhichOneof("payload")
        payload = {"update": UPDATE_KIND, "ephemeral": EPHEMERAL_KIND}.get(kind or "", "none")
        recipient = request.recipient_filter.WhichOneof("filter") or ALL
        self.emits[(payload, recipient, outcome)] += 1
        if outcome == "ok":
            self.routed[kind or ""] += 1
            self.deliveries += reached


def reach(flt: Filter | None, scopes: list[Scope]) -> int:
    return sum(routes(flt or Filter("all"), scope) for scope in scopes)


async def test_metrics_count_what_the_run_did(server: RouterServer) -> None:
    assert server.ops.metrics_port
    expected = Expected()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.EventRouterServiceStub(channel)

        # Subscribers of each scope for alice; a sixth stream is over her limit.
        alice = [await subscribe(stub, "alice", scope) for scope in ALICE_SCOPES]
        with pytest.raises(grpc.aio.AioRpcError) as over_limit:
            await subscribe(stub, "alice", USER)
        assert over_limit.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # A Subscribe without any identity: an auth failure ("missing").
        anonymous = stub.Subscribe(pb.SubscribeRequest())
        with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
            await anonymous.read()
        assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # N emits of the planned kinds and filters.
        first_update: pb.EmitRequest | None = None
        for n, (kind, flt, count) in enumerate(PLAN):
            for i in range(count):
                make = update_request if kind == "update" else ephemeral_request
                request = make("alice", f"a-{n}-{i}", flt)
                response = await stub.Emit(request)
                assert response.reached == reach(flt, ALICE_SCOPES), (kind, flt)
                expected.emitted(request, "ok", response.reached)
                first_update = first_update or (request if kind == "update" else None)
        assert first_update is not None

        # One duplicate (the same update id again), one invalid emit (no payload).
        duplicate = await stub.Emit(first_update)
        assert duplicate.duplicate
        expected.emitted(first_update, "duplicate")
        invalid = pb.EmitRequest(user_id="alice")
        with pytest.raises(grpc.aio.AioRpcError) as rejected:
            await stub.Emit(invalid)
        assert rejected.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        expected.emitted(invalid, "invalid")

        # dave never reads: his connection is registered in the router with no
        # writer at all (a stalled consumer by construction, where a real one
        # would first fill the transport's buffers). His queue fills with
        # updates, so the ephemeral behind them finds no room and is dropped.
        dave = UserScopedConnection("dave")
        server.router.register(dave)
        batch = [update_request("dave", f"d-{i}") for i in range(QUEUE_MAX_EVENTS)]
        batch.append(ephemeral_request("dave", "d-e"))
        results = (await stub.EmitBatch(pb.EmitBatchRequest(emits=batch))).results
        assert [r.reached for r in results] == [1] * QUEUE_MAX_EVENTS + [0]
        for request, result in zip(batch, results, strict=True):
            expected.emitted(request, "ok", result.reached)

        # sam, stalled the same way, gets one update more than his queue holds:
        # closed as too slow and unregistered.
        sam = UserScopedConnection("sam")
        server.router.register(sam)
        batch = [update_request("sam", f"s-{i}") for i in range(QUEUE_MAX_EVENTS + 1)]
        results = (await stub.EmitBatch(pb.EmitBatchRequest(emits=batch))).results
        assert [r.reached for r in results] == [1] * QUEUE_MAX_EVENTS + [0]
        for request, result in zip(batch, results, strict=True):
            expected.emitted(request, "ok", result.reached)
        assert sam.queue is not None
        assert sam.queue.closure is not None
        assert sam.queue.closure.reason is CloseReason.TOO_SLOW
        assert server.router.registry.get(sam.connection_id) is None

        # rita resumes twice: once from a real position, once from a wrong epoch.
        positions = []
        for i in range(2):
            request = update_request("rita", f"r-{i}")
            response = await stub.Emit(request)
            expected.emitted(request, "ok", response.reached)
            positions.append(response.position)
        resumed = await subscribe(stub, "rita", USER, resume_from=positions[0])
        assert resumed.opened.resume.status == pb.RESUME_STATUS_RESUMED
        failed = await subscribe(
            stub, "rita", USER, resume_from=pb.StreamPosition(offset=1, epoch="not-the-epoch")
        )
        assert failed.opened.resume.status == pb.RESUME_STATUS_FAILED

        # A last update to alice, read by all her streams: everything before it is written.
        marker = update_request("alice", "end")
        response = await stub.Emit(marker)
        expected.emitted(marker, "ok", response.reached)
        for reader in alice:
            await reader.read_until("end")
        await resumed.read_until("r-1")
        await wait_until(
            lambda: all(
                c.queue is None or c.queue.depth == 0
                for c in server.router.registry.all()
                if c is not dave
            ),
            what="every stream's queue drained",
        )

        samples = await scrape(server.ops.metrics_port)
        assert dave.queue is not None
        dave_pending_bytes = dave.queue.pending_bytes
        _close(*alice, resumed, failed)
        server.router.remove_connection("dave", dave)

    assert value(samples, "eventrouter_node_info", node_id=server.router.node_id) == 1
    assert value(samples, "eventrouter_healthy") == 1
    # Streams by scope: alice's five, dave's and rita's two (sam's was closed).
    assert family(samples, "eventrouter_open_streams") == {
        frozenset({("scope", "user")}): 4,
        frozenset({("scope", "session")}): 2,
        frozenset({("scope", "machine")}): 2,
    }
    emits = {
        (dict(labels)["payload"], dict(labels)["filter"], dict(labels)["outcome"]): v
        for labels, v in family(samples, "eventrouter_emits_total").items()
    }
    assert emits == dict(expected.emits)
    assert (
        value(samples, "eventrouter_routed_events_total", type="update")
        == (expected.routed["update"])
    )
    assert (
        value(samples, "eventrouter_routed_events_total", type="ephemeral")
        == (expected.routed["ephemeral"])
    )
    assert value(samples, "eventrouter_duplicates_total") == 1
    assert value(samples, "eventrouter_deliveries_total") == expected.deliveries
    assert value(samples, "eventrouter_drops_total", reason="ephemeral_dropped") == 1
    assert value(samples, "eventrouter_drops_total", reason="too_slow") == 1
    assert value(samples, "eventrouter_resume_attempts_total") == 2
    assert value(samples, "eventrouter_resume_failures_total") == 1
    assert family(samples, "eventrouter_auth_failures_total") == {
        frozenset({("reason", "missing")}): 1
    }
    assert family(samples, "eventrouter_limit_rejections_total") == {
        frozenset({("kind", "streams_per_user")}): 1
    }
    # Queue depths now: eight open streams, all drained but dave's (full).
    assert value(samples, "eventrouter_queue_depth_bucket", le="0.0") == 7
    assert value(samples, "eventrouter_queue_depth_bucket", le="+Inf") == 8
    assert value(samples, "eventrouter_queue_depth_gcount") == 8
    assert value(samples, "eventrouter_queue_depth_gsum") == QUEUE_MAX_EVENTS
    assert value(samples, "eventrouter_queue_pending_bytes") == dave_pending_bytes > 0
    # One latency observation per stream write: at least one, at most one per frame.
    buckets = family(samples, "eventrouter_emit_to_write_seconds_bucket")
    counts = [v for _, v in sorted((float(dict(k)["le"]), v) for k, v in buckets.items())]
    assert counts == sorted(counts)
    writes = value(samples, "eventrouter_emit_to_write_seconds_count")
    assert writes is not None
    assert 0 < writes <= expected.deliveries + 1
    assert counts[-1] == writes
    # No broker_stats on a single in-memory node: no broker series.
    assert not [name for name, _ in samples if name.startswith("eventrouter_broker_")]


def _close(*readers: StreamReader) -> None:
    for reader in readers:
        reader.cancel()


async def test_broker_stats_are_exported_when_the_server_has_them(server: RouterServer) -> None:
    assert server.ops.metrics_port
    latency = Histogram()
    latency.observe(0.002)
    latency.observe(0.2)
    server.broker_stats = SimpleNamespace(  # type: ignore[attr-defined]
        publish_latency=latency, publish_errors=Counter({"timeout": 3})
    )
    samples = await scrape(server.ops.metrics_port)
    assert value(samples, "eventrouter_broker_publish_seconds_count") == 2
    assert value(samples, "eventrouter_broker_publish_seconds_bucket", le="0.0025") == 1
    assert value(samples, "eventrouter_broker_publish_errors_total", reason="timeout") == 3

    server.broker_stats = SimpleNamespace(publish_errors=5)  # type: ignore[attr-defined]
    samples = await scrape(server.ops.metrics_port)
    assert value(samples, "eventrouter_broker_publish_errors_total") == 5
    assert value(samples, "eventrouter_broker_publish_seconds_count") is None


async def test_metrics_endpoint_speaks_http(server: RouterServer) -> None:
    port = server.ops.metrics_port
    assert port
    openmetrics = await http_get(
        port, "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert openmetrics.status == 200
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.body.rstrip().endswith(b"# EOF")
    head = await http_get(port, "/metrics", method="HEAD")
    assert head.status == 200
    assert head.body == b""
    assert int(head.headers["content-length"]) > 0
    assert (await http_get(port, "/nope")).status == 404
    post = await http_get(port, "/metrics", method="POST")
    assert post.status == 405
    assert post.headers["allow"] == "GET, HEAD"


async def test_a_busy_metrics_port_stops_the_start_and_leaves_nothing_bound() -> None:
    grpc_port = free_port()
    async with running_server(metrics_listen="127.0.0.1:0") as first:
        taken = first.ops.metrics_port
        second = RouterServer(
            ServerConfig(
                listen=f"127.0.0.1:{grpc_port}", metrics_listen=f"127.0.0.1:{taken}", insecure=True
            )
        )
        with pytest.raises(ListenError) as refused:
            await second.start()
        assert str(refused.value) == (
            f"cannot listen on 127.0.0.1:{taken} for metrics and the status page:"
            f" {os.strerror(errno.EADDRINUSE)}; change it with --metrics-listen"
        )
    # The gRPC port the failed start had bound is free again.
    async with server_on_port(grpc_port, insecure=True, metrics_listen="") as third:
        assert third.port == grpc_port


async def test_evicted_ephemerals_count_as_drops(server: RouterServer) -> None:
    assert server.ops.metrics_port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.EventRouterServiceStub(channel)
        # erin never reads (registered with no writer): the last ephemeral
        # evicts the first one to make room.
        connection = UserScopedConnection("erin")
        server.router.register(connection)
        batch = [ephemeral_request("erin", f"e-{i}") for i in range(QUEUE_MAX_EVENTS + 1)]
        await stub.EmitBatch(pb.EmitBatchRequest(emits=batch))
        assert connection.queue is not None
        assert connection.queue.dropped_ephemeral == 1
        samples = await scrape(server.ops.metrics_port)
        server.router.remove_connection("erin", connection)
    assert value(samples, "eventrouter_drops_total", reason="ephemeral_dropped") == 1
