"""Delivery guarantees: per-user order, slow consumers, bounded memory, resume,
idempotency, heartbeats, graceful shutdown and vanished clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventrouter.server import RouterServer, ServerConfig
from eventrouter.server.core import wire
from eventrouter.server.core.filters import UserScopedOnly
from eventrouter.server.core.queue import OVERDRAFT, CloseReason, QueueLimits
from eventrouter.server.core.router import EventRouter, RouterLimits
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.support.model import (
    USER,
    Delivered,
    Filter,
    ModelQueue,
    StreamReader,
    connection_ids,
    core_connection,
    ephemeral_payload,
    ephemeral_request,
    free_port,
    machine,
    session,
    subscribe,
    update_payload,
    update_request,
    wait_until,
)
from tests.support.servers import running_server


@contextlib.asynccontextmanager
async def served(**overrides: Any) -> AsyncIterator[tuple[RouterServer, Any]]:
    """A server with ``overrides`` and a stub on its own channel."""
    async with (
        running_server(**overrides) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        yield server, pb_grpc.EventRouterServiceStub(channel)


async def read_updates(reader: StreamReader, count: int) -> list[Delivered]:
    """Read until ``count`` updates have been received in total on this reader."""
    while sum(1 for d in reader.received if d.kind == "update") < count:
        await reader.next_event()
    return [d for d in reader.received if d.kind == "update"]


# ---------------------------------------------------------------------------
# Per-user order
# ---------------------------------------------------------------------------


async def test_every_connection_of_a_user_sees_one_order(
    stub: pb_grpc.EventRouterServiceStub,
) -> None:
    users = ("ann", "ben")
    readers = {
        u: [await subscribe(stub, u, s) for s in (USER, session("s1"), machine("m1"))]
        for u in users
    }
    emitters, per_emitter = 4, 40

    async def emitter(k: int) -> dict[str, int]:
        offsets: dict[str, int] = {}
        for i in range(per_emitter):
            for u in users:
                event_id = f"{u}-{k}-{i}"
                if i % 5 == 4:
                    await stub.Emit(ephemeral_request(u, event_id))
                else:
                    response = await stub.Emit(update_request(u, event_id))
                    offsets[event_id] = response.position.offset
        return offsets

    try:
        results = await asyncio.gather(*(emitter(k) for k in range(emitters)))
        assigned = {eid: off for r in results for eid, off in r.items()}
        total = emitters * per_emitter
        for u in users:
            await stub.Emit(update_request(u, f"{u}-end"))
            sequences = [await r.read_until(f"{u}-end") for r in readers[u]]
            # Same order, ephemerals included, on every connection of the user.
            assert sequences[0] == sequences[1] == sequences[2]
            seq = sequences[0]
            assert len(seq) == total
            assert all(d.event_id.startswith(f"{u}-") for d in seq), "users interleaved"
            updates = [d for d in seq if d.kind == "update"]
            assert [d.offset for d in updates] == list(range(1, len(updates) + 1))
            assert all(assigned[d.event_id] == d.offset for d in updates)
            # Each emitter's events arrive in the order it emitted them.
            for k in range(emitters):
                mine = [d.event_id for d in seq if d.event_id.startswith(f"{u}-{k}-")]
                assert mine == [f"{u}-{k}-{i}" for i in range(per_emitter)]
    finally:
        for rs in readers.values():
            for r in rs:
                r.cancel()


# ---------------------------------------------------------------------------
# Slow consumer
# ---------------------------------------------------------------------------


async def test_slow_consumer_is_cut_off_and_resumes_without_gap_or_duplicate() -> None:
    total, batch, pad = 10_000, 16, 2000
    async with served(queue_max_events=64, history_max_updates=total) as (server, stub):
        address = f"127.0.0.1:{server.port}"
        # Separate channels: the stalled stream must not hold up its siblings'
        # transport.
        async with (
            grpc.aio.insecure_channel(address) as ch_stalled,
            grpc.aio.insecure_channel(address) as ch_a,
            grpc.aio.insecure_channel(address) as ch_b,
        ):
            stalled = await subscribe(pb_grpc.EventRouterServiceStub(ch_stalled), "sam", USER)
            siblings = [
                await subscribe(pb_grpc.EventRouterServiceStub(ch), "sam", scope)
                for ch, scope in ((ch_a, session("s1")), (ch_b, machine("m1")))
            ]
            readers = [asyncio.create_task(read_updates(s, total)) for s in siblings]
            try:
                for start in range(0, total, batch):
                    emits = [
                        update_request("sam", f"n{i}", pad=pad) for i in range(start, start + batch)
                    ]
                    await stub.EmitBatch(pb.EmitBatchRequest(emits=emits))
                async with asyncio.timeout(60):
                    got = await asyncio.gather(*readers)
            finally:
                for task in readers:
                    task.cancel()
            expected = [Delivered("update", f"n{i}", i + 1) for i in range(total)]
            for sibling_got in got:
                assert sibling_got == expected

            status = await stalled.read_until_status()
            assert status.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, status
            assert "too slow" in (status.details() or "")
            before = [d for d in stalled.received if d.kind == "update"]
            assert before == expected[: len(before)], "the stalled stream had a gap"
            assert len(before) < total
            assert server.router.stats.closed_too_slow == 1
            assert stalled.connection_id not in await connection_ids(stub, "sam")

            resumed = await subscribe(
                pb_grpc.EventRouterServiceStub(ch_stalled),
                "sam",
                USER,
                resume_from=stalled.last_position,
            )
            try:
                assert resumed.opened.resume.status == pb.RESUME_STATUS_RESUMED
                assert resumed.opened.resume.replayed == total - len(before)
                after = await read_updates(resumed, total - len(before))
                assert before + after == expected
            finally:
                resumed.cancel()
                for s in siblings:
                    s.cancel()


@pytest.mark.parametrize("kind", ["update", "ephemeral"])
async def test_a_large_batch_does_not_hurt_a_reading_subscriber(kind: str) -> None:
    async with served(queue_max_events=64) as (_server, stub):
        reader = await subscribe(stub, "bea", USER)
        try:
            make = update_request if kind == "update" else ephemeral_request
            emits = [make("bea", f"b{i}") for i in range(100)]
            response = await stub.EmitBatch(pb.EmitBatchRequest(emits=emits))
            assert [r.reached for r in response.results] == [1] * 100
            await stub.Emit(update_request("bea", "end"))
            got = await reader.read_until("end")
            assert [d.event_id for d in got] == [f"b{i}" for i in range(100)]
        finally:
            reader.cancel()


# ---------------------------------------------------------------------------
# Memory bound
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("in_grace", [False, True], ids=["no-grace", "in-grace"])
def test_stalled_consumer_memory_is_bounded(in_grace: bool) -> None:
    # The embedded EventRouter, not gRPC: 100,000 emits through the service
    # would take most of this suite's time budget.  The queue is the same.
    # in_grace: an overflow grace that never ends here (the bound is then
    # twice the limits), or none (exactly the limits).
    overdraft = OVERDRAFT if in_grace else 1
    limits = QueueLimits(max_events=64, max_bytes=4096, overflow_grace_s=3600 * in_grace)
    router = EventRouter(RouterLimits(queue=limits))
    max_events, max_bytes = limits.max_events * overdraft, limits.max_bytes * overdraft
    app = core_connection("u", USER)  # gets everything: closes once updates fill it
    viewer = core_connection("u", session("s1"))  # gets only the ephemerals
    opened = router.add_connection("u", app)
    router.add_connection("u", viewer)
    assert app.queue is not None
    assert viewer.queue is not None
    models = {
        id(app): ModelQueue(max_events, max_bytes),
        id(viewer): ModelQueue(max_events, max_bytes),
    }
    rng = random.Random(7)
    updates = ephemerals = 0
    for n in range(100_000):
        if rng.random() < 0.01:
            updates += 1
            payload = update_payload(f"u{n}")
            size = len(wire.update_frame(payload.SerializeToString(), updates, opened.epoch))
            router.emit_update("u", payload, UserScopedOnly())
            models[id(app)].push(True, size)
        else:
            ephemerals += 1
            eph = ephemeral_payload(f"e{n}", pad=rng.randrange(0, 200))
            size = len(wire.ephemeral_frame(eph.SerializeToString()))
            router.emit_ephemeral("u", eph)
            for conn in (app, viewer):
                models[id(conn)].push(False, size)
        for conn in (app, viewer):
            queue, model = conn.queue, models[id(conn)]
            assert queue is not None
            assert queue.depth <= max_events
            assert queue.pending_bytes <= max_bytes
            assert queue.dropped_ephemeral == model.dropped
            assert (queue.closure is not None) == model.closed
            if not model.closed:
                assert (queue.depth, queue.pending_bytes) == (len(model.items), model.bytes)
    # The app's queue filled with updates and was cut off (an update is never dropped).
    assert app.queue.closure is not None
    assert app.queue.closure.reason is CloseReason.TOO_SLOW
    assert router.stats.closed_too_slow == 1
    assert [c.connection_id for c in router.get_connections("u")] == [viewer.connection_id]
    # The viewer stayed open through all 100,000: it holds at most 64 events and
    # every other ephemeral was dropped and counted.
    assert viewer.queue.closure is None
    assert viewer.queue.dropped_ephemeral == ephemerals - viewer.queue.depth
    assert viewer.queue.depth == max_events or viewer.queue.pending_bytes > max_bytes - 250
    assert updates > max_events


# ---------------------------------------------------------------------------
# Resume property
# ---------------------------------------------------------------------------

resume_ops = st.lists(
    st.one_of(
        st.tuples(st.just("emit"), st.integers(1, 6), st.booleans()),
        st.tuples(st.just("read"), st.integers(0, 8)),
        st.tuples(st.just("drop")),
        st.tuples(st.just("drop_during_emit"), st.integers(1, 6)),
    ),
    min_size=1,
    max_size=30,
)


async def resume_scenario(stub: Any, ops: list[tuple[Any, ...]], example: int) -> None:
    user = f"r{example}"
    emitted: list[str] = []
    reader = await subscribe(stub, user, USER)
    readers = [reader]
    got: list[Delivered] = []  # updates received by every connection so far
    outstanding = 0  # events queued for the current connection and not read yet
    counter = itertools.count()
    try:
        for op in ops:
            if op[0] == "emit":
                emits = []
                for _ in range(op[1]):
                    n = next(counter)
                    if op[2] and n % 3 == 0:
                        emits.append(ephemeral_request(user, f"e{n}"))
                    else:
                        emits.append(update_request(user, f"u{n}"))
                        emitted.append(f"u{n}")
                await stub.EmitBatch(pb.EmitBatchRequest(emits=emits))
                outstanding += len(emits)
            elif op[0] == "read":
                for _ in range(min(op[1], outstanding)):
                    event = await reader.next_event()
                    outstanding -= 1
                    if event.WhichOneof("event") == "update":
                        got.append(reader.received[-1])
            elif op[0] == "drop":
                reader.cancel()
                position = reader.last_position
                reader = await subscribe(stub, user, USER, resume_from=position)
                readers.append(reader)
                assert reader.opened.resume.status == pb.RESUME_STATUS_RESUMED
                assert reader.opened.resume.replayed == len(emitted) - position.offset
                outstanding = len(emitted) - position.offset
            else:
                # Reconnect while a batch of updates is in flight: each of them
                # must come exactly once, by replay or live.
                ids = [f"u{next(counter)}" for _ in range(op[1])]
                emitted += ids
                request = pb.EmitBatchRequest(emits=[update_request(user, i) for i in ids])

                async def send(request: pb.EmitBatchRequest = request) -> Any:
                    return await stub.EmitBatch(request)

                batch = asyncio.create_task(send())
                reader.cancel()
                position = reader.last_position
                reader = await subscribe(stub, user, USER, resume_from=position)
                readers.append(reader)
                await batch
                assert reader.opened.resume.status == pb.RESUME_STATUS_RESUMED
                outstanding = len(emitted) - position.offset
        while len(got) < len(emitted):
            event = await reader.next_event()
            if event.WhichOneof("event") == "update":
                got.append(reader.received[-1])
        assert got == [Delivered("update", eid, i + 1) for i, eid in enumerate(emitted)]
    finally:
        for r in readers:
            r.cancel()


def test_resume_after_random_drops_yields_the_exact_sequence() -> None:
    with asyncio.Runner() as runner:
        stack = contextlib.AsyncExitStack()
        _server, stub = runner.run(stack.enter_async_context(served()))
        examples = itertools.count()
        try:

            @settings(
                max_examples=1200,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
                database=None,
            )
            @given(ops=resume_ops)
            def check(ops: list[tuple[Any, ...]]) -> None:
                runner.run(resume_scenario(stub, ops, next(examples)))

            check()
        finally:
            runner.run(stack.aclose())


async def test_resume_replays_what_the_scope_would_have_received(
    stub: pb_grpc.EventRouterServiceStub,
) -> None:
    daemon = await subscribe(stub, "mia", machine("m1"))
    start = daemon.last_position
    daemon.cancel()
    emits = [
        update_request("mia", "all"),
        update_request("mia", "apps", Filter("user_scoped_only")),
        update_request("mia", "mine", Filter("machine_only", "m1")),
        update_request("mia", "other", Filter("machine_only", "m2")),
        update_request("mia", "with-apps", Filter("machine_scoped_only", "m1")),
        update_request("mia", "viewers", Filter("interested_in_session", "s1")),
        ephemeral_request("mia", "transient"),
    ]
    await stub.EmitBatch(pb.EmitBatchRequest(emits=emits))
    resumed = await subscribe(stub, "mia", machine("m1"), resume_from=start)
    try:
        assert resumed.opened.resume.replayed == 3
        await stub.Emit(update_request("mia", "end"))
        assert await resumed.read_until("end") == [
            Delivered("update", "all", 1),
            Delivered("update", "mine", 3),
            Delivered("update", "with-apps", 5),
        ]
    finally:
        resumed.cancel()


async def test_resume_from_the_opened_position_of_a_resumed_stream_loses_nothing(
    stub: pb_grpc.EventRouterServiceStub,
) -> None:
    first = await subscribe(stub, "pat", USER)
    start = first.opened.position
    first.cancel()
    await emit_updates(stub, "pat", ["a", "b", "c"])
    second = await subscribe(stub, "pat", USER, resume_from=start)
    assert second.opened.resume.replayed == 3
    # The connection drops before any update arrived on it; per the contract
    # ("resume from here if no update arrives") the client resumes from
    # opened.position.
    second.cancel()
    third = await subscribe(stub, "pat", USER, resume_from=second.opened.position)
    try:
        await stub.Emit(update_request("pat", "end"))
        assert [d.event_id for d in await third.read_until("end")] == ["a", "b", "c"]
    finally:
        third.cancel()


# ---------------------------------------------------------------------------
# Resume failures
# ---------------------------------------------------------------------------


async def emit_updates(stub: Any, user: str, ids: list[str]) -> pb.StreamPosition:
    response = await stub.EmitBatch(
        pb.EmitBatchRequest(emits=[update_request(user, i) for i in ids])
    )
    position: pb.StreamPosition = response.results[-1].position
    return position


async def assert_resume_fails(
    stub: Any, user: str, position: pb.StreamPosition, failure: int, head: pb.StreamPosition
) -> None:
    reader = await subscribe(stub, user, USER, resume_from=position)
    try:
        resume = reader.opened.resume
        assert (resume.status, resume.failure, resume.replayed) == (
            pb.RESUME_STATUS_FAILED,
            failure,
            0,
        )
        assert reader.opened.position == head
        # The stream continues live from the head, with nothing replayed.
        await stub.Emit(update_request(user, "live"))
        assert await reader.read_until("live") == []
        assert reader.received[-1].offset == head.offset + 1
    finally:
        reader.cancel()


async def test_resume_from_another_epoch(stub: pb_grpc.EventRouterServiceStub) -> None:
    head = await emit_updates(stub, "eve", ["a", "b"])
    foreign = pb.StreamPosition(offset=1, epoch=head.epoch + "-old")
    await assert_resume_fails(stub, "eve", foreign, pb.RESUME_FAILURE_EPOCH_CHANGED, head)


async def test_resume_older_than_retained_history() -> None:
    async with served(history_max_updates=3) as (_server, stub):
        head = await emit_updates(stub, "olga", [f"o{i}" for i in range(1, 11)])
        too_old = pb.StreamPosition(offset=6, epoch=head.epoch)
        await assert_resume_fails(stub, "olga", too_old, pb.RESUME_FAILURE_TOO_OLD, head)
        # The oldest position still served replays exactly what is retained.
        reader = await subscribe(
            stub, "olga", USER, resume_from=pb.StreamPosition(offset=8, epoch=head.epoch)
        )
        try:
            assert reader.opened.resume.status == pb.RESUME_STATUS_RESUMED
            assert await read_updates(reader, 3) == [
                Delivered("update", "o9", 9),
                Delivered("update", "o10", 10),
                Delivered("update", "live", 11),
            ]
        finally:
            reader.cancel()


async def test_resume_ahead_of_the_head(stub: pb_grpc.EventRouterServiceStub) -> None:
    head = await emit_updates(stub, "hal", ["a", "b", "c"])
    ahead = pb.StreamPosition(offset=head.offset + 1, epoch=head.epoch)
    await assert_resume_fails(stub, "hal", ahead, pb.RESUME_FAILURE_UNKNOWN_POSITION, head)


async def test_a_restarted_server_has_a_new_epoch() -> None:
    async with served() as (_server, stub):
        first = await subscribe(stub, "rita", USER)
        old = await emit_updates(stub, "rita", ["a", "b"])
        assert await read_updates(first, 2) == [
            Delivered("update", "a", 1),
            Delivered("update", "b", 2),
        ]
        position = first.last_position
        assert position == old
    async with served() as (_server, stub):
        reader = await subscribe(stub, "rita", USER, resume_from=position)
        try:
            resume = reader.opened.resume
            assert (resume.status, resume.failure) == (
                pb.RESUME_STATUS_FAILED,
                pb.RESUME_FAILURE_EPOCH_CHANGED,
            )
            assert reader.opened.position.epoch != old.epoch
            assert reader.opened.position.offset == 0
            new = await emit_updates(stub, "rita", ["c"])
            assert (new.offset, new.epoch) == (1, reader.opened.position.epoch)
        finally:
            reader.cancel()


# ---------------------------------------------------------------------------
# Idempotency
# ---------------------------------------------------------------------------


async def test_repeated_update_is_delivered_once(stub: pb_grpc.EventRouterServiceStub) -> None:
    reader = await subscribe(stub, "ida", USER)
    try:
        first = await stub.Emit(update_request("ida", "same"))
        again = await stub.Emit(update_request("ida", "same"))
        assert (first.duplicate, again.duplicate) == (False, True)
        assert again.position == first.position
        both = await asyncio.gather(
            stub.Emit(update_request("ida", "racing")), stub.Emit(update_request("ida", "racing"))
        )
        assert sorted(r.duplicate for r in both) == [False, True]
        assert both[0].position == both[1].position
        assert both[0].position.offset == first.position.offset + 1
        batch = await stub.EmitBatch(
            pb.EmitBatchRequest(emits=[update_request("ida", "twice")] * 2)
        )
        assert [r.duplicate for r in batch.results] == [False, True]
        await stub.Emit(update_request("ida", "end"))
        assert await reader.read_until("end") == [
            Delivered("update", "same", 1),
            Delivered("update", "racing", 2),
            Delivered("update", "twice", 3),
        ]
        assert reader.received[-1].offset == 4
    finally:
        reader.cancel()


async def test_ephemeral_idempotency_key(stub: pb_grpc.EventRouterServiceStub) -> None:
    reader = await subscribe(stub, "kim", USER)
    try:
        first = await stub.Emit(ephemeral_request("kim", "keyed", idempotency_key="k1"))
        again = await stub.Emit(ephemeral_request("kim", "keyed", idempotency_key="k1"))
        assert (first.duplicate, again.duplicate) == (False, True)
        both = await asyncio.gather(
            stub.Emit(ephemeral_request("kim", "racing", idempotency_key="k2")),
            stub.Emit(ephemeral_request("kim", "racing", idempotency_key="k2")),
        )
        assert sorted(r.duplicate for r in both) == [False, True]
        plain = [await stub.Emit(ephemeral_request("kim", "plain")) for _ in range(2)]
        assert [r.duplicate for r in plain] == [False, False]
        await stub.Emit(update_request("kim", "end"))
        assert await reader.read_until("end") == [
            Delivered("ephemeral", "keyed"),
            Delivered("ephemeral", "racing"),
            Delivered("ephemeral", "plain"),
            Delivered("ephemeral", "plain"),
        ]
    finally:
        reader.cancel()


async def test_no_idempotency_window_delivers_repeats() -> None:
    async with served(idempotency_window_s=0) as (_server, stub):
        reader = await subscribe(stub, "nia", USER)
        try:
            first = await stub.Emit(update_request("nia", "same"))
            again = await stub.Emit(update_request("nia", "same"))
            assert (first.duplicate, again.duplicate) == (False, False)
            assert (first.position.offset, again.position.offset) == (1, 2)
            await stub.Emit(update_request("nia", "end"))
            assert await reader.read_until("end") == [
                Delivered("update", "same", 1),
                Delivered("update", "same", 2),
            ]
        finally:
            reader.cancel()


# ---------------------------------------------------------------------------
# Heartbeat
# ---------------------------------------------------------------------------


async def test_idle_stream_gets_heartbeats(stub: pb_grpc.EventRouterServiceStub) -> None:
    reader = await subscribe(stub, "hank", USER, heartbeat_interval_ms=1000)
    clamped = await subscribe(stub, "hank", USER, heartbeat_interval_ms=10)
    default = await subscribe(stub, "hank", USER)
    try:
        assert reader.opened.heartbeat_interval_ms == 1000
        assert clamped.opened.heartbeat_interval_ms == 1000, "below the server minimum"
        assert default.opened.heartbeat_interval_ms == 0
        event = await reader.next_event(within_s=10)
        assert event.WhichOneof("event") == "heartbeat"
        assert abs(event.heartbeat.server_time_ms - time.time() * 1000) < 600_000
        # Events still flow after a heartbeat.
        await stub.Emit(update_request("hank", "after"))
        assert await reader.read_until("after") == []
    finally:
        for r in (reader, clamped, default):
            r.cancel()


# ---------------------------------------------------------------------------
# Graceful shutdown
# ---------------------------------------------------------------------------

GRACE_S = 3.0


def server_command(port: int) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "eventrouter.server",
        "--listen",
        f"127.0.0.1:{port}",
        "--shutdown-grace-s",
        str(GRACE_S),
        # No fixed metrics port: a busy one would stop the start.
        "--metrics-listen",
        "",
    ]
    if "insecure" in {f.name for f in dataclasses.fields(ServerConfig)}:
        command.append("--insecure")
    return command


@contextlib.contextmanager
def server_process(port: int, log: Path) -> Any:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            server_command(port),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def read_log(log: Path) -> str:
    return log.read_text(errors="replace")


async def wait_ready(stub: Any, proc: subprocess.Popen[bytes], log: Path) -> None:
    async def ready() -> bool:
        assert proc.poll() is None, read_log(log)
        try:
            await stub.GetConnections(pb.GetConnectionsRequest(user_id="probe"), timeout=1)
        except grpc.aio.AioRpcError:
            return False
        return True

    await wait_until(ready, within_s=20, what="the server process to serve")


async def test_sigterm_ends_every_stream_with_unavailable_then_exits() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.EventRouterServiceStub(channel)
            with server_process(port, log) as proc:
                await wait_ready(stub, proc, log)
                readers = [
                    await subscribe(stub, "sig", scope)
                    for scope in (USER, session("s1"), machine("m1"))
                ]
                await stub.Emit(update_request("sig", "before"))
                for r in readers:
                    assert await r.read_until("before") == []
                position = readers[0].last_position
                proc.send_signal(signal.SIGTERM)
                for r in readers:
                    status = await r.read_until_status()
                    assert status.code() == grpc.StatusCode.UNAVAILABLE, status
                    # Sent by the server's drain, not a dropped transport.
                    assert "shutting down" in (status.details() or ""), status
                await wait_until(
                    lambda: proc.poll() is not None,
                    within_s=GRACE_S + 10,
                    what="the server process to exit",
                )
                assert proc.returncode == 0, read_log(log)

            # A new process: the old position belongs to a lost epoch.
            with server_process(port, log) as proc:
                await wait_ready(stub, proc, log)
                reader = await subscribe(stub, "sig", USER, resume_from=position)
                try:
                    assert reader.opened.resume.failure == pb.RESUME_FAILURE_EPOCH_CHANGED
                    assert reader.opened.position.epoch != position.epoch
                finally:
                    reader.cancel()
                proc.send_signal(signal.SIGTERM)
                await wait_until(lambda: proc.poll() is not None, within_s=GRACE_S + 10)


async def test_subscribe_during_drain_is_refused() -> None:
    async with served() as (server, stub):
        reader = await subscribe(stub, "dora", USER)
        # The first step of RouterServer.stop: refuse new streams, end open ones.
        server.service.close_all_streams(CloseReason.SHUTDOWN, "server is shutting down")
        status = await reader.read_until_status()
        assert status.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await subscribe(stub, "dora", USER)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (info.value.details() or "")
        assert await connection_ids(stub, "dora") == []
        # In-flight work may still finish: emits are accepted while draining.
        assert (await stub.Emit(update_request("dora", "late"))).reached == 0


async def test_stop_ends_streams_and_refuses_new_ones() -> None:
    async with served() as (server, stub):
        reader = await subscribe(stub, "stan", USER)
        stopping = asyncio.create_task(server.stop(grace_s=5))
        try:
            status = await reader.read_until_status()
            assert status.code() == grpc.StatusCode.UNAVAILABLE
            assert "shutting down" in (status.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await subscribe(stub, "stan", USER)
            # Refused by the router ("shutting down"), by a closed listener
            # (both UNAVAILABLE) or, when the call arrives as grpc's own stop
            # begins, cancelled by grpc before any handler runs (seen in 1 run
            # of 3): the client library reconnects on all of them.
            assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
            assert len(server.router.registry) == 0  # nothing half-registered
        finally:
            async with asyncio.timeout(10):
                await stopping


# ---------------------------------------------------------------------------
# Vanished client
# ---------------------------------------------------------------------------


class CuttableProxy:
    """A TCP relay whose connections can be cut abruptly (RST, no HTTP/2 goodbye)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self.tasks.add(task)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()

    def cut(self) -> None:
        for writer in self.writers:
            writer.transport.abort()

    async def close(self) -> None:
        self.cut()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_vanished_client_is_unregistered(
    router_server: RouterServer, stub: pb_grpc.EventRouterServiceStub
) -> None:
    proxy = CuttableProxy(router_server.port)
    port = await proxy.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            far = await subscribe(pb_grpc.EventRouterServiceStub(channel), "vic", USER)
            near = await subscribe(stub, "vic", machine("m1"))
            try:
                assert await connection_ids(stub, "vic") == [far.connection_id, near.connection_id]
                proxy.cut()

                async def far_gone() -> bool:
                    return await connection_ids(stub, "vic") == [near.connection_id]

                await wait_until(far_gone, what="the vanished stream to be unregistered")
                # The survivor is unaffected.
                response = await stub.Emit(update_request("vic", "still"))
                assert response.reached == 1
                assert await near.read_until("still") == []
            finally:
                far.cancel()
                near.cancel()
    finally:
        await proxy.close()
