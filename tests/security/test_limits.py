"""Limits that protect a node from one caller: each rejection has a precise status and counter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from eventrouter.server import RouterServer, ServerConfig
from eventrouter.server.transports.grpc_aio import GrpcAdapter
from eventrouter.v1 import events_pb2 as ev
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from eventrouter.v1 import routing_pb2 as rt
from tests.security.helpers import (
    Keys,
    Stream,
    bearer,
    connect,
    counters,
    eventually,
    expect_markers,
    expect_status,
    machine_scope,
    marker_emit,
    moved,
    open_stream,
    secure_server,
    session_scope,
    subscribe_error,
    update_emit,
    user_scope,
)

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
async def limited(
    request: pytest.FixtureRequest, keys_file: Path
) -> AsyncIterator[tuple[RouterServer, pb_grpc.EventRouterServiceStub]]:
    overrides: dict[str, Any] = request.param
    async with secure_server(keys_file, **overrides) as server, connect(server) as stub:
        yield server, stub


def limits(**overrides: Any) -> Any:
    return pytest.mark.parametrize("limited", [overrides], indirect=True, ids=[""])


async def _cancel_all(streams: list[Stream], server: RouterServer) -> None:
    for stream in streams:
        stream.cancel()
    await eventually(lambda: len(server.router.registry) == 0, "streams unregistered")


# -- streams -----------------------------------------------------------------


@limits(max_streams_per_user=2)
async def test_max_streams_per_user(
    keys: Keys, limited: tuple[RouterServer, pb_grpc.EventRouterServiceStub]
) -> None:
    server, stub = limited
    alice = [await open_stream(stub, keys.user("alice")) for _ in range(2)]
    before = counters(server)
    error = await subscribe_error(stub, keys.user("alice"), session_scope("s1"))
    assert error.code() == EXHAUSTED
    assert error.details() == "user already holds 2 streams (the maximum)"
    after = counters(server)
    assert moved(before[1], after[1]) == {"streams_per_user": 1}
    assert moved(before[0], after[0]) == {}
    assert server.router.registry.count_of_user("alice") == 2
    # Other users are not affected; a freed slot can be reused.
    bob = await open_stream(stub, keys.user("bob"))
    alice[0].cancel()
    await eventually(lambda: server.router.registry.count_of_user("alice") == 1, "slot freed")
    alice[0] = await open_stream(stub, keys.user("alice"))
    await _cancel_all([*alice, bob], server)


@limits(max_streams_per_node=2)
async def test_max_streams_per_node(
    keys: Keys, limited: tuple[RouterServer, pb_grpc.EventRouterServiceStub]
) -> None:
    server, stub = limited
    streams = [await open_stream(stub, keys.user(u)) for u in ("alice", "bob")]
    before = counters(server)[1]
    for user in ("carol", "alice"):
        error = await subscribe_error(stub, keys.user(user))
        assert error.code() == EXHAUSTED
        assert error.details() == "node is at its stream limit"
    assert moved(before, counters(server)[1]) == {"streams_per_node": 2}
    assert len(server.router.registry) == 2
    streams[1].cancel()
    await eventually(lambda: len(server.router.registry) == 1, "slot freed")
    streams[1] = await open_stream(stub, keys.user("carol"))
    await _cancel_all(streams, server)


# -- ids ---------------------------------------------------------------------

LONG = "x" * 9


def _long_id_rejections(keys: Keys) -> dict[str, tuple[str, Any]]:
    """case -> (field named in the details, coroutine factory taking the stub)."""
    service = bearer(keys.service())
    filter_session = pb.EmitRequest(
        user_id="alice",
        ephemeral=ev.EphemeralPayload(activity=ev.SessionActivity(session_id="s")),
        recipient_filter=rt.RecipientFilter(
            all_interested_in_session=rt.AllInterestedInSession(session_id=LONG)
        ),
    )
    return {
        "token subject": ("user_id", lambda s: subscribe_error(s, keys.user(LONG))),
        "session scope": (
            "scope.session.session_id",
            lambda s: subscribe_error(s, keys.user("alice"), session_scope(LONG)),
        ),
        "machine scope": (
            "scope.machine.machine_id",
            lambda s: subscribe_error(s, keys.user("alice"), machine_scope(LONG)),
        ),
        "emit user": (
            "user_id",
            lambda s: expect_status(s.Emit(marker_emit(LONG, "m"), metadata=service), INVALID),
        ),
        "emit filter session": (
            "recipient_filter.all_interested_in_session.session_id",
            lambda s: expect_status(s.Emit(filter_session, metadata=service), INVALID),
        ),
        "batch user": (
            "emits[1].user_id",
            lambda s: expect_status(
                s.EmitBatch(
                    pb.EmitBatchRequest(emits=[marker_emit("alice", "m"), marker_emit(LONG, "m")]),
                    metadata=service,
                ),
                INVALID,
            ),
        ),
        "connections user": (
            "user_id",
            lambda s: expect_status(
                s.GetConnections(pb.GetConnectionsRequest(user_id=LONG), metadata=service),
                INVALID,
            ),
        ),
        "disconnect machine": (
            "machine.machine_id",
            lambda s: expect_status(
                s.Disconnect(
                    pb.DisconnectRequest(
                        machine=pb.MachineSelector(user_id="alice", machine_id=LONG)
                    ),
                    metadata=service,
                ),
                INVALID,
            ),
        ),
    }


@limits(id_max_length=8)
async def test_id_max_length(
    keys: Keys, limited: tuple[RouterServer, pb_grpc.EventRouterServiceStub]
) -> None:
    server, stub = limited
    witness = await open_stream(stub, keys.user("alice"))
    for case, (field, attempt) in _long_id_rejections(keys).items():
        error = await attempt(stub)
        assert error.code() == INVALID, (case, error.code())
        assert error.details() == f"{field}: longer than 8 characters", case
    # Exactly at the limit is fine.
    at_limit = "y" * 8
    (await open_stream(stub, keys.user(at_limit), session_scope(at_limit))).cancel()
    # Nothing rejected was registered or delivered.
    sent = await stub.Emit(marker_emit("alice", "after"), metadata=bearer(keys.service()))
    assert sent.reached == 1
    await expect_markers(witness, ["after"])
    witness.cancel()
    await eventually(lambda: len(server.router.registry) == 0, "streams unregistered")


@limits(id_max_length=8)
async def test_id_max_length_rejections_are_counted(
    keys: Keys, limited: tuple[RouterServer, pb_grpc.EventRouterServiceStub]
) -> None:
    server, stub = limited
    before = counters(server)
    error = await subscribe_error(stub, keys.user("alice"), session_scope(LONG))
    assert error.code() == INVALID
    after = counters(server)
    assert sum(moved(before[1], after[1]).values()) + sum(moved(before[0], after[0]).values()) == 1


# -- emit rate ---------------------------------------------------------------


@limits(emit_rate_per_service=0.001, emit_burst_per_service=3)
async def test_emit_rate_per_service(
    keys: Keys, limited: tuple[RouterServer, pb_grpc.EventRouterServiceStub]
) -> None:
    server, stub = limited
    stream = await open_stream(stub, keys.user("alice"))
    svc_a = bearer(keys.service("svc-a"))
    for i in range(3):
        sent = await stub.Emit(marker_emit("alice", f"a{i}"), metadata=svc_a)
        assert sent.reached == 1
    before = counters(server)[1]
    await expect_status(
        stub.Emit(marker_emit("alice", "a-over"), metadata=svc_a),
        EXHAUSTED,
        "emit rate limit of 0.001 events/s exceeded",
    )
    # The bucket belongs to the service (the token's subject), not to one token.
    await expect_status(
        stub.Emit(marker_emit("alice", "a-over2"), metadata=bearer(keys.service("svc-a"))),
        EXHAUSTED,
    )
    assert moved(before, counters(server)[1]) == {"emit_rate": 2}
    # Another service has its own bucket; a batch larger than the burst is refused whole.
    svc_b = bearer(keys.service("svc-b"))
    big = pb.EmitBatchRequest(emits=[marker_emit("alice", f"b-big{i}") for i in range(4)])
    await expect_status(stub.EmitBatch(big, metadata=svc_b), EXHAUSTED)
    assert counters(server)[1]["emit_rate"] == 3
    # ... and takes nothing from the bucket: a batch of exactly the burst still passes.
    fits = pb.EmitBatchRequest(emits=[marker_emit("alice", f"b{i}") for i in range(3)])
    result = await stub.EmitBatch(fits, metadata=svc_b)
    assert [r.reached for r in result.results] == [1, 1, 1]
    await expect_status(stub.Emit(marker_emit("alice", "b-over"), metadata=svc_b), EXHAUSTED)
    # Exactly the accepted events arrived, in order.
    await expect_markers(stream, ["a0", "a1", "a2", "b0", "b1", "b2"])
    stream.cancel()


# -- sizes -------------------------------------------------------------------


@limits(max_event_bytes=1000, max_request_bytes=100_000)
async def test_max_event_bytes(
    keys: Keys, limited: tuple[RouterServer, pb_grpc.EventRouterServiceStub]
) -> None:
    _, stub = limited
    service = bearer(keys.service())
    stream = await open_stream(stub, keys.user("alice"))
    error = await expect_status(
        stub.Emit(update_emit("alice", "u-big", size=2000), metadata=service), EXHAUSTED
    )
    assert (error.details() or "").startswith("update: event is "), error.details()
    assert (error.details() or "").endswith("bytes, the maximum is 1000")
    big_ephemeral = pb.EmitRequest(
        user_id="alice",
        ephemeral=ev.EphemeralPayload(
            usage=ev.Usage(session_id="s", key="k" * 2000, timestamp_ms=1)
        ),
    )
    error = await expect_status(stub.Emit(big_ephemeral, metadata=service), EXHAUSTED)
    assert (error.details() or "").startswith("ephemeral: event is ")
    batch = pb.EmitBatchRequest(
        emits=[marker_emit("alice", "first"), update_emit("alice", "u-big2", size=2000)]
    )
    error = await expect_status(stub.EmitBatch(batch, metadata=service), EXHAUSTED)
    assert (error.details() or "").startswith("emits[1].update: event is ")
    # Just under the limit passes; none of the refused events (nor the batch's first) arrived.
    sent = await stub.Emit(update_emit("alice", "u-ok", size=900), metadata=service)
    assert sent.reached == 1
    await expect_markers(stream, ["update:u-ok"])
    stream.cancel()


@limits(max_event_bytes=1000, max_request_bytes=100_000)
async def test_max_event_bytes_rejections_are_counted(
    keys: Keys, limited: tuple[RouterServer, pb_grpc.EventRouterServiceStub]
) -> None:
    server, stub = limited
    before = counters(server)[1]
    await expect_status(
        stub.Emit(update_emit("alice", "u", size=2000), metadata=bearer(keys.service())),
        EXHAUSTED,
    )
    assert sum(moved(before, counters(server)[1]).values()) == 1


@limits(max_event_bytes=1000, max_request_bytes=4096)
async def test_max_request_bytes_is_enforced_by_grpc(
    keys: Keys, limited: tuple[RouterServer, pb_grpc.EventRouterServiceStub]
) -> None:
    server, stub = limited
    service = bearer(keys.service())
    stream = await open_stream(stub, keys.user("alice"))
    # Every event fits max_event_bytes, the request as a whole does not.
    batch = pb.EmitBatchRequest(emits=[update_emit("alice", f"u{i}", size=800) for i in range(8)])
    assert batch.ByteSize() > 4096
    before = counters(server)
    error = await expect_status(stub.EmitBatch(batch, metadata=service), EXHAUSTED)
    assert "larger than max" in (error.details() or ""), error.details()
    big_subscribe = pb.SubscribeRequest(scope=session_scope("s" * 5000))
    error = await subscribe_error(stub, keys.user("alice"), request=big_subscribe)
    assert error.code() == EXHAUSTED
    # Refused by gRPC before the service ran: no counter of ours, nothing delivered.
    assert counters(server) == before
    sent = await stub.Emit(marker_emit("alice", "after"), metadata=service)
    assert sent.reached == 1
    await expect_markers(stream, ["after"])
    stream.cancel()


# -- handshakes --------------------------------------------------------------


@limits(max_concurrent_handshakes=0)
async def test_handshake_cap_refuses_with_resource_exhausted(
    keys: Keys, limited: tuple[RouterServer, pb_grpc.EventRouterServiceStub]
) -> None:
    server, stub = limited
    error = await subscribe_error(stub, keys.user("alice"))
    assert error.code() == EXHAUSTED
    assert error.details() == "too many concurrent Subscribe handshakes"
    assert counters(server) == ({}, {"handshakes": 1})
    assert len(server.router.registry) == 0


@limits(max_concurrent_handshakes=1)
async def test_handshakes_are_released(
    keys: Keys, limited: tuple[RouterServer, pb_grpc.EventRouterServiceStub]
) -> None:
    server, stub = limited
    # Refused handshakes (bad token, denied scope, bad request) give their slot back ...
    for token, scope in [
        ("garbage", user_scope()),
        (keys.user("alice", machine_id="m1"), user_scope()),
        (keys.user("alice"), rt.ConnectionScope()),
    ]:
        error = await subscribe_error(stub, token, scope)
        assert error.code() != EXHAUSTED, error.details()
    # ... and so does a stream once its first event is written: many streams, one slot.
    streams = [await open_stream(stub, keys.user(f"user{i}")) for i in range(5)]
    assert counters(server)[1] == {}
    assert server.service.state.handshakes == 0
    await _cancel_all(streams, server)


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details


class FakeContext:
    """The part of grpc.aio's ServicerContext that subscribe uses; ``write`` can be held."""

    def __init__(self, token: str, gate: asyncio.Event | None = None) -> None:
        self.metadata = tuple(bearer(token))
        self.gate = gate
        self.writes: list[bytes] = []

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    async def write(self, data: bytes) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.writes.append(data)

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


