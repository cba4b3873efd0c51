"""Payload nesting: the server refuses what a subscriber could not decode, and only that.

The depth the server computes is checked against protobuf itself: a stream
message carrying the payload decodes exactly when the computed depth plus the
stream's envelope is within the decoder's limit.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from eventrouter.client import build_new_feed_post_update, build_new_message_update
from eventrouter.server.core import wire
from eventrouter.server.core.nesting import MAX_PAYLOAD_DEPTH, check_depth, message_depth
from eventrouter.server.core.router import EventRouter
from eventrouter.server.core.validation import InvalidArgument
from eventrouter.v1 import events_pb2 as ev
from eventrouter.v1 import router_service_pb2 as pb

# Message levels every protobuf runtime we know decodes (100 below the top one).
DECODABLE = 101
# SubscribeResponse > StreamEvent > UpdateDelivery > payload.
STREAM_ENVELOPE = 3


def message_with(content: Any) -> ev.UpdatePayload:
    return build_new_message_update(
        {"id": "m", "seq": 1, "content": content, "localId": None, "createdAt": 1, "updatedAt": 1},
        "s1",
        1,
        "u1",
        now_ms=1,
    )


def nested(levels: int, kind: str) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value] if kind == "list" else {"k": value}
    return value


def _len(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + wire._varint(len(body)) + body


def value_bytes(levels: int, kind: str) -> bytes:
    """A serialized Value nested ``levels`` deep, built by hand (past what Python may build)."""
    data = _len(0x1A, b"leaf")  # Value.string_value
    for _ in range(levels):
        if kind == "list":
            data = _len(0x32, _len(0x0A, data))  # Value.list_value > ListValue.values
        else:  # Value.struct_value > Struct.fields > entry {key, value}
            data = _len(0x2A, _len(0x0A, _len(0x0A, b"k") + _len(0x12, data)))
    return data


def payload_bytes(value: bytes) -> bytes:
    """An UpdatePayload whose new_message.message.content is ``value``."""
    record = _len(0x0A, b"m") + _len(0x1A, value)  # MessageRecord.id, .content
    body = _len(0x0A, _len(0x0A, b"s1") + _len(0x12, record))  # UpdateBody.new_message
    return _len(0x0A, b"u1") + _len(0x1A, body)  # UpdatePayload.id, .body


def stream_decodes(payload: bytes) -> bool:
    delivery = _len(0x0A, payload)  # UpdateDelivery.payload
    frame = _len(0x0A, _len(0x12, delivery))  # SubscribeResponse.events > StreamEvent.update
    try:
        pb.SubscribeResponse.FromString(frame)
    except DecodeError:
        return False
    return True


@pytest.mark.parametrize("kind", ["list", "struct"])
def test_computed_depth_is_what_protobuf_decodes(kind: str) -> None:
    # Around the decoder's limit, on both sides of it.
    checked = 0
    for levels in range(20, 50):
        data = payload_bytes(value_bytes(levels, kind))
        try:
            payload = ev.UpdatePayload.FromString(data)
        except DecodeError:
            break  # too deep even without the envelope
        depth = message_depth(payload)
        assert stream_decodes(data) == (depth + STREAM_ENVELOPE <= DECODABLE), (levels, depth)
        checked += 1
    assert checked > 5


def test_the_limit_leaves_room_for_the_envelope() -> None:
    assert MAX_PAYLOAD_DEPTH + STREAM_ENVELOPE < DECODABLE


# Message content is a Value five levels down (UpdatePayload > UpdateBody >
# NewMessage > MessageRecord > Value); a JSON list level adds 2, an object 3.
CONTENT_LEVEL = 5


@pytest.mark.parametrize(("kind", "per_level"), [("list", 2), ("struct", 3)])
def test_emit_is_refused_one_level_past_the_limit(kind: str, per_level: int) -> None:
    router = EventRouter()
    deepest = (MAX_PAYLOAD_DEPTH - CONTENT_LEVEL) // per_level
    accepted = message_with(nested(deepest, kind))
    assert message_depth(accepted) == CONTENT_LEVEL + deepest * per_level <= MAX_PAYLOAD_DEPTH
    router.check_update("alice", accepted)
    assert stream_decodes(accepted.SerializeToString())
    refused = message_with(nested(deepest + 1, kind))
    with pytest.raises(InvalidArgument) as e:
        router.check_update("alice", refused)
    assert e.value.field == "update.body.new_message.message.content"
    assert f"the maximum is {MAX_PAYLOAD_DEPTH}" in e.value.detail


def test_feed_post_bodies_are_checked_too() -> None:
    post = build_new_feed_post_update(
        {"id": "f1", "body": nested(40, "list"), "cursor": "c", "createdAt": 1},
        1,
        "u1",
        now_ms=1,
    )
    with pytest.raises(InvalidArgument) as e:
        EventRouter().check_update("alice", post)
    assert e.value.field.startswith("update.body.new_feed_post.")


json_values = st.recursive(
    st.one_of(st.text("2*ab", max_size=4), st.integers(-3, 3), st.booleans(), st.none()),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text("2*k", min_size=1, max_size=2), children, max_size=3),
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(content=json_values, limit=st.integers(6, 30))
def test_the_cheap_bound_never_lets_a_deep_payload_through(content: Any, limit: int) -> None:
    payload = message_with(content)
    too_deep = message_depth(payload) > limit
    try:
        check_depth(payload, payload.SerializeToString(), "update", limit)
    except InvalidArgument:
        assert too_deep
    else:
        assert not too_deep


def test_large_payloads_are_walked_not_counted() -> None:
    # Past the counting bound's size the walk decides, on both sides of the limit.
    router = EventRouter()
    padding = "2*" * 20_000  # bytes a count would take for levels
    shallow = message_with({"t": "encrypted", "c": padding})
    assert len(shallow.SerializeToString()) > 16 * 1024
    router.check_update("alice", shallow)
    deep = message_with([nested(40, "list"), padding])
    with pytest.raises(InvalidArgument) as e:
        router.check_update("alice", deep)
    assert e.value.field == "update.body.new_message.message.content"
