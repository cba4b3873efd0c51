"""One stalled consumer, through real gRPC streams: it costs its own queue and nothing else.

sam has a stream that stops reading (its client never reads, so the
server's writes block once the transport's windows are full), a prompt
sibling stream, and bea is another user.  The bound stated in the README:
nothing that delivers waits for a connection, so everything emitted for
the others reaches them while the stalled stream is still open, within its
overflow grace; the stalled stream then ends RESOURCE_EXHAUSTED and a
resume gives it exactly what it missed.  (Timings are in the benchmark,
W2s; here only the order of what happens is asserted.)
"""

from __future__ import annotations

import grpc

from eventrouter.server import RouterServer
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.support.model import (
    USER,
    Delivered,
    StreamReader,
    connection_ids,
    session,
    subscribe,
    update_request,
    wait_until,
)
from tests.support.servers import running_server

PAD = 20_000  # bytes per update: a few hundred fill any transport window
GRACE_MS = 10_000


async def read_updates(reader: StreamReader, count: int) -> list[Delivered]:
    while sum(1 for d in reader.received if d.kind == "update") < count:
        await reader.next_event()
    return [d for d in reader.received if d.kind == "update"]


def stalled_queue_over_limits(server: RouterServer, connection_id: str) -> bool:
    connection = server.router.registry.get(connection_id)
    return connection is not None and connection.queue is not None and connection.queue.over_limits


async def stalled_stream_scenario(
    holder: RouterServer,
    emitter: pb_grpc.EventRouterServiceStub,
    on_holder: pb_grpc.EventRouterServiceStub,
    stalled_channel: grpc.aio.Channel,
) -> None:
    """sam's stalled stream, his prompt sibling and bea, all on ``holder``; emits via ``emitter``.

    ``on_holder`` calls ``holder`` (it may be ``emitter``): the streams open
    through it, and the stalled one on its own channel so that its transport
    holds nobody else's.
    """
    stalled = await subscribe(pb_grpc.EventRouterServiceStub(stalled_channel), "sam", USER)
    sibling = await subscribe(on_holder, "sam", session("s1"))
    other = await subscribe(on_holder, "bea", USER)
    sent: list[str] = []
    try:
        # Single Emits to sam until the stalled stream's queue is over its
        # limits: each is answered at once (none waits for it).
        while not stalled_queue_over_limits(holder, stalled.connection_id):
            assert len(sent) < 2_000, "the stalled stream never backed up"
            sent.append(f"s{len(sent)}")
            await emitter.Emit(update_request("sam", sent[-1], pad=PAD))
        # While it stays stalled: more for sam, and a batch for bea.
        for _ in range(10):
            sent.append(f"s{len(sent)}")
            await emitter.Emit(update_request("sam", sent[-1], pad=PAD))
        bea = [f"b{i}" for i in range(50)]
        await emitter.EmitBatch(pb.EmitBatchRequest(emits=[update_request("bea", b) for b in bea]))
        # The bound: all of it reached the prompt streams while the stalled one
        # is still open (within its grace).
        got_bea = await read_updates(other, len(bea))
        got_sibling = await read_updates(sibling, len(sent))
        assert holder.router.registry.get(stalled.connection_id) is not None
        assert [d.event_id for d in got_bea] == bea
        assert [d.event_id for d in got_sibling] == sent
        assert [d.offset for d in got_sibling] == list(range(1, len(sent) + 1))

        # Then the grace ends: the stalled stream is cut off as too slow, leaves
        # the registry and presence at once, and resumes without loss.
        # (Reading it before that would end its stall, and its overdraft.)
        await wait_until(
            lambda: holder.router.registry.get(stalled.connection_id) is None,
            within_s=GRACE_MS / 1000 + 30,
            what="the stalled stream's grace to end",
        )

        async def gone() -> bool:
            return stalled.connection_id not in await connection_ids(emitter, "sam")

        await wait_until(gone, what="the stalled stream to leave GetConnections")
        status = await stalled.read_until_status()
        assert status.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, status
        assert "too slow" in (status.details() or "")
        assert holder.router.stats.closed_too_slow == 1
        before = [d.event_id for d in stalled.received if d.kind == "update"]
        assert before == sent[: len(before)], "the stalled stream had a gap"
        resumed = await subscribe(on_holder, "sam", USER, resume_from=stalled.last_position)
        try:
            assert resumed.opened.resume.status == pb.RESUME_STATUS_RESUMED
            after = await read_updates(resumed, len(sent) - len(before))
            assert before + [d.event_id for d in after] == sent
        finally:
            resumed.cancel()
    finally:
        for reader in (stalled, sibling, other):
            reader.cancel()


async def test_a_stalled_stream_delays_nobody_and_resumes_without_loss() -> None:
    async with running_server(queue_max_events=64, queue_overflow_grace_ms=GRACE_MS) as server:
        address = f"127.0.0.1:{server.port}"
        async with (
            grpc.aio.insecure_channel(address) as stalled_channel,
            grpc.aio.insecure_channel(address) as channel,
        ):
            stub = pb_grpc.EventRouterServiceStub(channel)
            await stalled_stream_scenario(server, stub, stub, stalled_channel)


async def test_a_stalled_stream_past_twice_its_limits_is_cut_off_at_once() -> None:
    # No waiting for the grace when the overdraft's bound is reached.
    async with running_server(queue_max_events=64, queue_overflow_grace_ms=600_000) as server:
        address = f"127.0.0.1:{server.port}"
        async with (
            grpc.aio.insecure_channel(address) as stalled_channel,
            grpc.aio.insecure_channel(address) as channel,
        ):
            stub = pb_grpc.EventRouterServiceStub(channel)
            stalled = await subscribe(pb_grpc.EventRouterServiceStub(stalled_channel), "sam", USER)
            try:
                sent = 0
                while server.router.registry.get(stalled.connection_id) is not None:
                    assert sent < 3_000, "never cut off"
                    batch = [update_request("sam", f"s{sent + i}", pad=PAD) for i in range(20)]
                    await stub.EmitBatch(pb.EmitBatchRequest(emits=batch))
                    sent += len(batch)
                assert server.router.stats.closed_too_slow == 1
                status = await stalled.read_until_status()
                assert status.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            finally:
                stalled.cancel()
