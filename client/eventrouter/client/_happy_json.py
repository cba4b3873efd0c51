"""Happy's wire JSON <-> the protobuf contract, both ways, exactly.

``to_happy_json`` returns the dict Happy's builders put on the wire, keys in
Happy's order, so ``json.dumps`` of it equals ``JSON.stringify`` of Happy's
payload (see ``_json_values`` for the one place where this cannot hold: key
order inside ``google.protobuf.Value`` objects). ``from_happy_json`` is its
inverse and strict: it decodes fully or raises ``HappyWireError``; it never
returns a half-filled payload and never silently drops a key it does not know.

Each event kind is described once, as a table of (wire key, proto field,
codec); one walker encodes and decodes every table, so the two directions
cannot drift apart.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf.message import Message

from eventrouter.client._json_values import (
    HappyWireError,
    b64_decode,
    b64_encode,
    expect_bool,
    expect_int64,
    expect_number,
    expect_str,
    join,
    js_number,
    json_to_value,
    value_to_json,
)
from eventrouter.client._records import ABSENT, status_from_wire, status_to_wire
from eventrouter.v1 import events_pb2

__all__ = [
    "HappyWireError",
    "ephemeral_from_happy_json",
    "from_happy_json",
    "to_happy_json",
    "update_from_happy_json",
]


class _Presence(enum.Enum):
    REQUIRED = enum.auto()  # the key is always on the wire, never null
    NULL = enum.auto()  # proto field unset <-> the key is present as null
    OMIT = enum.auto()  # proto field unset <-> the key is absent


class _Codec:
    """Moves one proto field of ``msg`` to its wire value and back.

    ``encode`` returns the JSON value, or ``ABSENT`` to leave the key out.
    ``decode`` gets the wire value, or ``ABSENT`` when the key is missing.
    """

    def encode(self, msg: Message, name: str, path: str) -> Any:
        raise NotImplementedError

    def decode(self, data: Any, msg: Message, name: str, path: str) -> None:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class _Field:
    wire: str
    proto: str
    codec: _Codec


_Spec = Sequence[_Field]


def _encode_fields(msg: Message, spec: _Spec, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in spec:
        value = f.codec.encode(msg, f.proto, join(path, f.wire))
        if value is not ABSENT:
            out[f.wire] = value
    return out


def _decode_fields(
    data: Any, msg: Message, spec: _Spec, path: str, extra: frozenset[str] = frozenset()
) -> None:
    obj = _expect_object(data, path)
    known = {f.wire for f in spec} | extra
    for key in obj:
        if key not in known:
            raise HappyWireError(join(path, str(key)), "unknown key")
    for f in spec:
        f.codec.decode(obj.get(f.wire, ABSENT), msg, f.proto, join(path, f.wire))


def _expect_object(data: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        shown = "null" if data is None else type(data).__name__
        raise HappyWireError(path, f"expected an object, got {shown}")
    return data


def _missing(path: str) -> HappyWireError:
    return HappyWireError(path, "required key is missing")


class _Scalar(_Codec):
    """A scalar field: ``check`` validates a wire value, ``to_json`` renders the proto value."""

    def __init__(
        self,
        check: Callable[[Any, str], Any],
        to_json: Callable[[Any, str], Any] = lambda value, _path: value,
        presence: _Presence = _Presence.REQUIRED,
    ) -> None:
        self.check = check
        self.to_json = to_json
        self.presence = presence

    def with_presence(self, presence: _Presence) -> _Scalar:
        return _Scalar(self.check, self.to_json, presence)

    def encode(self, msg: Message, name: str, path: str) -> Any:
        if self.presence is not _Presence.REQUIRED and not msg.HasField(name):
            return None if self.presence is _Presence.NULL else ABSENT
        return self.to_json(getattr(msg, name), path)

    def decode(self, data: Any, msg: Message, name: str, path: str) -> None:
        if data is ABSENT:
            if self.presence is _Presence.OMIT:
                return
            raise _missing(path)
        if data is None and self.presence is _Presence.NULL:
            return  # a fresh message: the field is already unset
        setattr(msg, name, self.check(data, path))


STR: Final = _Scalar(expect_str)
INT: Final = _Scalar(expect_int64)
BOOL: Final = _Scalar(expect_bool)
BYTES: Final = _Scalar(b64_decode, b64_encode)
STATUS: Final = _Scalar(status_from_wire, status_to_wire)
NULL_STR: Final = STR.with_presence(_Presence.NULL)
NULL_BOOL: Final = BOOL.with_presence(_Presence.NULL)
NULL_BYTES: Final = BYTES.with_presence(_Presence.NULL)
OPT_INT: Final = INT.with_presence(_Presence.OMIT)
OPT_BOOL: Final = BOOL.with_presence(_Presence.OMIT)


class _Object(_Codec):
    """A sub-message rendered as a JSON object; ``omit`` = unset is the absent key."""

    def __init__(self, spec: _Spec, *, omit: bool = False) -> None:
        self.spec = spec
        self.omit = omit

    def encode(self, msg: Message, name: str, path: str) -> Any:
        if not msg.HasField(name):
            if self.omit:
                return ABSENT
            raise HappyWireError(path, "required message is not set")
        return _encode_fields(getattr(msg, name), self.spec, path)

    def decode(self, data: Any, msg: Message, name: str, path: str) -> None:
        if data is ABSENT:
            if self.omit:
                return
            raise _missing(path)
        sub = getattr(msg, name)
        sub.SetInParent()
        _decode_fields(data, sub, self.spec, path)


class _Nullable(_Codec):
    """A ``Nullable*`` wrapper: unset = absent, empty = null, else ``inner`` of its field."""

    def __init__(self, inner_name: str, inner: _Codec) -> None:
        self.inner_name = inner_name
        self.inner = inner

    def encode(self, msg: Message, name: str, path: str) -> Any:
        if not msg.HasField(name):
            return ABSENT
        wrapper = getattr(msg, name)
        if not wrapper.HasField(self.inner_name):
            return None
        return self.inner.encode(wrapper, self.inner_name, path)

    def decode(self, data: Any, msg: Message, name: str, path: str) -> None:
        if data is ABSENT:
            return
        wrapper = getattr(msg, name)
        wrapper.SetInParent()
        if data is not None:
            self.inner.decode(data, wrapper, self.inner_name, path)


class _JsonValue(_Codec):
    """A required ``google.protobuf.Value`` (arbitrary JSON, ``null`` included)."""

    def encode(self, msg: Message, name: str, path: str) -> Any:
        if not msg.HasField(name):
            raise HappyWireError(path, "required JSON value is not set")
        return value_to_json(getattr(msg, name), path)

    def decode(self, data: Any, msg: Message, name: str, path: str) -> None:
        if data is ABSENT:
            raise _missing(path)
        getattr(msg, name).CopyFrom(json_to_value(data, path))


class _ObjectList(_Codec):
    """A repeated message field rendered as a JSON array of objects."""

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec

    def encode(self, msg: Message, name: str, path: str) -> Any:
        items = getattr(msg, name)
        return [_encode_fields(item, self.spec, f"{path}[{i}]") for i, item in enumerate(items)]

    def decode(self, data: Any, msg: Message, name: str, path: str) -> None:
        if data is ABSENT:
            raise _missing(path)
        if not isinstance(data, list | tuple):
            raise HappyWireError(path, "expected an array")
        items = getattr(msg, name)
        for i, item in enumerate(data):
            _decode_fields(item, items.add(), self.spec, f"{path}[{i}]")


class _ServiceNames(_Codec):
    """``ConnectedServices``: unset = absent, else a JSON array of strings."""

    def encode(self, msg: Message, name: str, path: str) -> Any:
        if not msg.HasField(name):
            return ABSENT
        return list(getattr(msg, name).services)

    def decode(self, data: Any, msg: Message, name: str, path: str) -> None:
        if data is ABSENT:
            return
        if not isinstance(data, list | tuple):
            raise HappyWireError(path, "expected an array")
        names = [expect_str(item, f"{path}[{i}]") for i, item in enumerate(data)]
        wrapper = getattr(msg, name)
        wrapper.SetInParent()
        wrapper.services.extend(names)


class _UsageNumbers(_Codec):
    """``repeated UsageEntry`` <-> a JSON object of numbers, in the entries' order."""

    def encode(self, msg: Message, name: str, path: str) -> Any:
        out: dict[str, int | float] = {}
        for entry in getattr(msg, name):
            entry_path = join(path, entry.key)
            if entry.key in out:
                raise HappyWireError(entry_path, "duplicate usage key")
            out[entry.key] = js_number(entry.value, entry_path)
        return out

    def decode(self, data: Any, msg: Message, name: str, path: str) -> None:
        if data is ABSENT:
            raise _missing(path)
        entries = getattr(msg, name)
        # A Mapping cannot repeat a key; json.loads keeps the last of duplicates.
        for key, value in _expect_object(data, path).items():
            entry_path = join(path, str(key))
            entries.add(key=expect_str(key, entry_path), value=expect_number(value, entry_path))


