"""Every kind of bad input raises HappyWireError naming the offending field.

Decoding cases start from a valid fixture output and break one thing.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import struct_pb2

from eventrouter.client._happy_json import (
    HappyWireError,
    from_happy_json,
    to_happy_json,
    update_from_happy_json,
)
from eventrouter.v1 import events_pb2 as pb
from eventrouter.v1 import happy_json_pb2 as hj
from tests.unit.happy_strategies import BROKEN_RAW

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "happy-wire" / "builders.json"
OUTPUTS: list[tuple[str, dict[str, Any]]] = [
    (case["builder"], case["output"])
    for case in json.loads(FIXTURE.read_text(encoding="utf-8"))["cases"]
]
DELETE = object()


def wire(builder: str, nth: int = 0, **changes: Any) -> dict[str, Any]:
    """A deep copy of the ``nth`` fixture output of ``builder`` with ``changes`` applied.

    A change's key is a path with ``__`` between keys and list indexes
    (``body__changes__1__version``); the value ``DELETE`` removes the key.
    """
    data = copy.deepcopy([out for name, out in OUTPUTS if name == builder][nth])
    for path, value in changes.items():
        *parents, last = [int(p) if p.isdigit() else p for p in path.split("__")]
        target: Any = data
        for key in parents:
            target = target[key]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    return data


SESSION = "buildNewSessionUpdate"
MESSAGE = "buildNewMessageUpdate"
ACCOUNT = "buildUpdateAccountUpdate"
ARTIFACT = "buildNewArtifactUpdate"
KV = "buildKVBatchUpdateUpdate"
STATUS = "buildRelationshipUpdatedEvent"
ACTIVITY = "buildSessionActivityEphemeral"
USAGE = "buildUsageEphemeral"


def nested(levels: int) -> Any:
    """A JSON value of ``levels`` nested arrays."""
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


DECODE_CASES: list[tuple[str, Any, str]] = [
    # `t` / `type` that name no kind, and payloads that are neither (or both)
    ("missing-t", wire(SESSION, body__t=DELETE), "body.t"),
    ("t-not-string", wire(SESSION, body__t=7), "body.t"),
    ("unknown-t-not-a-kind-name", wire(SESSION, body__t="new thing"), "body.t"),
    ("unknown-t-too-long", wire(SESSION, body__t="x" * 65), "body.t"),
    ("type-null", wire(ACTIVITY, type=None), "type"),
    ("type-empty", wire(ACTIVITY, type=""), "type"),
    ("neither-update-nor-ephemeral", {"id": "x", "seq": 1}, "type"),
    ("both-update-and-ephemeral", wire(SESSION, type="activity"), ""),
    ("payload-not-object", [], ""),
    ("body-not-object", wire(SESSION, body="new-session"), "body"),
    # wrong JSON types
    ("seq-string", wire(SESSION, seq="101"), "seq"),
    ("seq-bool", wire(SESSION, seq=True), "seq"),
    ("seq-fraction", wire(SESSION, seq=1.5), "seq"),
    ("seq-over-int64", wire(SESSION, seq=2**63), "seq"),
    ("active-int", wire(SESSION, body__active=1), "body.active"),
    ("metadata-null", wire(SESSION, body__metadata=None), "body.metadata"),
    ("id-number", wire(SESSION, id=1), "id"),
    ("github-login-int", wire(ACCOUNT, 2, body__github__login=5), "body.github.login"),
    ("github-hireable-str", wire(ACCOUNT, 2, body__github__hireable="y"), "body.github.hireable"),
    ("local-id-number", wire(MESSAGE, body__message__localId=5), "body.message.localId"),
    ("changes-object", wire(KV, body__changes={}), "body.changes"),
    ("change-not-object", wire(KV, body__changes__0="x"), "body.changes[0]"),
    ("change-value-bool", wire(KV, body__changes__1__value=False), "body.changes[1].value"),
    ("services-string", wire(ACCOUNT, body__connectedServices="github"), "body.connectedServices"),
    (
        "service-number",
        wire(ACCOUNT, body__connectedServices=["github", 1]),
        "body.connectedServices[1]",
    ),
    ("usage-bool", wire(USAGE, tokens__input=True), "tokens.input"),
    ("usage-string", wire(USAGE, cost__output="0.1"), "cost.output"),
    ("usage-infinite", wire(USAGE, tokens__input=math.inf), "tokens.input"),
    ("usage-not-object", wire(USAGE, tokens=[["input", 1]]), "tokens"),
    (
        "content-nan",
        wire(MESSAGE, 1, body__message__content__nested__a__1=math.nan),
        "body.message.content.nested.a[1]",
    ),
    ("content-set", wire(MESSAGE, body__message__content={1, 2}), "body.message.content"),
    ("lone-surrogate", wire(MESSAGE, body__sid="\ud800"), "body.sid"),
    ("avatar-null", wire(ACCOUNT, 3, body__avatar=None), "body.avatar"),
    ("thinking-null", wire(ACTIVITY, thinking=None), "thinking"),
    # missing required keys (nullable keys are required too: null is not absent)
    ("sid-missing", wire(MESSAGE, body__sid=DELETE), "body.sid"),
    ("created-at-missing", wire(SESSION, createdAt=DELETE), "createdAt"),
    ("agent-state-missing", wire(SESSION, body__agentState=DELETE), "body.agentState"),
    ("content-missing", wire(MESSAGE, body__message__content=DELETE), "body.message.content"),
    ("message-missing", wire(MESSAGE, body__message=DELETE), "body.message"),
    ("login-missing", wire(ACCOUNT, 2, body__github__login=DELETE), "body.github.login"),
    (
        "gravatar-missing",
        wire(ACCOUNT, 2, body__github__gravatar_id=DELETE),
        "body.github.gravatar_id",
    ),
    ("avatar-url-missing", wire(ACCOUNT, 3, body__avatar__url=DELETE), "body.avatar.url"),
    ("version-missing", wire(KV, body__changes__1__version=DELETE), "body.changes[1].version"),
    ("tokens-missing", wire(USAGE, tokens=DELETE), "tokens"),
    ("changes-missing", wire(KV, body__changes=DELETE), "body.changes"),
    # relationship status outside the enum
    ("status-unknown", wire(STATUS, body__status="blocked"), "body.status"),
    ("status-empty", wire(STATUS, body__status=""), "body.status"),
    ("status-uppercase", wire(STATUS, body__status="REQUESTED"), "body.status"),
    ("status-enum-number", wire(STATUS, body__status=2), "body.status"),
    # bad base64
    (
        "b64-alphabet",
        wire(SESSION, 1, body__dataEncryptionKey="k3y bytes!"),
        "body.dataEncryptionKey",
    ),
    ("b64-length", wire(ARTIFACT, body__header="aGVhZGV"), "body.header"),
    ("b64-extra-padding", wire(ARTIFACT, body__body="Ym9keS1ieXRlcw==="), "body.body"),
    ("b64-urlsafe", wire(ARTIFACT, body__dataEncryptionKey="-_-_"), "body.dataEncryptionKey"),
    ("b64-noncanonical-bits", wire(ARTIFACT, body__header="QR=="), "body.header"),
    ("b64-not-string", wire(ARTIFACT, body__header=[1, 2]), "body.header"),
    (
        "b64-null-not-nullable",
        wire(ARTIFACT, body__dataEncryptionKey=None),
        "body.dataEncryptionKey",
    ),
    # unknown keys and kinds are kept, as JSON text: so their values must be JSON
    ("unknown-key-nan", wire(SESSION, body__x_tag=math.nan), "body.x_tag"),
    ("unknown-key-set", wire(KV, body__changes__0__ttl={1, 2}), "body.changes[0].ttl"),
    ("unknown-key-not-string", wire(ACTIVITY) | {5: "x"}, "5"),
    ("unknown-key-too-deep", wire(ACCOUNT, 2, body__github__x=nested(33)), "body.github.x"),
    ("unknown-kind-too-deep", wire(ACTIVITY, type="typing", x=nested(32)), ""),
    ("unknown-kind-nan", wire(SESSION, body__t="new-thing", body__x=math.inf), "body"),
]


@pytest.mark.parametrize(
    ("data", "field"), [c[1:] for c in DECODE_CASES], ids=[c[0] for c in DECODE_CASES]
)
def test_decoding_bad_json_names_the_field(data: Any, field: str) -> None:
    with pytest.raises(HappyWireError) as caught:
        from_happy_json(data)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field or '<payload>'}: ")


def test_update_without_body_names_body() -> None:
    with pytest.raises(HappyWireError) as caught:
        update_from_happy_json(wire(SESSION, body=DELETE))
    assert caught.value.field == "body"


def _message_with_content(content: struct_pb2.Value | None) -> pb.UpdatePayload:
    message = pb.SessionMessage(id="m", content=content)
    return pb.UpdatePayload(body=pb.UpdateEvent(new_message=pb.NewMessage(message=message)))


def _struct_with_unset_value() -> struct_pb2.Value:
    value = struct_pb2.Value()
    value.struct_value.fields["x"].list_value.values.add()  # a Value with no kind
    return value


def _usage(tokens: list[tuple[str, float]], cost: list[tuple[str, float]]) -> pb.EphemeralPayload:
    entries = [[pb.UsageEntry(key=k, value=v) for k, v in pairs] for pairs in (tokens, cost)]
    return pb.EphemeralPayload(usage=pb.Usage(tokens=entries[0], cost=entries[1]))


def _relationship(status: int) -> pb.UpdatePayload:
    event = pb.RelationshipUpdated(uid="u", status=status)  # type: ignore[arg-type]
    return pb.UpdatePayload(body=pb.UpdateEvent(relationship_updated=event))


def _raw_update(kind: str, text: str) -> pb.UpdatePayload:
    return pb.UpdatePayload(body=pb.UpdateEvent(raw=hj.RawHappyEvent(kind=kind, json=text)))


def _with_members(*members: tuple[str, str]) -> pb.UpdatePayload:
    extras = hj.JsonExtras(members=[hj.JsonMember(key=k, json=v) for k, v in members])
    event = pb.DeleteSession(session_id="s", json_extras=extras)
    return pb.UpdatePayload(body=pb.UpdateEvent(delete_session=event))


ENCODE_CASES: list[tuple[str, pb.UpdatePayload | pb.EphemeralPayload, str]] = [
    *(
        (f"raw-{name}", _raw_update(kind, text), f"body.raw.{where}")
        for name, kind, text, where in BROKEN_RAW
    ),
    (
        "raw-ephemeral-uses-type",
        pb.EphemeralPayload(raw=hj.RawHappyEvent(kind="k", json='{"t":"k"}')),
        "raw.json",
    ),
    (
        "member-json-broken",
        _with_members(("a", "1"), ("b", "tru")),
        "body.json_extras.members[1].json",
    ),
    ("member-json-empty", _with_members(("a", "")), "body.json_extras.members[0].json"),
    ("member-repeated", _with_members(("a", "1"), ("a", "2")), "body.json_extras.members[1].key"),
    ("member-is-modelled-key", _with_members(("sid", '"x"')), "body.json_extras.members[0].key"),
    ("member-is-discriminator", _with_members(("t", '"x"')), "body.json_extras.members[0].key"),
    (
        "member-too-deep",
        _with_members(("a", "[" * 33 + "]" * 33)),
        "body.json_extras.members[0].json",
    ),
    ("update-without-kind", pb.UpdatePayload(id="u"), "body.t"),
    ("ephemeral-without-kind", pb.EphemeralPayload(), "type"),
    ("status-unspecified", _relationship(pb.RELATIONSHIP_STATUS_UNSPECIFIED), "body.status"),
    ("status-out-of-enum", _relationship(42), "body.status"),
    (
        "message-unset",
        pb.UpdatePayload(body=pb.UpdateEvent(new_message=pb.NewMessage(session_id="s"))),
        "body.message",
    ),
    ("content-unset", _message_with_content(None), "body.message.content"),
    (
        "value-without-kind",
        _message_with_content(_struct_with_unset_value()),
        "body.message.content.x[0]",
    ),
    (
        "value-nan",
        _message_with_content(struct_pb2.Value(number_value=math.nan)),
        "body.message.content",
    ),
    (
        "usage-duplicate-key",
        _usage([("input", 1), ("output", 2), ("input", 3)], []),
        "tokens.input",
    ),
    ("usage-nan", _usage([], [("input", math.nan)]), "cost.input"),
    ("usage-infinite", _usage([("output", -math.inf)], []), "tokens.output"),
]


@pytest.mark.parametrize(
    ("payload", "field"), [c[1:] for c in ENCODE_CASES], ids=[c[0] for c in ENCODE_CASES]
)
def test_encoding_unrepresentable_payload_names_the_field(
    payload: pb.UpdatePayload | pb.EphemeralPayload, field: str
) -> None:
    with pytest.raises(HappyWireError) as caught:
        to_happy_json(payload)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_happy_wire_error_is_a_value_error() -> None:
    error = HappyWireError("body.github.login", "expected a string, got number")
    assert isinstance(error, ValueError)
    assert error.field == "body.github.login"
    assert str(error) == "body.github.login: expected a string, got number"


def test_encoding_something_else_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        to_happy_json(pb.UpdateEvent())  # type: ignore[arg-type]
