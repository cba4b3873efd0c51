"""One behavioural suite, run through every protocol: gRPC, Connect (binary, JSON), gRPC-Web.

Both adapters share every line of behaviour (eventrouter.server.handlers);
these cases show it from outside: routing by scope and filter, credentials,
bad input naming its field, resume, a Disconnect, and one per-user order
for a user whose connections use different protocols.  Each case runs on a
real server in the secure default (JWTs), with its web listener on.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventrouter.server import RouterServer
from eventrouter.v1 import events_pb2 as ev
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import routing_pb2 as rt
from tests.security.helpers import (
    Keys,
    machine_scope,
    secure_server,
    session_scope,
    user_scope,
)
from tests.transports.callers import TRANSPORTS, Caller, CallFailed, Stream, caller_for

pytestmark = pytest.mark.parametrize("transport", TRANSPORTS)


@pytest.fixture
async def server(keys_file: Path) -> AsyncIterator[RouterServer]:
    async with secure_server(keys_file, web_listen="127.0.0.1:0") as server:
        yield server


@contextlib.asynccontextmanager
async def opened(
    caller: Caller, token: str, scope: rt.ConnectionScope, **fields: object
) -> AsyncIterator[tuple[Stream, pb.ConnectionOpened]]:
    stream = await caller.subscribe(pb.SubscribeRequest(scope=scope, **fields), token)  # type: ignore[arg-type]
    try:
        first = await stream.next()
        assert first.events[0].WhichOneof("event") == "opened"
        yield stream, first.events[0].opened
    finally:
        await stream.close()


async def updates(stream: Stream, count: int) -> list[tuple[str, int]]:
    """The next ``count`` updates as (marker, offset); heartbeats and ephemerals skipped."""
    got: list[tuple[str, int]] = []
    while len(got) < count:
        for event in (await stream.next()).events:
            if event.WhichOneof("event") == "update":
                body = event.update.payload.body.delete_session
                got.append((body.session_id, event.update.position.offset))
    return got


async def read_to_the_end(stream: Stream) -> None:
    while True:
        await stream.next()


def marker_emit(user_id: str, marker: str) -> pb.EmitRequest:
    """An update to ``user_id`` that carries ``marker`` (as its id and session id)."""
    body = ev.UpdateEvent(delete_session=ev.DeleteSession(session_id=marker))
    update = ev.UpdatePayload(id=marker, seq=1, body=body, created_at_ms=1)
    return pb.EmitRequest(user_id=user_id, update=update)


def filtered(user: str, marker: str, flt: rt.RecipientFilter) -> pb.EmitRequest:
    request = marker_emit(user, marker)
    request.recipient_filter.CopyFrom(flt)
    return request


FILTERS = {
    "all": rt.RecipientFilter(
        all_user_authenticated_connections=rt.AllUserAuthenticatedConnections()
    ),
    "user_only": rt.RecipientFilter(user_scoped_only=rt.UserScopedOnly()),
    "session_s1": rt.RecipientFilter(
        all_interested_in_session=rt.AllInterestedInSession(session_id="s1")
    ),
    "machine_scoped_m1": rt.RecipientFilter(
        machine_scoped_only=rt.MachineScopedOnly(machine_id="m1")
    ),
    "machine_only_m1": rt.RecipientFilter(machine_only=rt.MachineOnly(machine_id="m1")),
}
# GUIDE.md's table: which of (user, session s1, machine m1) each filter reaches.
REACHES = {
    "all": {"user", "session", "machine"},
    "user_only": {"user"},
    "session_s1": {"user", "session"},
    "machine_scoped_m1": {"user", "machine"},
    "machine_only_m1": {"machine"},
}


async def test_routing_follows_the_table(transport: str, server: RouterServer, keys: Keys) -> None:
    token = keys.user("alice")
    async with (
        caller_for(transport, server) as caller,
        opened(caller, token, user_scope()) as (app, _),
        opened(caller, token, session_scope("s1")) as (viewer, _),
        opened(caller, token, machine_scope("m1")) as (daemon, _),
    ):
        streams = {"user": app, "session": viewer, "machine": daemon}
        for name, flt in FILTERS.items():
            response = await caller.call("Emit", filtered("alice", name, flt), keys.service())
            assert response.reached == len(REACHES[name]), name
        sent = list(FILTERS)
        for scope, stream in streams.items():
            expected = [n for n in sent if scope in REACHES[n]]
            got = await updates(stream, len(expected))
            assert [marker for marker, _ in got] == expected, scope
            # Positions count the user's updates, whichever this scope sees.
            assert [offset for _, offset in got] == [sent.index(m) + 1 for m in expected]


async def test_credentials_are_checked(transport: str, server: RouterServer, keys: Keys) -> None:
    async with caller_for(transport, server) as caller:
        stream = await caller.subscribe(pb.SubscribeRequest(scope=user_scope()), None)
        with pytest.raises(CallFailed) as missing:
            await stream.next()
        assert missing.value.code == "UNAUTHENTICATED"
        await stream.close()
        with pytest.raises(CallFailed) as wrong_audience:
            await caller.call("Emit", marker_emit("alice", "x"), keys.user("alice"))
        assert wrong_audience.value.code == "PERMISSION_DENIED"
        restricted = keys.user("alice", session_id="s1")
        stream = await caller.subscribe(pb.SubscribeRequest(scope=user_scope()), restricted)
        with pytest.raises(CallFailed) as scope_denied:
            await stream.next()
        assert scope_denied.value.code == "PERMISSION_DENIED"
        await stream.close()


async def test_bad_input_names_its_field(transport: str, server: RouterServer, keys: Keys) -> None:
    async with caller_for(transport, server) as caller:
        with pytest.raises(CallFailed) as refused:
            await caller.call("Emit", marker_emit("", "x"), keys.service())
        assert refused.value.code == "INVALID_ARGUMENT"
        assert refused.value.message.startswith("user_id:")
        batch = pb.EmitBatchRequest(emits=[marker_emit("alice", "a"), marker_emit("al ice", "b")])
        with pytest.raises(CallFailed) as in_batch:
            await caller.call("EmitBatch", batch, keys.service())
        assert in_batch.value.message.startswith("emits[1].user_id:")


async def test_resume_replays_the_gap(transport: str, server: RouterServer, keys: Keys) -> None:
    token = keys.user("bob")
    async with caller_for(transport, server) as caller:
        async with opened(caller, token, user_scope()) as (stream, first):
            for marker in ("one", "two", "three"):
                await caller.call("Emit", marker_emit("bob", marker), keys.service())
            got = await updates(stream, 1)
        position = pb.StreamPosition(offset=got[0][1], epoch=first.position.epoch)
        async with opened(caller, token, user_scope(), resume_from=position) as (again, info):
            assert info.resume.status == pb.RESUME_STATUS_RESUMED
            assert info.resume.replayed == 2
            assert await updates(again, 2) == [("two", 2), ("three", 3)]


async def test_a_disconnect_ends_the_stream(
    transport: str, server: RouterServer, keys: Keys
) -> None:
    async with (
        caller_for(transport, server) as caller,
        opened(caller, keys.user("carol"), user_scope()) as (stream, _),
    ):
        request = pb.DisconnectRequest(user_id="carol", reason="bye")
        assert (await caller.call("Disconnect", request, keys.service())).disconnected == 1
        with pytest.raises(CallFailed) as ended:
            await read_to_the_end(stream)
        assert ended.value.code == "UNAVAILABLE"
        assert "bye" in ended.value.message


async def test_one_order_across_protocols(transport: str, server: RouterServer, keys: Keys) -> None:
    # dave has a stream over this transport and one over native gRPC; emits
    # alternate between the two protocols; both streams see one order.
    token = keys.user("dave")
    async with (
        caller_for(transport, server) as caller,
        caller_for("grpc", server) as native,
        opened(caller, token, user_scope()) as (here, _),
        opened(native, token, user_scope()) as (there, _),
    ):
        markers = [f"m{i}" for i in range(20)]
        for i, marker in enumerate(markers):
            await (caller if i % 2 else native).call(
                "Emit", marker_emit("dave", marker), keys.service()
            )
        expected = [(m, i + 1) for i, m in enumerate(markers)]
        assert await updates(here, 20) == expected
        assert await updates(there, 20) == expected