def _f(wire: str, codec: _Codec, proto: str | None = None) -> _Field:
    """A field whose proto name is ``proto`` (default: the wire key, unchanged)."""
    return _Field(wire, proto or wire, codec)


_VERSIONED_VALUE: Final = (_f("value", NULL_STR), _f("version", INT))
_VERSIONED_STRING: Final = (_f("value", STR), _f("version", INT))
_NULLABLE_VERSIONED: Final = _Nullable("value", _Object(_VERSIONED_VALUE))
_TIMES: Final = (_f("createdAt", INT, "created_at_ms"), _f("updatedAt", INT, "updated_at_ms"))

_SESSION_MESSAGE: Final = (
    _f("id", STR),
    _f("seq", INT),
    _f("content", _JsonValue()),
    _f("localId", NULL_STR, "local_id"),
    *_TIMES,
)


def _same(codec: _Codec, *keys: str) -> tuple[_Field, ...]:
    """Several consecutive fields of one codec whose wire key is the proto name."""
    return tuple(_f(key, codec) for key in keys)


_AVATAR: Final = (*_same(INT, "width", "height"), *_same(STR, "thumbhash", "path", "url"))
_GITHUB_PLAN: Final = (
    _f("collaborators", INT),
    _f("name", STR),
    *_same(INT, "space", "private_repos"),
)
# GitHub's REST names are already snake_case, so wire key == proto field throughout.
_GITHUB: Final = (
    _f("id", INT),
    *_same(STR, "login", "type"),
    _f("site_admin", BOOL),
    _f("avatar_url", STR),
    *_same(NULL_STR, "gravatar_id", "name", "company", "blog", "location", "email"),
    _f("hireable", NULL_BOOL),
    *_same(NULL_STR, "bio", "twitter_username"),
    *_same(INT, "public_repos", "public_gists", "followers", "following"),
    *_same(STR, "created_at", "updated_at"),
    *_same(OPT_INT, "private_gists", "total_private_repos", "owned_private_repos"),
    *_same(OPT_INT, "disk_usage", "collaborators"),
    _f("two_factor_authentication", OPT_BOOL),
    _f("plan", _Object(_GITHUB_PLAN, omit=True)),
)


