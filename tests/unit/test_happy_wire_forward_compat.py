"""What Happy sends beyond the contract is kept and rendered back exactly, not refused.

A kind the contract does not model becomes ``raw`` (its JSON as text); a key
it does not model becomes a member of its object's ``json_extras``, with the
wire's key order when that is not the contract's. The property tests
(``test_happy_wire_properties``) do the same for random events; these are the
cases worth reading.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from eventrouter.client import (
    HappyWireError,
    build_new_feed_post_update,
    build_update_account_update,
    ephemeral_from_happy_json,
    from_happy_json,
    to_happy_json,
    update_from_happy_json,
)
from eventrouter.v1 import events_pb2 as pb
from eventrouter.v1 import happy_json_pb2 as hj

NOW = 1_764_000_000_000


def round_trip(sent: dict[str, Any]) -> pb.UpdatePayload | pb.EphemeralPayload:
    """Decode ``sent``; assert it renders back to the same text, before and after protobuf bytes."""
    payload = from_happy_json(sent)
    assert json.dumps(to_happy_json(payload)) == json.dumps(sent)
    clone = type(payload).FromString(payload.SerializeToString())
    assert json.dumps(to_happy_json(clone)) == json.dumps(sent)
    return payload


def feed_post(**extra: Any) -> dict[str, Any]:
    body = {
        "t": "new-feed-post",
        "id": "feed_1",
        "body": {"kind": "text", "text": "hi"},
        "cursor": "0-1",
        "createdAt": 1,
    }
    return {"id": "upd_1", "seq": 7, "body": body | extra, "createdAt": NOW}


@pytest.mark.parametrize("repeat_key", [None, "friend_request:u2"])
def test_new_feed_post_with_repeat_key_keeps_it(repeat_key: str | None) -> None:
    # Happy's app requires repeatKey; the day Happy's server sends it, we carry it.
    payload = round_trip(feed_post(repeatKey=repeat_key))
    post = payload.body.new_feed_post  # type: ignore[union-attr]
    assert post.cursor == "0-1"  # the modelled fields are still typed
    assert [(m.key, json.loads(m.json)) for m in post.json_extras.members] == [
        ("repeatKey", repeat_key)
    ]
    assert list(post.json_extras.key_order) == []  # last: the default order reproduces it


def test_a_key_between_known_keys_keeps_its_place() -> None:
    sent = feed_post()
    sent["body"] = {"t": "new-feed-post", "repeatKey": None, **feed_post()["body"]}
    payload = round_trip(sent)
    extras = payload.body.new_feed_post.json_extras  # type: ignore[union-attr]
    assert list(extras.key_order) == list(sent["body"])


def test_unknown_keys_of_the_container_and_of_nested_objects_are_kept() -> None:
    sent: dict[str, Any] = {
        "id": "upd_2",
        "seq": 8,
        "body": {
            "t": "kv-batch-update",
            "changes": [
                {"key": "a", "value": None, "version": -1},
                {"key": "b", "value": "dg==", "version": 2, "expiresAt": 5, "meta": {"z": [1.5]}},
            ],
        },
        "createdAt": NOW,
        "traceId": "tr_1",
    }
    payload = round_trip(sent)
    assert [m.key for m in payload.json_extras.members] == ["traceId"]  # type: ignore[union-attr]
    changes = payload.body.kv_batch_update.changes  # type: ignore[union-attr]
    assert not changes[0].HasField("json_extras")
    assert [m.json for m in changes[1].json_extras.members] == ["5", '{"z":[1.5]}']


def test_an_update_of_an_unknown_kind_is_carried_raw() -> None:
    body = {"t": "delete-artifact-folder", "folderId": "f_1", "tags": ["é", 1.25, None]}
    payload = round_trip({"id": "upd_3", "seq": 9, "body": body, "createdAt": NOW})
    assert isinstance(payload, pb.UpdatePayload)
    assert (payload.id, payload.seq, payload.created_at_ms) == ("upd_3", 9, NOW)
    assert payload.body.WhichOneof("event") == "raw"
    assert payload.body.raw.kind == "delete-artifact-folder"
    assert payload.body.raw.json == json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def test_an_ephemeral_of_an_unknown_kind_is_carried_raw() -> None:
    sent = {"type": "typing", "sessionId": "s1", "body": "…", "until": NOW}
    payload = round_trip(sent)
    assert isinstance(payload, pb.EphemeralPayload)
    assert (payload.WhichOneof("event"), payload.raw.kind) == ("raw", "typing")


def test_session_event_is_an_ephemeral_although_it_has_a_body() -> None:
    # Its string `body` once made the dispatcher take it for an update.
    sent = {
        "type": "session-event",
        "sessionId": "s1",
        "kind": "question",
        "title": "Clarification needed",
        "body": "happy-server",
        "timestamp": NOW,
    }
    payload = round_trip(sent)
    assert isinstance(payload, pb.EphemeralPayload)
    assert payload.session_event.kind == "question"


def test_an_object_that_is_both_is_decoded_by_the_socket_event_name() -> None:
    # A future ephemeral whose body is an object with `t` is ambiguous without Happy's
    # Socket.IO event name; the explicit decoders take it.
    sent = {"type": "digest", "body": {"t": "x"}}
    with pytest.raises(HappyWireError, match="both an update"):
        from_happy_json(sent)
    ephemeral = ephemeral_from_happy_json(sent)
    assert ephemeral.raw.kind == "digest"
    assert json.dumps(to_happy_json(ephemeral)) == json.dumps(sent)
    update = update_from_happy_json(feed_post() | {"type": "x"})
    assert [m.key for m in update.json_extras.members] == ["type"]


def test_a_modelled_kind_sent_raw_renders_as_sent_and_decodes_typed() -> None:
    # An emitter built against an older contract sends a kind we model as raw.
    body = {"t": "delete-machine", "machineId": "m1"}
    event = pb.UpdateEvent(raw=hj.RawHappyEvent(kind="delete-machine", json=json.dumps(body)))
    raw = pb.UpdatePayload(id="u", seq=1, created_at_ms=NOW, body=event)
    wire = to_happy_json(raw)
    assert wire["body"] == body
    typed = from_happy_json(wire)
    assert typed.body.delete_machine.machine_id == "m1"  # type: ignore[union-attr]


# GitHub's `GET /user` answer, in GitHub's key order: Happy stores and sends it whole.
GITHUB_USER: dict[str, Any] = {
    "login": "ada",
    "id": 1,
    "node_id": "MDQ6VXNlcjE=",
    "avatar_url": "https://avatars.example.invalid/u/1?v=4",
    "gravatar_id": "",
    "url": "https://api.github.com/users/ada",
    "html_url": "https://github.com/ada",
    "type": "User",
    "user_view_type": "public",
    "site_admin": False,
    "name": "Ada",
    "company": None,
    "blog": "",
    "location": None,
    "email": None,
    "hireable": None,
    "bio": None,
    "twitter_username": None,
    "notification_email": None,
    "public_repos": 12,
    "public_gists": 0,
    "followers": 3,
    "following": 1,
    "created_at": "2011-01-25T18:44:36Z",
    "updated_at": "2026-01-01T00:00:00Z",
    "private_gists": 0,
    "total_private_repos": 2,
    "owned_private_repos": 2,
    "disk_usage": 1024,
    "collaborators": 0,
    "two_factor_authentication": True,
    "plan": {
        "name": "free",
        "space": 976562499,
        "collaborators": 0,
        "private_repos": 10000,
        "filled_seats": 1,
    },
}


def test_github_profile_keeps_github_keys_and_order_from_the_wire() -> None:
    sent = {"id": "u", "seq": 1, "body": {"t": "update-account", "id": "u1", "github": GITHUB_USER}}
    payload = round_trip(sent | {"createdAt": NOW})
    profile = payload.body.update_account.github.profile  # type: ignore[union-attr]
    assert profile.login == "ada"
    assert [m.key for m in profile.json_extras.members] == [
        "node_id",
        "url",
        "html_url",
        "user_view_type",
        "notification_email",
    ]
    assert [m.key for m in profile.plan.json_extras.members] == ["filled_seats"]


def test_builder_keeps_a_github_mapping_whole() -> None:
    # Happy's builder spreads the stored profile; ours keeps what it does not model.
    payload = build_update_account_update(
        "u1", {"github": GITHUB_USER}, 3, "upd_4", public_url=str, now_ms=NOW
    )
    body = to_happy_json(payload)["body"]
    assert json.dumps(body["github"]) == json.dumps(GITHUB_USER)
    assert from_happy_json(to_happy_json(payload)) == payload


def test_feed_post_builder_output_with_repeat_key_added_still_decodes() -> None:
    built = build_new_feed_post_update(
        {"id": "feed_1", "body": {"kind": "text", "text": "hi"}, "cursor": "0-1", "created_at": 1},
        7,
        "upd_1",
        now_ms=NOW,
    )
    wire = to_happy_json(built)
    wire["body"]["repeatKey"] = None
    assert json.dumps(to_happy_json(from_happy_json(wire))) == json.dumps(wire)


def test_every_json_object_message_can_keep_extras() -> None:
    # The codec stores unknown keys in `json_extras` of whatever message an object
    # maps to: every such message has one (number 1000); the rest are no objects.
    seen: set[str] = set()
    stack = [pb.UpdatePayload.DESCRIPTOR, pb.EphemeralPayload.DESCRIPTOR]
    while stack:
        descriptor = stack.pop()
        if descriptor.full_name in seen or descriptor.full_name.startswith("google."):
            continue
        seen.add(descriptor.full_name)
        stack.extend(f.message_type for f in descriptor.fields if f.message_type is not None)
    without = {
        name.removeprefix("eventrouter.v1.")
        for name in seen
        if "json_extras" not in pb.DESCRIPTOR.pool.FindMessageTypeByName(name).fields_by_name
    }
    # Oneof holders, Nullable* wrappers, a list, a map entry, and the two carriers.
    assert without == {
        "EphemeralPayload",
        "UpdateEvent",
        "NullableString",
        "NullableVersionedValue",
        "NullableGitHubProfile",
        "ConnectedServices",
        "UsageEntry",
        "RawHappyEvent",
        "JsonExtras",
        "JsonMember",
    }
    field = pb.DeleteMachine.DESCRIPTOR.fields_by_name["json_extras"]
    assert field.number == 1000
