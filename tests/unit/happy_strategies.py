"""Hypothesis strategies for valid ``UpdatePayload``s and ``EphemeralPayload``s.

"Valid" means representable on Happy's wire, so that protobuf -> Happy JSON
-> protobuf is the identity: an event kind is always set, relationship
status is never UNSPECIFIED, usage keys are unique, numbers are finite and
never -0.0 (``JSON.stringify(-0)`` is ``"0"``), strings hold no lone
surrogates (``st.text`` never makes them).

Reuse: ``update_payloads``, ``ephemeral_payloads`` and ``payloads`` cover
every kind; ``UPDATE_EVENTS`` / ``EPHEMERAL_EVENTS`` map each wire name
(``t`` / ``type``) to a strategy for that kind alone.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2
from hypothesis import strategies as st

from eventrouter.client._json_values import json_to_value
from eventrouter.client._records import STATUS_BY_WIRE
from eventrouter.v1 import events_pb2 as pb

__all__ = [
    "BROKEN_RAW",
    "EPHEMERAL_EVENTS",
    "UPDATE_EVENTS",
    "ephemeral_payloads",
    "int64s",
    "json_data",
    "json_values",
    "payloads",
    "update_payloads",
]

int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
texts = st.text(max_size=12)
opt_texts = st.none() | texts
opt_bytes = st.none() | st.binary(max_size=24)

# A JSON number is a double; "+ 0.0" turns -0.0 into 0.0, the only double the wire cannot carry.
json_numbers = st.floats(allow_nan=False, allow_infinity=False).map(
    lambda x: x + 0.0
) | st.integers(min_value=-(2**53), max_value=2**53).map(float)
json_data: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | json_numbers | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)
json_values: st.SearchStrategy[struct_pb2.Value] = json_data.map(lambda d: json_to_value(d, ""))

versioned_values = st.builds(pb.VersionedValue, value=opt_texts, version=int64s)
versioned_strings = st.builds(pb.VersionedString, value=texts, version=int64s)
opt_versioned_strings = st.none() | versioned_strings
# Three states: None = wrapper unset (absent), empty wrapper = null, else the value.
nullable_versioned = (
    st.none()
    | st.just(pb.NullableVersionedValue())
    | st.builds(pb.NullableVersionedValue, value=versioned_values)
)
nullable_strings = st.none() | st.builds(pb.NullableString, value=opt_texts)

_opt_int64s = st.none() | int64s
_opt_bools = st.none() | st.booleans()

github_profiles = st.builds(
    pb.GitHubProfile,
    id=int64s,
    login=texts,
    type=texts,
    site_admin=st.booleans(),
    avatar_url=texts,
    gravatar_id=opt_texts,
    name=opt_texts,
    company=opt_texts,
    blog=opt_texts,
    location=opt_texts,
    email=opt_texts,
    hireable=_opt_bools,
    bio=opt_texts,
    twitter_username=opt_texts,
    public_repos=int64s,
    public_gists=int64s,
    followers=int64s,
    following=int64s,
    created_at=texts,
    updated_at=texts,
    private_gists=_opt_int64s,
    total_private_repos=_opt_int64s,
    owned_private_repos=_opt_int64s,
    disk_usage=_opt_int64s,
    collaborators=_opt_int64s,
    two_factor_authentication=_opt_bools,
    plan=st.none()
    | st.builds(
        pb.GitHubPlan, collaborators=int64s, name=texts, space=int64s, private_repos=int64s
    ),
)
nullable_github = (
    st.none()
    | st.just(pb.NullableGitHubProfile())
    | st.builds(pb.NullableGitHubProfile, profile=github_profiles)
)
avatars = st.none() | st.builds(
    pb.AvatarImage, width=int64s, height=int64s, thumbhash=texts, path=texts, url=texts
)
connected_services = st.none() | st.builds(
    pb.ConnectedServices, services=st.lists(texts, max_size=3)
)


def _row(cls: Any, id_field: str, state_field: str) -> st.SearchStrategy[Any]:
    """new-session and new-machine rows."""
    return st.builds(
        cls,
        **{id_field: texts, state_field: opt_texts, f"{state_field}_version": int64s},
        seq=int64s,
        metadata=texts,
        metadata_version=int64s,
        data_encryption_key=opt_bytes,
        active=st.booleans(),
        active_at_ms=int64s,
        created_at_ms=int64s,
        updated_at_ms=int64s,
    )


_EVENTS: dict[str, st.SearchStrategy[Any]] = {
    "new_message": st.builds(
        pb.NewMessage,
        session_id=texts,
        message=st.builds(
            pb.SessionMessage,
            id=texts,
            seq=int64s,
            content=json_values,
            local_id=opt_texts,
            created_at_ms=int64s,
            updated_at_ms=int64s,
        ),
    ),
    "new_session": _row(pb.NewSession, "session_id", "agent_state"),
    "update_session": st.builds(
        pb.UpdateSession,
        session_id=texts,
        metadata=nullable_versioned,
        agent_state=nullable_versioned,
    ),
    "update_account": st.builds(
        pb.UpdateAccount,
        user_id=texts,
        first_name=nullable_strings,
        last_name=nullable_strings,
        username=nullable_strings,
        avatar=avatars,
        settings=nullable_versioned,
        github=nullable_github,
        connected_services=connected_services,
    ),
    "new_machine": _row(pb.NewMachine, "machine_id", "daemon_state"),
    "update_machine": st.builds(
        pb.UpdateMachine,
        machine_id=texts,
        metadata=opt_versioned_strings,
        daemon_state=opt_versioned_strings,
        active_at_ms=_opt_int64s,
    ),
    "new_artifact": st.builds(
        pb.NewArtifact,
        artifact_id=texts,
        seq=int64s,
        header=st.binary(max_size=24),
        header_version=int64s,
        body=st.binary(max_size=24),
        body_version=int64s,
        data_encryption_key=st.binary(max_size=24),
        created_at_ms=int64s,
        updated_at_ms=int64s,
    ),
    "update_artifact": st.builds(
        pb.UpdateArtifact,
        artifact_id=texts,
        header=opt_versioned_strings,
        body=opt_versioned_strings,
    ),
    "delete_artifact": st.builds(pb.DeleteArtifact, artifact_id=texts),
    "delete_session": st.builds(pb.DeleteSession, session_id=texts),
    "relationship_updated": st.builds(
        pb.RelationshipUpdated,
        uid=texts,
        status=st.sampled_from(sorted(STATUS_BY_WIRE.values())),
        timestamp_ms=int64s,
    ),
    "new_feed_post": st.builds(
        pb.NewFeedPost, id=texts, body=json_values, cursor=texts, created_at_ms=int64s
    ),
    "kv_batch_update": st.builds(
        pb.KvBatchUpdate,
        changes=st.lists(
            st.builds(pb.KvChange, key=texts, value=opt_texts, version=int64s), max_size=4
        ),
    ),
    "delete_machine": st.builds(pb.DeleteMachine, machine_id=texts),
}

# Every update's `t` is its oneof field name with dashes.
_WIRE_T = {field: field.replace("_", "-") for field in _EVENTS}


def _update_payloads_of(field: str, events: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.builds(
        pb.UpdatePayload,
        id=texts,
        seq=int64s,
        body=events.map(lambda event: pb.UpdateEvent(**{field: event})),
        created_at_ms=int64s,
    )


UPDATE_EVENTS: dict[str, st.SearchStrategy[pb.UpdatePayload]] = {
    _WIRE_T[field]: _update_payloads_of(field, events) for field, events in _EVENTS.items()
}


def _usage_numbers() -> st.SearchStrategy[list[pb.UsageEntry]]:
    return st.lists(st.tuples(texts, json_numbers), max_size=4, unique_by=lambda item: item[0]).map(
        lambda items: [pb.UsageEntry(key=key, value=value) for key, value in items]
    )


EPHEMERAL_EVENTS: dict[str, st.SearchStrategy[pb.EphemeralPayload]] = {
    "activity": st.builds(
        pb.SessionActivity,
        session_id=texts,
        active=st.booleans(),
        active_at_ms=int64s,
        thinking=_opt_bools,
    ).map(lambda e: pb.EphemeralPayload(activity=e)),
    "machine-activity": st.builds(
        pb.MachineActivity, machine_id=texts, active=st.booleans(), active_at_ms=int64s
    ).map(lambda e: pb.EphemeralPayload(machine_activity=e)),
    "usage": st.builds(
        pb.Usage,
        session_id=texts,
        key=texts,
        tokens=_usage_numbers(),
        cost=_usage_numbers(),
        timestamp_ms=int64s,
    ).map(lambda e: pb.EphemeralPayload(usage=e)),
    "machine-status": st.builds(
        pb.MachineStatus, machine_id=texts, online=st.booleans(), timestamp_ms=int64s
    ).map(lambda e: pb.EphemeralPayload(machine_status=e)),
    "session-event": st.builds(
        pb.SessionEvent,
        session_id=texts,
        kind=st.sampled_from(["done", "permission", "question"]) | texts,
        title=texts,
        body=texts,
        timestamp_ms=int64s,
    ).map(lambda e: pb.EphemeralPayload(session_event=e)),
}

update_payloads: st.SearchStrategy[pb.UpdatePayload] = st.one_of(*UPDATE_EVENTS.values())
ephemeral_payloads: st.SearchStrategy[pb.EphemeralPayload] = st.one_of(*EPHEMERAL_EVENTS.values())
payloads: st.SearchStrategy[pb.UpdatePayload | pb.EphemeralPayload] = (
    update_payloads | ephemeral_payloads
)

# Kinds the contract does not model: Happy-style names that are no modelled kind.
unknown_kinds = st.from_regex(r"[a-z]{1,8}(-[a-z]{1,8}){0,2}", fullmatch=True).filter(
    lambda kind: (
        kind.replace("-", "_") not in {*_EVENTS, *(k.replace("-", "_") for k in EPHEMERAL_EVENTS)}
    )
)
# Happy-style keys for unknown members: never a modelled key of any object (those are
# camelCase or GitHub's snake_case words; an `x_` prefix is neither).
unknown_keys = st.from_regex(r"x_[a-zA-Z0-9]{1,6}", fullmatch=True)
json_objects: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    unknown_keys, json_data, max_size=3
)


@st.composite
def raw_update_json(draw: st.DrawFn) -> dict[str, Any]:
    """Happy ``update`` JSON whose body is of a kind the contract does not model."""
    body = {"t": draw(unknown_kinds), **draw(json_objects)}
    container = {"id": draw(texts), "seq": draw(int64s), "body": body}
    return {**container, "createdAt": draw(int64s)}


@st.composite
def raw_ephemeral_json(draw: st.DrawFn) -> dict[str, Any]:
    """Happy ``ephemeral`` JSON of a kind the contract does not model."""
    return {"type": draw(unknown_kinds), **draw(json_objects)}


@st.composite
def with_unknown_keys(draw: st.DrawFn, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with unknown keys put at random places in some of its objects, at any depth.

    Objects inside ``google.protobuf.Value`` fields (content, feed body) are left
    alone: they are arbitrary JSON already, kept whole.
    """

    def visit(obj: Any, path: tuple[str, ...]) -> Any:
        if isinstance(obj, list):
            return [visit(item, path) for item in obj]
        if not isinstance(obj, dict) or path[-1:] in {("content",), ("tokens",), ("cost",)}:
            return obj
        if path[-2:] == ("new-feed-post", "body"):
            return obj
        kind = obj.get("t") or obj.get("type")
        inside = (*path, kind) if isinstance(kind, str) else path
        items = [(k, visit(v, (*inside, k))) for k, v in obj.items()]
        # At least one unknown key in the event's own object, so no example is a no-op.
        extra = draw(json_objects.filter(bool) if not path else json_objects)
        for key, value in extra.items():
            items.insert(draw(st.integers(0, len(items))), (key, value))
        return dict(items)

    result: dict[str, Any] = visit(data, ())
    return result


# RawHappyEvents of updates that break a rule of eventrouter.jsontext: (name, kind,
# json, the RawHappyEvent field named in the error). The codec refuses to render
# them and the server to route them, naming the same field.
BROKEN_RAW: list[tuple[str, str, str, str]] = [
    ("kind-empty", "", '{"t":""}', "kind"),
    ("kind-with-space", "a b", '{"t":"a b"}', "kind"),
    ("kind-too-long", "k" * 65, '{"t":"%s"}' % ("k" * 65), "kind"),
    ("json-broken", "k", '{"t":"k"', "json"),
    ("json-not-an-object", "k", '["k"]', "json"),
    ("json-other-kind", "k", '{"t":"j"}', "json"),
    ("json-without-kind", "k", "{}", "json"),
    ("json-repeated-key", "k", '{"t":"k","a":1,"a":2}', "json"),
    ("json-nan", "k", '{"t":"k","a":NaN}', "json"),
    ("json-too-deep", "k", '{"t":"k","x":' + "[" * 32 + "]" * 32 + "}", "json"),
]