def _new_row(id_key: str, id_field: str, state: str, state_field: str) -> tuple[_Field, ...]:
    """new-session and new-machine share their shape but for the names of id and state."""
    return (
        _f(id_key, STR, id_field),
        _f("seq", INT),
        _f("metadata", STR),
        _f("metadataVersion", INT, "metadata_version"),
        _f(state, NULL_STR, state_field),
        _f(f"{state}Version", INT, f"{state_field}_version"),
        _f("dataEncryptionKey", NULL_BYTES, "data_encryption_key"),
        _f("active", BOOL),
        _f("activeAt", INT, "active_at_ms"),
        *_TIMES,
    )


# UpdateEvent oneof field -> its fields after `t`, in wire order. Happy's `t`
# is the field name with dashes (`new_message` -> "new-message"), by design of the proto.
_UPDATE_KINDS: Final[dict[str, _Spec]] = {
    "new_message": (_f("sid", STR, "session_id"), _f("message", _Object(_SESSION_MESSAGE))),
    "new_session": _new_row("id", "session_id", "agentState", "agent_state"),
    "update_session": (
        _f("id", STR, "session_id"),
        _f("metadata", _NULLABLE_VERSIONED),
        _f("agentState", _NULLABLE_VERSIONED, "agent_state"),
    ),
    "update_account": (
        _f("id", STR, "user_id"),
        _f("firstName", _Nullable("value", STR), "first_name"),
        _f("lastName", _Nullable("value", STR), "last_name"),
        _f("username", _Nullable("value", STR)),
        _f("avatar", _Object(_AVATAR, omit=True)),
        _f("settings", _NULLABLE_VERSIONED),
        _f("github", _Nullable("profile", _Object(_GITHUB))),
        _f("connectedServices", _ServiceNames(), "connected_services"),
    ),
    "new_machine": _new_row("machineId", "machine_id", "daemonState", "daemon_state"),
    "update_machine": (
        _f("machineId", STR, "machine_id"),
        _f("metadata", _Object(_VERSIONED_STRING, omit=True)),
        _f("daemonState", _Object(_VERSIONED_STRING, omit=True), "daemon_state"),
        _f("activeAt", OPT_INT, "active_at_ms"),
    ),
    "new_artifact": (
        _f("artifactId", STR, "artifact_id"),
        _f("seq", INT),
        _f("header", BYTES),
        _f("headerVersion", INT, "header_version"),
        _f("body", BYTES),
        _f("bodyVersion", INT, "body_version"),
        _f("dataEncryptionKey", BYTES, "data_encryption_key"),
        *_TIMES,
    ),
    "update_artifact": (
        _f("artifactId", STR, "artifact_id"),
        _f("header", _Object(_VERSIONED_STRING, omit=True)),
        _f("body", _Object(_VERSIONED_STRING, omit=True)),
    ),
    "delete_artifact": (_f("artifactId", STR, "artifact_id"),),
    "delete_session": (_f("sid", STR, "session_id"),),
    "relationship_updated": (
        _f("uid", STR),
        _f("status", STATUS),
        _f("timestamp", INT, "timestamp_ms"),
    ),
    "new_feed_post": (
        _f("id", STR),
        _f("body", _JsonValue()),
        _f("cursor", STR),
        _f("createdAt", INT, "created_at_ms"),
    ),
    "kv_batch_update": (
        _f("changes", _ObjectList((_f("key", STR), _f("value", NULL_STR), _f("version", INT)))),
    ),
}

