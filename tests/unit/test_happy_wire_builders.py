"""Builder behaviour beyond the recorded fixtures: record inputs, three states, clocks."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from eventrouter.client import _builders as b
from eventrouter.client._happy_json import HappyWireError, to_happy_json
from eventrouter.client._records import (
    ABSENT,
    AccountProfile,
    ArtifactRecord,
    FeedItem,
    GitHubPlan,
    GitHubProfile,
    ImageRef,
    KvChange,
    MachineRecord,
    MessageRecord,
    RelationshipData,
    SessionRecord,
    Versioned,
)
from eventrouter.v1 import events_pb2 as pb

NOW = 1_764_000_000_000
T0 = datetime(2025, 11, 24, 12, 0, tzinfo=UTC)
T0_MS = 1_763_985_600_000


def body(payload: Any) -> dict[str, Any]:
    """The update's body, or the whole ephemeral payload."""
    data = to_happy_json(payload)
    result: dict[str, Any] = data.get("body", data)
    return result


def wrong(value: object) -> Any:
    """Pass a mistyped value past mypy: these tests feed bad input on purpose."""
    return value


def url(path: str) -> str:
    return "https://cdn.example.invalid/" + path


SESSION = SessionRecord(
    id="s1",
    seq=1,
    metadata="bWV0YQ==",
    metadata_version=2,
    agent_state=None,
    agent_state_version=0,
    data_encryption_key=b"key",
    active=True,
    last_active_at=T0,
    created_at=T0_MS,
    updated_at=T0,
)
GITHUB = GitHubProfile(
    id=1,
    login="ada",
    type="User",
    site_admin=False,
    avatar_url="https://a.example.invalid/1",
    gravatar_id=None,
    name="Ada",
    company=None,
    blog=None,
    location=None,
    email="ada@example.invalid",
    hireable=True,
    bio=None,
    twitter_username=None,
    public_repos=1,
    public_gists=0,
    followers=2,
    following=3,
    created_at="2020-01-01T00:00:00Z",
    updated_at="2025-01-01T00:00:00Z",
    disk_usage=10,
    two_factor_authentication=True,
    plan=GitHubPlan(collaborators=0, name="free", space=976562499, private_repos=10000),
)


