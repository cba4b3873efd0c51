"""Bad input gets a precise status naming the field, and leaves nothing behind.

"Nothing behind" is checked three ways after every rejected call: the user's
connections are unchanged, no subscriber received anything before the next
marker update, and the marker takes the very next offset (no offset, and no
idempotency entry, was consumed by the rejected call).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from eventrouter.v1 import events_pb2 as ev
from eventrouter.v1 import happy_json_pb2 as hj
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from eventrouter.v1 import routing_pb2 as rt
from tests.support.model import (
    USER,
    Filter,
    StreamReader,
    connection_ids,
    ephemeral_payload,
    ephemeral_request,
    machine,
    session,
    subscribe,
    update_payload,
    update_request,
)
from tests.support.servers import running_server, user_metadata

MAX_EVENT_BYTES = 4096
USER_ID = "victim"


@dataclass
class Watched:
    """A server, a stub and one subscriber of every scope for USER_ID."""

    stub: Any
    readers: list[StreamReader]
    head: int = 0
    markers: int = 0

    async def assert_nothing_happened(self) -> None:
        assert await connection_ids(self.stub, USER_ID) == [r.connection_id for r in self.readers]
        self.markers += 1
        marker = f"marker-{self.markers}"
        response = await self.stub.Emit(update_request(USER_ID, marker))
        self.head += 1
        assert response.position.offset == self.head, "a rejected emit consumed an offset"
        assert response.reached == len(self.readers)
        for reader in self.readers:
            assert await reader.read_until(marker) == [], "a rejected emit was delivered"


@pytest.fixture
async def watched() -> AsyncIterator[Watched]:
    async with (
        running_server(max_event_bytes=MAX_EVENT_BYTES) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = pb_grpc.EventRouterServiceStub(channel)
        readers = [
            await subscribe(stub, USER_ID, scope) for scope in (USER, session("s1"), machine("m1"))
        ]
        try:
            yield Watched(stub, readers)
        finally:
            for reader in readers:
                reader.cancel()


async def expect_status(call: Any, code: grpc.StatusCode, field: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value
    details = info.value.details() or ""
    assert details.startswith(field + ":") or f" {field}" in details, details
    return details


def filter_without_id(kind: str) -> rt.RecipientFilter:
    flt = rt.RecipientFilter()
    getattr(flt, kind).SetInParent()
    return flt


def emit_with_filter(kind: str, ephemeral: bool) -> pb.EmitRequest:
    request = ephemeral_request(USER_ID, "bad") if ephemeral else update_request(USER_ID, "bad")
    request.recipient_filter.CopyFrom(filter_without_id(kind))
    return request


def relationship(status: int) -> pb.EmitRequest:
    body = ev.UpdateEvent(relationship_updated=ev.RelationshipUpdated(uid="x", timestamp_ms=1))
    body.relationship_updated.status = status  # type: ignore[assignment]
    return pb.EmitRequest(user_id=USER_ID, update=ev.UpdatePayload(id="rel", body=body))


def raw_update(kind: str, text: str) -> pb.EmitRequest:
    body = ev.UpdateEvent(raw=hj.RawHappyEvent(kind=kind, json=text))
    return pb.EmitRequest(user_id=USER_ID, update=ev.UpdatePayload(id="raw", body=body))


def feed_post_with_member(key: str, text: str) -> pb.EmitRequest:
    extras = hj.JsonExtras(members=[hj.JsonMember(key=key, json=text)])
    post = ev.NewFeedPost(id="f", json_extras=extras)
    post.body.null_value = struct_pb2.NULL_VALUE
    body = ev.UpdateEvent(new_feed_post=post)
    return pb.EmitRequest(user_id=USER_ID, update=ev.UpdatePayload(id="feed", body=body))


def with_skip(request: pb.EmitRequest, skip: str) -> pb.EmitRequest:
    request.skip_connection_id = skip
    return request


def keyed(key: str) -> pb.EmitRequest:
    request = ephemeral_request(USER_ID, "k")
    request.idempotency_key = key
    return request


def deep_content(levels: int) -> pb.EmitRequest:
    content = struct_pb2.Value(string_value="leaf")
    for _ in range(levels):
        content = struct_pb2.Value(list_value=struct_pb2.ListValue(values=[content]))
    record = ev.SessionMessage(id="m", content=content)
    body = ev.UpdateEvent(new_message=ev.NewMessage(session_id="s1", message=record))
    return pb.EmitRequest(user_id=USER_ID, update=ev.UpdatePayload(id="deep", body=body))


FILTER_KINDS = [
    ("all_interested_in_session", "session_id"),
    ("machine_scoped_only", "machine_id"),
    ("machine_only", "machine_id"),
]

BAD_EMITS: list[tuple[str, pb.EmitRequest, grpc.StatusCode, str]] = [
    (
        "no user id",
        pb.EmitRequest(update=update_payload("x")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "user_id",
    ),
    (
        "no user id (ephemeral)",
        pb.EmitRequest(ephemeral=ephemeral_payload("x")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "user_id",
    ),
    (
        "user id with a space",
        pb.EmitRequest(user_id="vic tim", update=update_payload("x")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "user_id",
    ),
    (
        "user id too long",
        pb.EmitRequest(user_id="v" * 257, update=update_payload("x")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "user_id",
    ),
    (
        "no payload",
        pb.EmitRequest(user_id=USER_ID),
        grpc.StatusCode.INVALID_ARGUMENT,
        "payload",
    ),
    (
        "filter id too long",
        update_request(USER_ID, "x", Filter("machine_only", "m" * 257)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "recipient_filter.machine_only.machine_id",
    ),
    *(
        (
            f"{kind} without its id ({'ephemeral' if eph else 'update'})",
            emit_with_filter(kind, eph),
            grpc.StatusCode.INVALID_ARGUMENT,
            f"recipient_filter.{kind}.{id_field}",
        )
        for kind, id_field in FILTER_KINDS
        for eph in (False, True)
    ),
    (
        "skip id with a newline and a NUL",
        with_skip(update_request(USER_ID, "x"), "c_1\n\x00"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "skip_connection_id",
    ),
    (
        "skip id too long (ephemeral)",
        with_skip(ephemeral_request(USER_ID, "x"), "c" * 100_000),
        grpc.StatusCode.INVALID_ARGUMENT,
        "skip_connection_id",
    ),
    (
        "idempotency key with a space",
        keyed("a key"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "idempotency_key",
    ),
    (
        "idempotency key too long",
        keyed("k" * 257),
        grpc.StatusCode.INVALID_ARGUMENT,
        "idempotency_key",
    ),
    (
        "content nested past what subscribers decode",
        deep_content(38),
        grpc.StatusCode.INVALID_ARGUMENT,
        "update.body.new_message.message.content",
    ),
    (
        "update body unset",
        pb.EmitRequest(user_id=USER_ID, update=ev.UpdatePayload(id="x")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "update.body.event",
    ),
    (
        "empty update id",
        pb.EmitRequest(user_id=USER_ID, update=update_payload("")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "update.id",
    ),
    (
        "relationship status unspecified",
        relationship(ev.RELATIONSHIP_STATUS_UNSPECIFIED),
        grpc.StatusCode.INVALID_ARGUMENT,
        "update.body.relationship_updated.status",
    ),
    (
        "relationship status out of enum",
        relationship(99),
        grpc.StatusCode.INVALID_ARGUMENT,
        "update.body.relationship_updated.status",
    ),
    (
        "ephemeral event unset",
        pb.EmitRequest(user_id=USER_ID, ephemeral=ev.EphemeralPayload()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ephemeral.event",
    ),
    (
        "raw update naming another kind inside",
        raw_update("new-kind", '{"t":"other-kind"}'),
        grpc.StatusCode.INVALID_ARGUMENT,
        "update.body.raw.json",
    ),
    (
        "raw ephemeral with a kind that is no name",
        pb.EmitRequest(
            user_id=USER_ID,
            ephemeral=ev.EphemeralPayload(raw=hj.RawHappyEvent(kind="a b", json='{"type":"a b"}')),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ephemeral.raw.kind",
    ),
    (
        "raw update nested too deep",
        raw_update("deep", '{"t":"deep","x":' + "[" * 32 + "]" * 32 + "}"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "update.body.raw.json",
    ),
    (
        "unknown key whose value is not JSON",
        feed_post_with_member("repeatKey", "undefined"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "update.body.new_feed_post.json_extras.members[0].json",
    ),
    (
        "raw update over max_event_bytes",
        raw_update("big", json.dumps({"t": "big", "blob": "x" * MAX_EVENT_BYTES})),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "update",
    ),
    (
        "update over max_event_bytes",
        update_request(USER_ID, "huge", pad=MAX_EVENT_BYTES),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "update",
    ),
    (
        "ephemeral over max_event_bytes",
        pb.EmitRequest(user_id=USER_ID, ephemeral=ephemeral_payload("huge", pad=MAX_EVENT_BYTES)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "ephemeral",
    ),
]


@pytest.mark.parametrize(
    ("request_", "code", "field"),
    [case[1:] for case in BAD_EMITS],
    ids=[case[0] for case in BAD_EMITS],
)
async def test_bad_emit(
    watched: Watched, request_: pb.EmitRequest, code: grpc.StatusCode, field: str
) -> None:
    await expect_status(watched.stub.Emit(request_), code, field)
    await watched.assert_nothing_happened()


async def test_a_just_small_enough_update_is_accepted(watched: Watched) -> None:
    # The largest pad that fits (length prefixes grow with it, so search).
    pad = next(
        p
        for p in range(MAX_EVENT_BYTES, 0, -1)
        if update_request(USER_ID, "fits", pad=p).update.ByteSize() <= MAX_EVENT_BYTES
    )
    request = update_request(USER_ID, "fits", pad=pad)
    assert request.update.ByteSize() == MAX_EVENT_BYTES
    assert (await watched.stub.Emit(request)).reached == 3
    request = update_request(USER_ID, "too-big", pad=pad + 1)
    await expect_status(watched.stub.Emit(request), grpc.StatusCode.RESOURCE_EXHAUSTED, "update")


BAD_BATCH_ITEMS: list[tuple[str, pb.EmitRequest, grpc.StatusCode, str]] = [
    (
        "empty update id",
        pb.EmitRequest(user_id=USER_ID, update=update_payload("")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "emits[3].update.id",
    ),
    (
        "filter without id",
        emit_with_filter("machine_only", ephemeral=False),
        grpc.StatusCode.INVALID_ARGUMENT,
        "emits[3].recipient_filter.machine_only.machine_id",
    ),
    (
        "no payload",
        pb.EmitRequest(user_id=USER_ID),
        grpc.StatusCode.INVALID_ARGUMENT,
        "emits[3].payload",
    ),
    (
        "no user id",
        pb.EmitRequest(ephemeral=ephemeral_payload("x")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "emits[3].user_id",
    ),
    (
        "too large",
        update_request(USER_ID, "huge", pad=MAX_EVENT_BYTES),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "emits[3].update",
    ),
]


@pytest.mark.parametrize(
    ("bad", "code", "field"),
    [case[1:] for case in BAD_BATCH_ITEMS],
    ids=[case[0] for case in BAD_BATCH_ITEMS],
)
async def test_batch_with_one_bad_item_delivers_none(
    watched: Watched, bad: pb.EmitRequest, code: grpc.StatusCode, field: str
) -> None:
    good = [
        update_request(USER_ID, "b0"),
        ephemeral_request(USER_ID, "b1", idempotency_key="k1"),
        update_request(USER_ID, "b2"),
        update_request(USER_ID, "b4"),
    ]
    emits = [*good[:3], bad, good[3]]
    await expect_status(watched.stub.EmitBatch(pb.EmitBatchRequest(emits=emits)), code, field)
    await watched.assert_nothing_happened()
    # None of the good items was remembered as done: sent again, they are new.
    response = await watched.stub.EmitBatch(pb.EmitBatchRequest(emits=good))
    assert [r.duplicate for r in response.results] == [False] * 4
    assert [r.position.offset for r in response.results] == [
        watched.head + 1,
        0,
        watched.head + 2,
        watched.head + 3,
    ]
    watched.head += 3
    for reader in watched.readers:
        assert [d.event_id for d in await reader.read_until("b4")] == ["b0", "b1", "b2"]
    await watched.assert_nothing_happened()


SUBSCRIBE_CASES: list[tuple[str, rt.ConnectionScope, str | None, grpc.StatusCode, str]] = [
    ("no scope", rt.ConnectionScope(), USER_ID, grpc.StatusCode.INVALID_ARGUMENT, "scope"),
    (
        "empty session id",
        rt.ConnectionScope(session=rt.SessionScope(session_id="")),
        USER_ID,
        grpc.StatusCode.INVALID_ARGUMENT,
        "scope.session.session_id",
    ),
    (
        "empty machine id",
        rt.ConnectionScope(machine=rt.MachineScope(machine_id="")),
        USER_ID,
        grpc.StatusCode.INVALID_ARGUMENT,
        "scope.machine.machine_id",
    ),
    (
        "session id too long",
        rt.ConnectionScope(session=rt.SessionScope(session_id="s" * 257)),
        USER_ID,
        grpc.StatusCode.INVALID_ARGUMENT,
        "scope.session.session_id",
    ),
    (
        "no user metadata",
        rt.ConnectionScope(user=rt.UserScope()),
        None,
        grpc.StatusCode.UNAUTHENTICATED,
        "x-eventrouter-user-id",
    ),
    (
        "empty user id in metadata",
        rt.ConnectionScope(user=rt.UserScope()),
        "",
        grpc.StatusCode.INVALID_ARGUMENT,
        "user_id",
    ),
]


@pytest.mark.parametrize(
    ("scope", "user", "code", "field"),
    [case[1:] for case in SUBSCRIBE_CASES],
    ids=[case[0] for case in SUBSCRIBE_CASES],
)
async def test_bad_subscribe(
    watched: Watched,
    scope: rt.ConnectionScope,
    user: str | None,
    code: grpc.StatusCode,
    field: str,
) -> None:
    metadata = user_metadata(user) if user is not None else []
    call = watched.stub.Subscribe(pb.SubscribeRequest(scope=scope), metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == code, info.value
    details = info.value.details() or ""
    assert details.startswith(field + ":") or f" {field}" in details, details
    await watched.assert_nothing_happened()


async def test_get_connections_without_user_id(watched: Watched) -> None:
    await expect_status(
        watched.stub.GetConnections(pb.GetConnectionsRequest()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "user_id",
    )
    await watched.assert_nothing_happened()
