"""The routing rule through real gRPC streams.

To know that an event did *not* arrive without sleeping, every case is
followed by a "marker" update with the default filter: each subscriber reads
until its marker, and what came before it is exactly what it was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import Any

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventrouter.server import RouterServer
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.support.model import (
    MATRIX_FILTERS,
    MATRIX_SCOPES,
    MATRIX_SPEC,
    USER,
    Delivered,
    Filter,
    RoutingModel,
    StreamReader,
    connection_ids,
    ephemeral_request,
    joined,
    scope_of_proto,
    subscribe,
    update_request,
    wait_until,
)
from tests.support.servers import running_server

SCOPES, FILTERS, SPEC = MATRIX_SCOPES, MATRIX_FILTERS, MATRIX_SPEC


class Markers:
    """Emits a default-filter marker update per user and reads every stream up to it."""

    def __init__(self, stub: Any, model: RoutingModel) -> None:
        self.stub = stub
        self.model = model
        self.counter = itertools.count()

    async def settle(self, readers: dict[str, list[StreamReader]]) -> dict[str, list[Delivered]]:
        """Per connection id: what each reader received since the previous marker."""
        marks: dict[str, str] = {}
        emits = []
        for user in readers:
            marks[user] = f"marker-{next(self.counter)}"
            emits.append(update_request(user, marks[user]))
            self.model.emit_update(user, marks[user], Filter("all"))
        await self.stub.EmitBatch(pb.EmitBatchRequest(emits=emits))
        got: dict[str, list[Delivered]] = {}
        for user, user_readers in readers.items():
            for reader in user_readers:
                got[reader.connection_id] = await reader.read_until(marks[user])
        return got


async def test_routing_matrix_over_grpc(stub: pb_grpc.EventRouterServiceStub) -> None:
    model = RoutingModel()
    readers: dict[str, list[StreamReader]] = {}
    for user in ("alice", "bob"):
        readers[user] = []
        for scope in SCOPES:
            reader = await subscribe(stub, user, scope)
            readers[user].append(reader)
            model.add(user, reader.connection_id, scope)
    markers = Markers(stub, model)
    cases = itertools.product(("alice", "bob"), FILTERS, [None, *range(len(SCOPES)), "unknown"])
    try:
        for n, (target, flt, skip_index) in enumerate(cases):
            if skip_index is None:
                skip = None
            elif skip_index == "unknown":
                skip = "c_not_a_connection"
            else:
                assert isinstance(skip_index, int)
                skip = readers[target][skip_index].connection_id
            upd = await stub.Emit(update_request(target, f"u{n}", flt, skip))
            eph = await stub.Emit(ephemeral_request(target, f"e{n}", flt, skip))
            reached, offset = model.emit_update(target, f"u{n}", flt, skip)
            model.emit_ephemeral(target, f"e{n}", flt, skip)
            assert (upd.reached, eph.reached) == (reached, reached), (target, flt, skip_index)
            assert upd.position.offset == offset
            assert not upd.duplicate
            assert not eph.HasField("position")
            got = await markers.settle(readers)
            for user, user_readers in readers.items():
                for i, reader in enumerate(user_readers):
                    receives = (
                        user == target and str(SCOPES[i]) in SPEC[flt.kind] and i != skip_index
                    )
                    expected = (
                        [Delivered("update", f"u{n}", offset), Delivered("ephemeral", f"e{n}")]
                        if receives
                        else []
                    )
                    assert got[reader.connection_id] == expected, (
                        f"{user}/{SCOPES[i]} for {target} {flt} skip={skip_index}"
                    )
        for user_readers in readers.values():
            for reader in user_readers:
                assert reader.received == model.received[reader.connection_id]
    finally:
        for user_readers in readers.values():
            for reader in user_readers:
                reader.cancel()


async def test_get_connections_lists_open_streams(
    router_server: RouterServer, stub: pb_grpc.EventRouterServiceStub
) -> None:
    before_ms = time.time_ns() // 1_000_000
    readers = [await subscribe(stub, "carol", scope) for scope in SCOPES]
    other = await subscribe(stub, "dave", USER)
    after_ms = time.time_ns() // 1_000_000
    try:
        for reader, scope in zip(readers, SCOPES, strict=True):
            opened = reader.opened
            assert opened.user_id == "carol"
            assert scope_of_proto(opened.scope) == scope
            assert opened.resume.status == pb.RESUME_STATUS_NOT_REQUESTED
            assert opened.position.offset == 0
            assert opened.position.epoch
            assert opened.node_id == router_server.router.node_id
            assert before_ms <= opened.opened_at_ms <= after_ms
        response = await stub.GetConnections(pb.GetConnectionsRequest(user_id="carol"))
        listed = list(response.connections)
        assert [c.connection_id for c in listed] == [r.connection_id for r in readers]
        assert len({c.connection_id for c in listed}) == len(SCOPES)
        for info, reader, scope in zip(listed, readers, SCOPES, strict=True):
            assert scope_of_proto(info.scope) == scope
            assert info.opened_at_ms == reader.opened.opened_at_ms
            assert info.node_id == reader.opened.node_id
        assert await connection_ids(stub, "dave") == [other.connection_id]
        assert await connection_ids(stub, "nobody") == []

        readers[2].cancel()
        expected = [r.connection_id for i, r in enumerate(readers) if i != 2]

        async def gone() -> bool:
            return await connection_ids(stub, "carol") == expected

        await wait_until(gone, what="the cancelled stream to be unregistered")
    finally:
        for reader in (*readers, other):
            reader.cancel()
    await wait_until(
        lambda: not router_server.router.registry, what="every stream to be unregistered"
    )


# ---------------------------------------------------------------------------
# Property: random subscribe / cancel / emit sequences against the model
# ---------------------------------------------------------------------------

PROP_USERS = ("a", "b")
FILTER_POOL = [
    Filter("all"),
    Filter("user_scoped_only"),
    Filter("interested_in_session", "s1"),
    Filter("interested_in_session", "s2"),
    Filter("machine_scoped_only", "m1"),
    Filter("machine_only", "m1"),
    Filter("machine_only", "m2"),
]
skips = st.none() | st.integers(0, 30) | st.just(-1)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("sub"), st.sampled_from(PROP_USERS), st.sampled_from(SCOPES)),
        st.tuples(st.just("cancel"), st.integers(0, 30)),
        st.tuples(
            st.sampled_from(["update", "ephemeral"]),
            st.sampled_from(PROP_USERS),
            st.sampled_from(FILTER_POOL),
            skips,
        ),
    ),
    max_size=14,
)


async def run_scenario(stub: Any, ops: list[tuple[Any, ...]], example: int) -> None:
    model = RoutingModel()
    markers = Markers(stub, model)
    users = {u: f"p{example}-{u}" for u in PROP_USERS}
    every: list[StreamReader] = []
    live: dict[str, list[StreamReader]] = {u: [] for u in users.values()}
    events = itertools.count()
    try:
        for op in ops:
            if op[0] == "sub":
                user, scope = users[op[1]], op[2]
                reader = await subscribe(stub, user, scope)
                assert scope_of_proto(reader.opened.scope) == scope
                assert reader.opened.position.offset == model.head(user)
                model.add(user, reader.connection_id, scope)
                every.append(reader)
                live[user].append(reader)
            elif op[0] == "cancel":
                alive = [r for rs in live.values() for r in rs]
                if not alive:
                    continue
                reader = alive[op[1] % len(alive)]
                user = reader.opened.user_id
                # Read it through a marker first, so what it got is known exactly.
                await markers.settle({user: live[user]})
                assert reader.received == model.received[reader.connection_id]
                reader.cancel()
                live[user].remove(reader)

                async def unregistered(user: str = user, cid: str = reader.connection_id) -> bool:
                    return cid not in await connection_ids(stub, user)

                await wait_until(unregistered, what="a cancelled stream to be unregistered")
                model.remove(reader.connection_id)
            else:
                kind, user, flt, skip_choice = op[0], users[op[1]], op[2], op[3]
                if skip_choice is None:
                    skip = None
                elif skip_choice == -1 or not every:
                    skip = "c_unknown"
                else:
                    skip = every[skip_choice % len(every)].connection_id
                event_id = f"x{next(events)}"
                if kind == "update":
                    response = await stub.Emit(update_request(user, event_id, flt, skip))
                    reached, offset = model.emit_update(user, event_id, flt, skip)
                    assert response.position.offset == offset
                else:
                    response = await stub.Emit(ephemeral_request(user, event_id, flt, skip))
                    reached = model.emit_ephemeral(user, event_id, flt, skip)
                assert response.reached == reached, (kind, flt, skip)
        await markers.settle(live)
        for readers in live.values():
            for reader in readers:
                expected = model.received[reader.connection_id]
                assert reader.received == expected, (
                    joined(reader.received),
                    joined(expected),
                )
                offsets = [d.offset for d in reader.received if d.kind == "update"]
                assert offsets == sorted(set(offsets))
        for user in users.values():
            assert await connection_ids(stub, user) == [r.connection_id for r in live[user]]
    finally:
        for reader in every:
            reader.cancel()


def test_random_sequences_match_the_model() -> None:
    # One server for every example (each example uses its own users); the
    # examples run on one event loop kept across hypothesis' calls.
    with asyncio.Runner() as runner:
        stack = contextlib.AsyncExitStack()
        server = runner.run(stack.enter_async_context(running_server()))

        async def open_channel() -> grpc.aio.Channel:
            return await stack.enter_async_context(
                grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
            )

        channel = runner.run(open_channel())
        stub = pb_grpc.EventRouterServiceStub(channel)
        examples = itertools.count()
        try:

            @settings(
                max_examples=20,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
                database=None,
            )
            @given(ops=operations)
            def check(ops: list[tuple[Any, ...]]) -> None:
                runner.run(run_scenario(stub, ops, next(examples)))

            check()
        finally:
            runner.run(stack.aclose())
