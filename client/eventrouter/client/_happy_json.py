"""Happy's wire JSON <-> the protobuf contract, both ways, exactly.

``to_happy_json`` returns the dict Happy's builders put on the wire, keys in
Happy's order, so ``json.dumps`` of it equals ``JSON.stringify`` of Happy's
payload (see ``_json_values`` for the one place where this cannot hold: key
order inside ``google.protobuf.Value`` objects). ``from_happy_json`` is its
inverse: it decodes fully or raises ``HappyWireError``; it never returns a
half-filled payload.

What the contract does not model is kept, not refused: an event of a kind it
does not know becomes a ``RawHappyEvent`` (its JSON as text), and keys it
does not know become the ``json_extras`` of their object (``_wire_fields``);
both render back to the JSON they came from. Everything the contract does
model is checked strictly (types, required keys, enums, base64).

Each event kind is described once, as a table of (wire key, proto field,
codec); one walker encodes and decodes every table, so the two directions
cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from google.protobuf.message import Message

from eventrouter import jsontext
from eventrouter.client._json_values import HappyWireError, expect_str, join, wire_errors
from eventrouter.client._records import ABSENT
from eventrouter.client._wire_fields import (
    BOOL,
    BYTES,
    INT,
    NULL_BOOL,
    NULL_BYTES,
    NULL_STR,
    OPT_BOOL,
    OPT_INT,
    STATUS,
    STR,
    Codec,
    JsonValueField,
    Nullable,
    Object,
    ObjectList,
    ServiceNames,
    Spec,
    UsageNumbers,
    decode_fields,
    encode_fields,
    expect_object,
    f,
    missing,
    same,
)
from eventrouter.v1 import events_pb2

__all__ = [
    "HappyWireError",
    "ephemeral_from_happy_json",
    "from_happy_json",
    "to_happy_json",
    "update_from_happy_json",
]

_VERSIONED_VALUE: Final = (f("value", NULL_STR), f("version", INT))
_VERSIONED_STRING: Final = (f("value", STR), f("version", INT))
_NULLABLE_VERSIONED: Final = Nullable("value", Object(_VERSIONED_VALUE))
_TIMES: Final = (f("createdAt", INT, "created_at_ms"), f("updatedAt", INT, "updated_at_ms"))

_SESSION_MESSAGE: Final = (
    f("id", STR),
    f("seq", INT),
    f("content", JsonValueField()),
    f("localId", NULL_STR, "local_id"),
    *_TIMES,
)


_AVATAR: Final = (*same(INT, "width", "height"), *same(STR, "thumbhash", "path", "url"))
_GITHUB_PLAN: Final = (
    f("collaborators", INT),
    f("name", STR),
    *same(INT, "space", "private_repos"),
)
# GitHub's REST names are already snake_case, so wire key == proto field throughout.
_GITHUB: Final = (
    f("id", INT),
    *same(STR, "login", "type"),
    f("site_admin", BOOL),
    f("avatar_url", STR),
    *same(NULL_STR, "gravatar_id", "name", "company", "blog", "location", "email"),
    f("hireable", NULL_BOOL),
    *same(NULL_STR, "bio", "twitter_username"),
    *same(INT, "public_repos", "public_gists", "followers", "following"),
    *same(STR, "created_at", "updated_at"),
    *same(OPT_INT, "private_gists", "total_private_repos", "owned_private_repos"),
    *same(OPT_INT, "disk_usage", "collaborators"),
    f("two_factor_authentication", OPT_BOOL),
    f("plan", Object(_GITHUB_PLAN, omit=True)),
)


def _new_row(id_key: str, id_field: str, state: str, state_field: str) -> Spec:
    """new-session and new-machine share their shape but for the names of id and state."""
    return (
        f(id_key, STR, id_field),
        f("seq", INT),
        f("metadata", STR),
        f("metadataVersion", INT, "metadata_version"),
        f(state, NULL_STR, state_field),
        f(f"{state}Version", INT, f"{state_field}_version"),
        f("dataEncryptionKey", NULL_BYTES, "data_encryption_key"),
        f("active", BOOL),
        f("activeAt", INT, "active_at_ms"),
        *_TIMES,
    )


# UpdateEvent oneof field -> its fields after `t`, in wire order. Happy's `t`
# is the field name with dashes (`new_message` -> "new-message"), by design of the proto.
_UPDATE_KINDS: Final[dict[str, Spec]] = {
    "new_message": (f("sid", STR, "session_id"), f("message", Object(_SESSION_MESSAGE))),
    "new_session": _new_row("id", "session_id", "agentState", "agent_state"),
    "update_session": (
        f("id", STR, "session_id"),
        f("metadata", _NULLABLE_VERSIONED),
        f("agentState", _NULLABLE_VERSIONED, "agent_state"),
    ),
    "update_account": (
        f("id", STR, "user_id"),
        f("firstName", Nullable("value", STR), "first_name"),
        f("lastName", Nullable("value", STR), "last_name"),
        f("username", Nullable("value", STR)),
        f("avatar", Object(_AVATAR, omit=True)),
        f("settings", _NULLABLE_VERSIONED),
        f("github", Nullable("profile", Object(_GITHUB))),
        f("connectedServices", ServiceNames(), "connected_services"),
    ),
    "new_machine": _new_row("machineId", "machine_id", "daemonState", "daemon_state"),
    "update_machine": (
        f("machineId", STR, "machine_id"),
        f("metadata", Object(_VERSIONED_STRING, omit=True)),
        f("daemonState", Object(_VERSIONED_STRING, omit=True), "daemon_state"),
        f("activeAt", OPT_INT, "active_at_ms"),
    ),
    "new_artifact": (
        f("artifactId", STR, "artifact_id"),
        f("seq", INT),
        f("header", BYTES),
        f("headerVersion", INT, "header_version"),
        f("body", BYTES),
        f("bodyVersion", INT, "body_version"),
        f("dataEncryptionKey", BYTES, "data_encryption_key"),
        *_TIMES,
    ),
    "update_artifact": (
        f("artifactId", STR, "artifact_id"),
        f("header", Object(_VERSIONED_STRING, omit=True)),
        f("body", Object(_VERSIONED_STRING, omit=True)),
    ),
    "delete_artifact": (f("artifactId", STR, "artifact_id"),),
    "delete_session": (f("sid", STR, "session_id"),),
    "relationship_updated": (
        f("uid", STR),
        f("status", STATUS),
        f("timestamp", INT, "timestamp_ms"),
    ),
    "new_feed_post": (
        f("id", STR),
        f("body", JsonValueField()),
        f("cursor", STR),
        f("createdAt", INT, "created_at_ms"),
    ),
    "kv_batch_update": (
        f("changes", ObjectList((f("key", STR), f("value", NULL_STR), f("version", INT)))),
    ),
    "delete_machine": (f("machineId", STR, "machine_id"),),
}

# EphemeralPayload oneof field -> its fields after `type` (same naming rule).
_EPHEMERAL_KINDS: Final[dict[str, Spec]] = {
    "activity": (
        f("id", STR, "session_id"),
        f("active", BOOL),
        f("activeAt", INT, "active_at_ms"),
        f("thinking", OPT_BOOL),
    ),
    "machine_activity": (
        f("id", STR, "machine_id"),
        f("active", BOOL),
        f("activeAt", INT, "active_at_ms"),
    ),
    "usage": (
        f("id", STR, "session_id"),
        f("key", STR),
        f("tokens", UsageNumbers()),
        f("cost", UsageNumbers()),
        f("timestamp", INT, "timestamp_ms"),
    ),
    "machine_status": (
        f("machineId", STR, "machine_id"),
        f("online", BOOL),
        f("timestamp", INT, "timestamp_ms"),
    ),
    "session_event": (
        f("sessionId", STR, "session_id"),
        *same(STR, "kind", "title", "body"),
        f("timestamp", INT, "timestamp_ms"),
    ),
}


class _Union(Codec):
    """A oneof whose kind is named on the wire by ``tag_key`` (``t`` or ``type``).

    A kind outside ``kinds`` travels as the oneof's ``raw`` case: the object's
    JSON text, rendered back as it is.
    """

    def __init__(self, tag_key: str, kinds: Mapping[str, Spec], what: str) -> None:
        self.tag_key = tag_key
        self.what = what
        self.by_field = {field: (field.replace("_", "-"), spec) for field, spec in kinds.items()}
        self.by_tag = {tag: (field, spec) for field, (tag, spec) in self.by_field.items()}

    def encode_into(self, union: Message, path: str) -> dict[str, Any]:
        field = union.WhichOneof("event")
        if field is None:
            raise HappyWireError(join(path, self.tag_key), f"no {self.what} kind is set")
        if field == "raw":
            raw = union.raw  # type: ignore[attr-defined]
            raw_path = join(path, "raw")
            with wire_errors():
                obj: dict[str, Any] = jsontext.raw_event(
                    raw.kind,
                    raw.json,
                    self.tag_key,
                    kind_field=join(raw_path, "kind"),
                    json_field=join(raw_path, "json"),
                )
            return obj
        tag, spec = self.by_field[field]
        return encode_fields(getattr(union, field), spec, path, head={self.tag_key: tag})

    def decode_into(self, data: Any, union: Message, path: str) -> None:
        obj = expect_object(data, path)
        tag_path = join(path, self.tag_key)
        if self.tag_key not in obj:
            raise missing(tag_path)
        tag = expect_str(obj[self.tag_key], tag_path)
        if tag not in self.by_tag:
            # A kind Happy added after this contract: carried whole, as its JSON text.
            with wire_errors():
                jsontext.check_kind(tag, tag_path)
                text = jsontext.dumps(obj, path)
            union.raw.kind = tag  # type: ignore[attr-defined]
            union.raw.json = text  # type: ignore[attr-defined]
            return
        field, spec = self.by_tag[tag]
        sub = getattr(union, field)
        sub.SetInParent()
        decode_fields(obj, sub, spec, path, head=(self.tag_key,))

    # As a field codec: the update envelope's `body`.
    def encode(self, msg: Message, name: str, path: str) -> Any:
        return self.encode_into(getattr(msg, name), path)

    def decode(self, data: Any, msg: Message, name: str, path: str) -> None:
        if data is ABSENT:
            raise missing(path)
        self.decode_into(data, getattr(msg, name), path)


_UPDATE_BODY: Final = _Union("t", _UPDATE_KINDS, "update")
_EPHEMERAL: Final = _Union("type", _EPHEMERAL_KINDS, "ephemeral")
_UPDATE_ENVELOPE: Final = (
    f("id", STR),
    f("seq", INT),
    f("body", _UPDATE_BODY),
    f("createdAt", INT, "created_at_ms"),
)


def to_happy_json(
    payload: events_pb2.UpdatePayload | events_pb2.EphemeralPayload,
) -> dict[str, Any]:
    """Return ``payload`` as the JSON object Happy emits (``update`` or ``ephemeral``).

    Raises ``HappyWireError`` for a payload the wire cannot carry: no event
    kind set, an unspecified relationship status, a required message or JSON
    value left unset, a non-finite number, a repeated usage key, or JSON text
    (``raw``, ``json_extras``) that breaks the rules of ``eventrouter.jsontext``
    or repeats a key the contract models.
    """
    if isinstance(payload, events_pb2.UpdatePayload):
        return encode_fields(payload, _UPDATE_ENVELOPE, "")
    if isinstance(payload, events_pb2.EphemeralPayload):
        return _EPHEMERAL.encode_into(payload, "")
    raise TypeError(f"expected UpdatePayload or EphemeralPayload, got {type(payload).__name__}")


def update_from_happy_json(data: Mapping[str, Any]) -> events_pb2.UpdatePayload:
    """Decode Happy's ``update`` JSON; raises ``HappyWireError`` on any deviation."""
    payload = events_pb2.UpdatePayload()
    decode_fields(data, payload, _UPDATE_ENVELOPE, "")
    return payload