async def test_handshake_cap_counts_subscribes_until_their_first_write(
    keys: Keys, keys_file: Path
) -> None:
    # Service level: a real handshake cannot be held open deterministically over
    # gRPC (the first write is small and always fits the flow-control window), so
    # a fake context whose write blocks on an event stands in for a slow peer,
    # through the gRPC adapter.
    # The server is built as in production, but not started.
    config = ServerConfig(keys_file=str(keys_file), max_concurrent_handshakes=1)
    service = RouterServer(config).service
    router = service.state.router
    adapter = GrpcAdapter(service)
    request = pb.SubscribeRequest(scope=user_scope())
    gate = asyncio.Event()
    held = FakeContext(keys.user("alice"), gate)
    first = asyncio.create_task(adapter.subscribe(request, held))
    tasks = [first]
    try:
        await eventually(lambda: len(router.registry) == 1, "first subscribe registered")
        assert held.writes == []
        with pytest.raises(Aborted) as refused:
            await adapter.subscribe(request, FakeContext(keys.user("bob")))
        assert refused.value.code == EXHAUSTED
        assert service.security_stats.limit_rejections == {"handshakes": 1}
        assert router.registry.count_of_user("bob") == 0
        gate.set()
        await eventually(lambda: len(held.writes) == 1, "first write done")
        after = FakeContext(keys.user("bob"))
        tasks.append(asyncio.create_task(adapter.subscribe(request, after)))
        await eventually(lambda: len(after.writes) == 1, "second subscribe opened")
        assert service.security_stats.limit_rejections == {"handshakes": 1}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert len(router.registry) == 0
