"""The router's checks on Happy JSON carried as text (raw kinds, json_extras).

Whatever the codec writes, the router accepts; what it refuses is named by
its field path in the request. No sockets: the embedded ``EventRouter``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventrouter.client._happy_json import from_happy_json, to_happy_json
from eventrouter.server.core.connections import UserScopedConnection
from eventrouter.server.core.queue import ConnectionQueue
from eventrouter.server.core.router import EventRouter, RouterLimits
from eventrouter.server.core.validation import InvalidArgument, PayloadTooLarge
from eventrouter.v1 import events_pb2 as pb
from eventrouter.v1 import happy_json_pb2 as hj
from tests.support.model import take_queued_events
from tests.unit.happy_strategies import (
    BROKEN_RAW,
    payloads,
    raw_ephemeral_json,
    raw_update_json,
    with_unknown_keys,
)

USER = "u1"


def raw_update(kind: str, text: str) -> pb.UpdatePayload:
    raw = hj.RawHappyEvent(kind=kind, json=text)
    return pb.UpdatePayload(id="upd_1", seq=1, body=pb.UpdateEvent(raw=raw))


def extras(*members: tuple[str, str]) -> hj.JsonExtras:
    return hj.JsonExtras(members=[hj.JsonMember(key=k, json=v) for k, v in members])


def check(router: EventRouter, payload: pb.UpdatePayload | pb.EphemeralPayload) -> None:
    if isinstance(payload, pb.UpdatePayload):
        router.check_update(USER, payload)
    else:
        router.check_ephemeral(USER, payload)


def refusal(payload: pb.UpdatePayload | pb.EphemeralPayload) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        check(EventRouter(), payload)
    return caught.value


def test_a_raw_event_is_delivered_as_sent() -> None:
    router = EventRouter()
    connection = UserScopedConnection(USER)
    connection.queue = ConnectionQueue(router.limits.queue)
    router.add_connection(USER, connection)
    update = raw_update("new-kind", '{"t":"new-kind","z":[1,{"b":2,"a":1}]}')
    ephemeral = pb.EphemeralPayload(raw=hj.RawHappyEvent(kind="typing", json='{"type":"typing"}'))
    assert router.emit_update(USER, update).reached == 1
    assert router.emit_ephemeral(USER, ephemeral).reached == 1
    # Byte for byte, as every subscriber gets them.
    events = take_queued_events(connection)
    assert [e.update.payload for e in events[:1]] == [update]
    assert [e.ephemeral for e in events[1:]] == [ephemeral]


def _github_with_bad_plan_member() -> pb.UpdatePayload:
    plan = pb.GitHubPlan(name="free", json_extras=extras(("seats", "{")))
    profile = pb.GitHubProfile(login="ada", plan=plan)
    account = pb.UpdateAccount(user_id="u1", github=pb.NullableGitHubProfile(profile=profile))
    return pb.UpdatePayload(id="u", body=pb.UpdateEvent(update_account=account))


def _kv_with_repeated_member() -> pb.UpdatePayload:
    changes = [
        pb.KvChange(key="a"),
        pb.KvChange(key="b", json_extras=extras(("ttl", "1"), ("ttl", "2"))),
    ]
    batch = pb.KvBatchUpdate(changes=changes)
    return pb.UpdatePayload(id="u", body=pb.UpdateEvent(kv_batch_update=batch))


REFUSED: list[tuple[str, pb.UpdatePayload | pb.EphemeralPayload, str]] = [
    *(
        (f"raw-{name}", raw_update(kind, text), f"update.body.raw.{where}")
        for name, kind, text, where in BROKEN_RAW
    ),
    (
        "raw-ephemeral-with-t",
        pb.EphemeralPayload(raw=hj.RawHappyEvent(kind="a", json='{"t":"a"}')),
        "ephemeral.raw.json",
    ),
    (
        "container-member-not-json",
        pb.UpdatePayload(
            id="u",
            body=pb.UpdateEvent(delete_session=pb.DeleteSession(session_id="s")),
            json_extras=extras(("trace", "NaN")),
        ),
        "update.json_extras.members[0].json",
    ),
    (
        "nested-member-not-json",
        _github_with_bad_plan_member(),
        "update.body.update_account.github.profile.plan.json_extras.members[0].json",
    ),
    (
        "repeated-member-in-a-list-item",
        _kv_with_repeated_member(),
        "update.body.kv_batch_update.changes[1].json_extras.members[1].key",
    ),
    (
        "ephemeral-member-too-deep",
        pb.EphemeralPayload(
            session_event=pb.SessionEvent(
                session_id="s", json_extras=extras(("x", "[" * 33 + "]" * 33))
            )
        ),
        "ephemeral.session_event.json_extras.members[0].json",
    ),
]


@pytest.mark.parametrize(
    ("payload", "field"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_broken_json_text_is_refused_naming_the_field(
    payload: pb.UpdatePayload | pb.EphemeralPayload, field: str
) -> None:
    assert refusal(payload).field == field


def test_emit_batch_paths_are_prefixed() -> None:
    router = EventRouter()
    with pytest.raises(InvalidArgument) as caught:
        router.check_update(USER, raw_update("a", "{}"), field="emits[3].")
    assert caught.value.field == "emits[3].update.body.raw.json"


def test_the_size_limit_covers_the_text() -> None:
    router = EventRouter(RouterLimits(max_event_bytes=1024))
    body: dict[str, Any] = {"t": "big", "blob": "x" * 1024}
    with pytest.raises(PayloadTooLarge):
        router.check_update(USER, raw_update("big", json.dumps(body)))
    payload = pb.UpdatePayload(
        id="u",
        body=pb.UpdateEvent(delete_machine=pb.DeleteMachine(machine_id="m")),
        json_extras=extras(("blob", json.dumps("x" * 1024))),
    )
    with pytest.raises(PayloadTooLarge):
        router.check_update(USER, payload)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_whatever_the_codec_writes_the_router_accepts(data: st.DataObject) -> None:
    # The same rules on both sides: an emitter that used from_happy_json is never refused.
    sent = data.draw(
        raw_update_json()
        | raw_ephemeral_json()
        | payloads.map(to_happy_json).flatmap(lambda wire: with_unknown_keys(wire))
    )
    payload = from_happy_json(sent)
    if isinstance(payload, pb.UpdatePayload):
        # The update's id follows the id rules of every id (printable, no
        # whitespace): refused for that reason, not for its Happy JSON.
        payload.id = "".join(c for c in payload.id if c.isprintable() and not c.isspace()) or "u"
    check(EventRouter(), payload)


def test_every_json_extras_is_the_field_whose_tag_the_router_looks_for() -> None:
    """The router skips the extras walk when a payload lacks EXTRAS_TAG's bytes."""
    from eventrouter.server.core.happy_json import EXTRAS_TAG

    seen: set[str] = set()
    found = 0

    def visit(descriptor: Any) -> None:
        nonlocal found
        if descriptor.full_name in seen:
            return
        seen.add(descriptor.full_name)
        for field in descriptor.fields:
            if field.name == "json_extras":
                found += 1
                assert field.number == 1000, descriptor.full_name
                assert field.message_type is not None
            if field.message_type is not None:
                visit(field.message_type)

    visit(pb.UpdatePayload.DESCRIPTOR)
    visit(pb.EphemeralPayload.DESCRIPTOR)
    assert found >= 20
    tagged = pb.UpdatePayload(
        id="u",
        body=pb.UpdateEvent(delete_machine=pb.DeleteMachine(machine_id="m")),
        json_extras=hj.JsonExtras(),
    )
    assert EXTRAS_TAG in tagged.SerializeToString()