# EphemeralPayload oneof field -> its fields after `type` (same naming rule).
_EPHEMERAL_KINDS: Final[dict[str, _Spec]] = {
    "activity": (
        _f("id", STR, "session_id"),
        _f("active", BOOL),
        _f("activeAt", INT, "active_at_ms"),
        _f("thinking", OPT_BOOL),
    ),
    "machine_activity": (
        _f("id", STR, "machine_id"),
        _f("active", BOOL),
        _f("activeAt", INT, "active_at_ms"),
    ),
    "usage": (
        _f("id", STR, "session_id"),
        _f("key", STR),
        _f("tokens", _UsageNumbers()),
        _f("cost", _UsageNumbers()),
        _f("timestamp", INT, "timestamp_ms"),
    ),
    "machine_status": (
        _f("machineId", STR, "machine_id"),
        _f("online", BOOL),
        _f("timestamp", INT, "timestamp_ms"),
    ),
}


class _Union(_Codec):
    """A oneof whose kind is named on the wire by ``tag_key`` (``t`` or ``type``)."""

    def __init__(self, tag_key: str, kinds: Mapping[str, _Spec], what: str) -> None:
        self.tag_key = tag_key
        self.what = what
        self.by_field = {field: (field.replace("_", "-"), spec) for field, spec in kinds.items()}
        self.by_tag = {tag: (field, spec) for field, (tag, spec) in self.by_field.items()}

    def encode_into(self, union: Message, path: str) -> dict[str, Any]:
        field = union.WhichOneof("event")
        if field is None:
            raise HappyWireError(join(path, self.tag_key), f"no {self.what} kind is set")
        tag, spec = self.by_field[field]
        return {self.tag_key: tag, **_encode_fields(getattr(union, field), spec, path)}

    def decode_into(self, data: Any, union: Message, path: str) -> None:
        obj = _expect_object(data, path)
        tag_path = join(path, self.tag_key)
        if self.tag_key not in obj:
            raise _missing(tag_path)
        tag = expect_str(obj[self.tag_key], tag_path)
        if tag not in self.by_tag:
            raise HappyWireError(tag_path, f"unknown {self.what} type {tag!r}")
        field, spec = self.by_tag[tag]
        sub = getattr(union, field)
        sub.SetInParent()
        _decode_fields(obj, sub, spec, path, frozenset({self.tag_key}))

    # As a field codec: the update envelope's `body`.
    def encode(self, msg: Message, name: str, path: str) -> Any:
        return self.encode_into(getattr(msg, name), path)

    def decode(self, data: Any, msg: Message, name: str, path: str) -> None:
        if data is ABSENT:
            raise _missing(path)
        self.decode_into(data, getattr(msg, name), path)