def camel(record: Any) -> dict[str, Any]:
    """A record as the Mapping Happy would pass: camelCase keys."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        head, *rest = f.name.split("_")
        out[head + "".join(p.capitalize() for p in rest)] = getattr(record, f.name)
    return out


RECORD_BUILDS: list[tuple[str, Any, Any]] = [
    ("session", b.build_new_session_update, SESSION),
    (
        "message",
        lambda m, seq, uid, **kw: b.build_new_message_update(m, "s1", seq, uid, **kw),
        MessageRecord("m1", 3, {"t": "encrypted", "c": "eA=="}, "l1", T0, T0),
    ),
    (
        "machine",
        b.build_new_machine_update,
        MachineRecord("mc", 1, "m", 1, "d", 2, None, False, T0, T0, T0),
    ),
    (
        "artifact",
        b.build_new_artifact_update,
        ArtifactRecord("a1", 1, b"h", 1, b"b", 1, b"k", T0, T0),
    ),
    ("relationship", b.build_relationship_updated_event, RelationshipData("u2", "pending", T0)),
    ("feed", b.build_new_feed_post_update, FeedItem("f1", {"kind": "x"}, "0-1", T0_MS)),
]


@pytest.mark.parametrize(
    ("builder", "record"), [r[1:] for r in RECORD_BUILDS], ids=[r[0] for r in RECORD_BUILDS]
)
def test_dataclass_snake_mapping_and_camel_mapping_build_the_same(
    builder: Any, record: Any
) -> None:
    def build(arg: Any) -> Any:
        return builder(arg, 9, "u9", now_ms=NOW)

    expected = build(record)
    assert build(dataclasses.asdict(record)) == expected
    assert build(camel(record)) == expected


def test_new_session_dates_and_bytes() -> None:
    out = body(b.build_new_session_update(SESSION, 9, "u9", now_ms=NOW))
    assert out["activeAt"] == out["createdAt"] == out["updatedAt"] == T0_MS
    assert out["dataEncryptionKey"] == "a2V5"
    assert out["agentState"] is None


def test_dates_naive_is_utc_and_sub_millisecond_is_floored() -> None:
    naive = datetime(2025, 11, 24, 12, 0, 0, 999)
    before_epoch = datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=UTC)
    plus_two = datetime(2025, 11, 24, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    got = [
        body(b.build_machine_activity_ephemeral("m", True, when))["activeAt"]
        for when in (naive, before_epoch, plus_two)
    ]
    assert got == [T0_MS, -1, T0_MS]


def test_mapping_rules_reject_typos_duplicates_and_missing_keys() -> None:
    with pytest.raises(HappyWireError) as typo:
        b.build_update_account_update("u", {"fristName": "Ada"}, 1, "u1", public_url=url)
    assert typo.value.field == "profile.fristName"

    both = {**dataclasses.asdict(SESSION), "lastActiveAt": T0}
    with pytest.raises(HappyWireError) as twice:
        b.build_new_session_update(both, 1, "u1")
    assert twice.value.field == "session.last_active_at"

    missing = {k: v for k, v in dataclasses.asdict(SESSION).items() if k != "seq"}
    with pytest.raises(HappyWireError) as absent:
        b.build_new_session_update(missing, 1, "u1")
    assert absent.value.field == "session.seq"


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (
            lambda: b.build_new_session_update(dataclasses.replace(SESSION, seq=True), 1, "u"),
            "session.seq",
        ),
        (
            lambda: b.build_new_session_update(
                dataclasses.replace(SESSION, data_encryption_key=wrong("a2V5")), 1, "u"
            ),
            "session.data_encryption_key",
        ),
        (lambda: b.build_new_session_update(SESSION, wrong("1"), "u"), "update_seq"),
        (lambda: b.build_delete_session_update("s", 1, wrong(7)), "update_id"),
        (lambda: b.build_update_machine_update("m", 1, "u", wrong(None)), "metadata"),
        (lambda: b.build_update_artifact_update("a", 1, "u", Versioned(None, 1)), "header.value"),
        (
            lambda: b.build_relationship_updated_event(RelationshipData("u", "blocked", 1), 1, "u"),
            "data.status",
        ),
        (
            lambda: b.build_relationship_updated_event(
                RelationshipData("u", pb.RELATIONSHIP_STATUS_UNSPECIFIED, 1), 1, "u"
            ),
            "data.status",
        ),
        (
            lambda: b.build_relationship_updated_event(RelationshipData("u", True, 1), 1, "u"),
            "data.status",
        ),
        (lambda: b.build_usage_ephemeral("s", "k", {"input": True}, {}), "tokens.input"),
        (
            lambda: b.build_update_account_update(
                "u", AccountProfile(connected_services="github"), 1, "u", public_url=url
            ),
            "profile.connected_services",
        ),
        (
            lambda: b.build_kv_batch_update_update([KvChange("k", None, wrong("1"))], 1, "u"),
            "changes[0].version",
        ),
        (lambda: b.build_session_activity_ephemeral("s", wrong(1), 0), "active"),
        (lambda: b.build_delete_machine_update(wrong(None), 1, "u"), "machine_id"),
        (lambda: b.build_session_event_ephemeral("s", "done", wrong(5), "b"), "title"),
        (lambda: b.build_session_event_ephemeral("s", wrong(None), "t", "b"), "kind"),
        (
            lambda: b.build_update_account_update(
                "u", {"github": {**dataclasses.asdict(GITHUB), "x": {1, 2}}}, 1, "u", public_url=url
            ),
            "profile.github.x",
        ),
        (lambda: b.build_machine_status_ephemeral("m", True, now_ms=wrong(1.5)), "now_ms"),
        (
            lambda: b.build_new_message_update(
                MessageRecord("m", 1, {"x": float("nan")}, None, 0, 0), "s", 1, "u"
            ),
            "message.content.x",
        ),
    ],
)
def test_bad_builder_input_names_the_argument(call: Any, field: str) -> None:
    with pytest.raises(HappyWireError) as caught:
        call()
    assert caught.value.field == field


def test_update_session_three_states() -> None:
    absent = body(b.build_update_session_update("s", 1, "u"))
    null = body(b.build_update_session_update("s", 1, "u", None, ABSENT))
    value = body(b.build_update_session_update("s", 1, "u", ABSENT, Versioned(None, 4)))
    assert absent == {"t": "update-session", "id": "s"}
    assert null == {"t": "update-session", "id": "s", "metadata": None}
    assert value == {"t": "update-session", "id": "s", "agentState": {"value": None, "version": 4}}


def test_update_account_full_profile_in_wire_order() -> None:
    profile = AccountProfile(
        first_name="Ada",
        last_name=None,
        avatar=ImageRef(1, 2, "aGFzaA==", "a/b.png"),
        github=GITHUB,
        settings=None,
        connected_services=("github", "anthropic"),
    )
    out = body(b.build_update_account_update("u1", profile, 1, "u", public_url=url))
    assert list(out) == [
        "t",
        "id",
        "firstName",
        "lastName",
        "avatar",
        "settings",
        "github",
        "connectedServices",
    ]
    assert out["avatar"]["url"] == "https://cdn.example.invalid/a/b.png"
    assert out["settings"] is None
    assert out["connectedServices"] == ["github", "anthropic"]
    github = out["github"]
    assert list(github)[-3:] == ["disk_usage", "two_factor_authentication", "plan"]
    assert "private_gists" not in github
    assert github["plan"] == {
        "collaborators": 0,
        "name": "free",
        "space": 976562499,
        "private_repos": 10000,
    }
    assert github["hireable"] is True
    assert github["gravatar_id"] is None


def test_null_avatar_is_left_out_like_happy() -> None:
    out = body(b.build_update_account_update("u1", {"avatar": None}, 1, "u", public_url=url))
    assert out == {"t": "update-account", "id": "u1"}


def test_github_null_means_disconnected() -> None:
    out = body(
        b.build_update_account_update("u1", AccountProfile(github=None), 1, "u", public_url=url)
    )
    assert out == {"t": "update-account", "id": "u1", "github": None}


def test_default_public_url_reads_s3_public_url(monkeypatch: pytest.MonkeyPatch) -> None:
    profile = {"avatar": {"width": 1, "height": 1, "thumbhash": "", "path": "x.png"}}
    monkeypatch.setenv("S3_PUBLIC_URL", "https://files.example.invalid")
    out = body(b.build_update_account_update("u1", profile, 1, "u"))
    assert out["avatar"]["url"] == "https://files.example.invalid/x.png"
    monkeypatch.delenv("S3_PUBLIC_URL")
    with pytest.raises(HappyWireError, match="S3_PUBLIC_URL"):
        b.build_update_account_update("u1", profile, 1, "u")
    # No avatar, no URL needed.
    assert (
        body(b.build_update_account_update("u1", {"username": "ada"}, 1, "u"))["username"] == "ada"
    )


def test_relationship_status_accepts_the_enum() -> None:
    data = RelationshipData("u2", pb.RELATIONSHIP_STATUS_FRIEND, T0)
    assert body(b.build_relationship_updated_event(data, 1, "u"))["status"] == "friend"


def test_update_machine_active_at_comes_last() -> None:
    payload = b.build_update_machine_update(
        "m", 1, "u", daemon_state=Versioned("d", 2), active_at=T0
    )
    assert list(body(payload)) == ["t", "machineId", "daemonState", "activeAt"]
    assert body(payload)["activeAt"] == T0_MS


def test_activity_thinking_defaults_to_false() -> None:
    assert body(b.build_session_activity_ephemeral("s", True, 5))["thinking"] is False
    assert body(b.build_session_activity_ephemeral("s", True, 5, None))["thinking"] is False
    assert body(b.build_session_activity_ephemeral("s", True, 5, True))["thinking"] is True


def test_usage_keeps_key_order_and_prints_js_numbers() -> None:
    payload = b.build_usage_ephemeral(
        "s", "k", {"z": 3.0, "a": 1}, {"b": 0.5, "a": 2.0}, now_ms=NOW
    )
    assert json.dumps(to_happy_json(payload)) == (
        '{"type": "usage", "id": "s", "key": "k", "tokens": {"z": 3, "a": 1}, '
        '"cost": {"b": 0.5, "a": 2}, "timestamp": 1764000000000}'
    )


def test_kv_changes_accept_records_and_any_iterable() -> None:
    given: list[KvChange | dict[str, Any]] = [
        KvChange("a", "dg==", 1),
        {"key": "b", "value": None, "version": -1},
    ]
    out = body(b.build_kv_batch_update_update(iter(given), 1, "u"))
    assert out["changes"] == [
        {"key": "a", "value": "dg==", "version": 1},
        {"key": "b", "value": None, "version": -1},
    ]


def test_now_ms_defaults_to_the_current_time() -> None:
    before = time.time_ns() // 1_000_000
    payload = b.build_delete_artifact_update("a", 1, "u")
    status = b.build_machine_status_ephemeral("m", False)
    deleted = b.build_delete_machine_update("m", 2, "u2")
    event = b.build_session_event_ephemeral("s", "done", "It's ready!", "b")
    after = time.time_ns() // 1_000_000
    assert before <= payload.created_at_ms <= after
    assert before <= status.machine_status.timestamp_ms <= after
    assert before <= deleted.created_at_ms <= after
    assert before <= event.session_event.timestamp_ms <= after


def test_session_event_carries_a_kind_happy_adds_later() -> None:
    # Happy's zod enum is done / permission / question today; a string keeps tomorrow's.
    event = b.build_session_event_ephemeral("s1", "error", "Failed", "happy", now_ms=NOW)
    assert to_happy_json(event) == {
        "type": "session-event",
        "sessionId": "s1",
        "kind": "error",
        "title": "Failed",
        "body": "happy",
        "timestamp": NOW,
    }


def test_github_record_and_mapping_in_record_order_need_no_extras() -> None:
    # Extras appear only for what the record cannot say: same fields, same order, none.
    from_record = b.build_update_account_update(
        "u", AccountProfile(github=GITHUB), 1, "u", public_url=url, now_ms=NOW
    )
    from_mapping = b.build_update_account_update(
        "u", {"github": dataclasses.asdict(GITHUB)}, 1, "u", public_url=url, now_ms=NOW
    )
    assert from_mapping == from_record
    assert not from_record.body.update_account.github.profile.HasField("json_extras")


def test_records_are_frozen_and_slotted() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SESSION.seq = 2  # type: ignore[misc]
    assert not hasattr(SESSION, "__dict__")
    assert repr(ABSENT) == "ABSENT"
    assert AccountProfile().first_name is ABSENT
