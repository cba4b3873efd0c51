"""One stalled stream on a cluster node costs the others on that node nothing.

Two real nodes (gRPC servers with their own Redis brokers and subscriber
connections) share a real redis-server; they run in this test's process, so
the test can see the stalled stream's queue.  Emits go to node A; sam's
stalled stream, his prompt sibling and another user bea are on node B, whose
single Redis reader delivers to all of them: it must never wait on the
stalled one.  Order is asserted, not speed (the benchmark's W2s has timings).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from eventrouter.server import RouterServer
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.cluster.conftest import Backend
from tests.cluster.nodes import BROKER_OPTIONS
from tests.e2e.test_isolation import GRACE_MS, PAD, read_updates, stalled_queue_over_limits
from tests.support.model import USER, connection_ids, session, subscribe, update_request, wait_until
from tests.support.servers import running_server

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def two_nodes(backend: Backend, **overrides: Any) -> AsyncIterator[list[RouterServer]]:
    sep = "&" if "?" in backend.url else "?"
    broker = f"{backend.url}{sep}{BROKER_OPTIONS}"
    async with (
        running_server(broker=broker, node_id="a", **overrides) as a,
        running_server(broker=broker, node_id="b", **overrides) as b,
    ):
        yield [a, b]


async def test_a_stalled_stream_on_a_node_delays_nobody_there(backend: Backend) -> None:
    async with (
        two_nodes(backend, queue_max_events=64, queue_overflow_grace_ms=GRACE_MS) as (
            node_a,
            node_b,
        ),
        grpc.aio.insecure_channel(f"127.0.0.1:{node_a.port}") as to_a,
        grpc.aio.insecure_channel(f"127.0.0.1:{node_b.port}") as to_b,
        grpc.aio.insecure_channel(f"127.0.0.1:{node_b.port}") as stalled_channel,
    ):
        emitter = pb_grpc.EventRouterServiceStub(to_a)
        on_b = pb_grpc.EventRouterServiceStub(to_b)
        stalled = await subscribe(pb_grpc.EventRouterServiceStub(stalled_channel), "sam", USER)
        sibling = await subscribe(on_b, "sam", session("s1"))
        other = await subscribe(on_b, "bea", USER)
        sent: list[str] = []
        try:
            while not stalled_queue_over_limits(node_b, stalled.connection_id):
                assert len(sent) < 2_000, "the stalled stream never backed up"
                sent.append(f"s{len(sent)}")
                await emitter.Emit(update_request("sam", sent[-1], pad=PAD))
            bea = [f"b{i}" for i in range(50)]
            await emitter.EmitBatch(
                pb.EmitBatchRequest(emits=[update_request("bea", b) for b in bea])
            )
            got_bea = await read_updates(other, len(bea))
            got_sibling = await read_updates(sibling, len(sent))
            # Node B's reader delivered all of it while the stalled stream
            # was still open, within its grace.
            assert node_b.router.registry.get(stalled.connection_id) is not None
            assert [d.event_id for d in got_bea] == bea
            assert [d.event_id for d in got_sibling] == sent

            await wait_until(
                lambda: node_b.router.registry.get(stalled.connection_id) is None,
                within_s=GRACE_MS / 1000 + 30,
                what="the stalled stream's grace to end",
            )
            # Gone from cluster presence at once, not when its client reads again.
            await wait_until(
                lambda: _absent(emitter, stalled.connection_id),
                what="the stalled stream to leave GetConnections",
            )
            status = await stalled.read_until_status()
            assert status.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, status
            before = [d.event_id for d in stalled.received if d.kind == "update"]
            assert before == sent[: len(before)]
            resumed = await subscribe(on_b, "sam", USER, resume_from=stalled.last_position)
            try:
                after = await read_updates(resumed, len(sent) - len(before))
                assert before + [d.event_id for d in after] == sent
            finally:
                resumed.cancel()
        finally:
            for reader in (stalled, sibling, other):
                reader.cancel()


async def _absent(stub: pb_grpc.EventRouterServiceStub, connection_id: str) -> bool:
    return connection_id not in await connection_ids(stub, "sam")