_UPDATE_BODY: Final = _Union("t", _UPDATE_KINDS, "update")
_EPHEMERAL: Final = _Union("type", _EPHEMERAL_KINDS, "ephemeral")
_UPDATE_ENVELOPE: Final = (
    _f("id", STR),
    _f("seq", INT),
    _f("body", _UPDATE_BODY),
    _f("createdAt", INT, "created_at_ms"),
)


def to_happy_json(
    payload: events_pb2.UpdatePayload | events_pb2.EphemeralPayload,
) -> dict[str, Any]:
    """Return ``payload`` as the JSON object Happy emits (``update`` or ``ephemeral``).

    Raises ``HappyWireError`` for a payload the wire cannot carry: no event
    kind set, an unspecified relationship status, a required message or JSON
    value left unset, a non-finite number, or a repeated usage key.
    """
    if isinstance(payload, events_pb2.UpdatePayload):
        return _encode_fields(payload, _UPDATE_ENVELOPE, "")
    if isinstance(payload, events_pb2.EphemeralPayload):
        return _EPHEMERAL.encode_into(payload, "")
    raise TypeError(f"expected UpdatePayload or EphemeralPayload, got {type(payload).__name__}")


def update_from_happy_json(data: Mapping[str, Any]) -> events_pb2.UpdatePayload:
    """Decode Happy's ``update`` JSON; raises ``HappyWireError`` on any deviation."""
    payload = events_pb2.UpdatePayload()
    _decode_fields(data, payload, _UPDATE_ENVELOPE, "")
    return payload


def ephemeral_from_happy_json(data: Mapping[str, Any]) -> events_pb2.EphemeralPayload:
    """Decode Happy's ``ephemeral`` JSON; raises ``HappyWireError`` on any deviation."""
    payload = events_pb2.EphemeralPayload()
    _EPHEMERAL.decode_into(data, payload, "")
    return payload


def from_happy_json(
    data: Mapping[str, Any],
) -> events_pb2.UpdatePayload | events_pb2.EphemeralPayload:
    """Decode either kind: an update has ``body`` (with ``body.t``), an ephemeral ``type``.

    Strict: unknown keys, wrong JSON types (``true`` is not a number),
    missing keys, unknown ``t``/``type`` or status, and bad base64 all raise
    ``HappyWireError`` naming the field; nothing is returned half-decoded.
    """
    obj = _expect_object(data, "")
    if "body" in obj:
        return update_from_happy_json(obj)
    if "type" in obj:
        return ephemeral_from_happy_json(obj)
    raise HappyWireError("type", "neither an update (`body.t`) nor an ephemeral event (`type`)")