def ephemeral_from_happy_json(data: Mapping[str, Any]) -> events_pb2.EphemeralPayload:
    """Decode Happy's ``ephemeral`` JSON; raises ``HappyWireError`` on any deviation."""
    payload = events_pb2.EphemeralPayload()
    _EPHEMERAL.decode_into(data, payload, "")
    return payload


def from_happy_json(
    data: Mapping[str, Any],
) -> events_pb2.UpdatePayload | events_pb2.EphemeralPayload:
    """Decode either kind, told apart by Happy's discriminators, as Happy's app does.

    An update is a container whose ``body`` object has ``t``; an ephemeral
    event has ``type``. Which keys an event has beyond those decides nothing
    (``session-event`` has a string ``body``). An object with both is
    ambiguous: Happy's Socket.IO event name (``update`` / ``ephemeral``) tells
    them apart, so decode it with ``update_from_happy_json`` or
    ``ephemeral_from_happy_json``.

    Unknown kinds and keys are kept (see the module docstring). Wrong JSON
    types (``true`` is not a number), missing keys, an unknown relationship
    status and bad base64 raise ``HappyWireError`` naming the field.
    """
    obj = expect_object(data, "")
    body = obj.get("body")
    is_update = isinstance(body, Mapping) and "t" in body
    is_ephemeral = "type" in obj
    if is_update and is_ephemeral:
        raise HappyWireError(
            "",
            "both an update (`body.t`) and an ephemeral event (`type`); decode it with "
            "update_from_happy_json or ephemeral_from_happy_json",
        )
    if is_ephemeral:
        return ephemeral_from_happy_json(obj)
    if is_update or "body" in obj:
        # A container whose body is broken: the update decoder names what is wrong.
        return update_from_happy_json(obj)
    raise HappyWireError("type", "neither an update (`body.t`) nor an ephemeral event (`type`)")
