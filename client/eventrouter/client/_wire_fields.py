"""The field codecs of the Happy JSON codec: one table row moves one proto field.

A JSON object on Happy's wire is described once, as a table (``Spec``) of
(wire key, proto field, codec); ``encode_fields`` and ``decode_fields`` walk
a table in both directions, so the two directions cannot drift apart.

Keys a table does not model are kept in the message's ``json_extras``
(``JsonExtras`` in happy_json.proto): ``decode_fields`` stores each unknown
key with its value as JSON text, and the wire's key order when it is not the
table's; ``encode_fields`` puts them back. Nothing is dropped, and an object
renders back with its keys in the order it came with.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf.message import Message

from eventrouter import jsontext
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
    wire_errors,
    wire_order,
)
from eventrouter.client._records import ABSENT, status_from_wire, status_to_wire

__all__ = [
    "BOOL",
    "BYTES",
    "INT",
    "NULL_BOOL",
    "NULL_BYTES",
    "NULL_STR",
    "OPT_BOOL",
    "OPT_INT",
    "STATUS",
    "STR",
    "Codec",
    "JsonValueField",
    "Nullable",
    "Object",
    "ObjectList",
    "ServiceNames",
    "Spec",
    "UsageNumbers",
    "decode_fields",
    "encode_fields",
    "expect_object",
    "f",
    "missing",
    "same",
]

_EXTRAS: Final = "json_extras"


class _Presence(enum.Enum):
    REQUIRED = enum.auto()  # the key is always on the wire, never null
    NULL = enum.auto()  # proto field unset <-> the key is present as null
    OMIT = enum.auto()  # proto field unset <-> the key is absent


class Codec:
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
    codec: Codec


Spec = Sequence[_Field]


def encode_fields(
    msg: Message, spec: Spec, path: str, head: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``msg`` as its JSON object: ``head`` (a discriminator), the table's keys, the extras."""
    out: dict[str, Any] = dict(head) if head else {}
    for f in spec:
        value = f.codec.encode(msg, f.proto, join(path, f.wire))
        if value is not ABSENT:
            out[f.wire] = value
    if msg.HasField(_EXTRAS):
        return _with_extras(out, msg.json_extras, join(path, _EXTRAS))  # type: ignore[attr-defined]
    return out


def _with_extras(out: dict[str, Any], extras: Any, path: str) -> dict[str, Any]:
    members_path = join(path, "members")
    with wire_errors():
        values = jsontext.members(((m.key, m.json) for m in extras.members), members_path)
    for i, (key, value) in enumerate(values.items()):
        if key in out:
            raise HappyWireError(f"{members_path}[{i}].key", f"{key!r} is a modelled key")
        out[key] = value
    if not extras.key_order:
        return out
    # The named keys first, in key_order's order; the others after them, as they were.
    ordered = {key: out[key] for key in extras.key_order if key in out}
    ordered.update(out)
    return ordered


def decode_fields(data: Any, msg: Message, spec: Spec, path: str, head: Sequence[str] = ()) -> None:
    """Fill ``msg`` from its JSON object; the caller decodes the ``head`` keys (a discriminator)."""
    obj = expect_object(data, path)
    known = {f.wire for f in spec}
    unknown = [key for key in obj if key not in known and key not in head]
    for f in spec:
        f.codec.decode(obj.get(f.wire, ABSENT), msg, f.proto, join(path, f.wire))
    order = wire_order(list(obj), (f.wire for f in spec), head)
    if not unknown and order is None:
        return
    # Every message a table describes has json_extras (a test checks it).
    extras = msg.json_extras  # type: ignore[attr-defined]
    for key in unknown:
        key_path = join(path, str(key))
        expect_str(key, key_path)
        with wire_errors():
            extras.members.add(key=key, json=jsontext.dumps(obj[key], key_path))
    if order is not None:
        extras.key_order.extend(order)


def expect_object(data: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        shown = "null" if data is None else type(data).__name__
        raise HappyWireError(path, f"expected an object, got {shown}")
    return data


def missing(path: str) -> HappyWireError:
    return HappyWireError(path, "required key is missing")


class _Scalar(Codec):
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
            raise missing(path)
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


class Object(Codec):
    """A sub-message rendered as a JSON object; ``omit`` = unset is the absent key."""

    def __init__(self, spec: Spec, *, omit: bool = False) -> None:
        self.spec = spec
        self.omit = omit

    def encode(self, msg: Message, name: str, path: str) -> Any:
        if not msg.HasField(name):
            if self.omit:
                return ABSENT
            raise HappyWireError(path, "required message is not set")
        return encode_fields(getattr(msg, name), self.spec, path)

    def decode(self, data: Any, msg: Message, name: str, path: str) -> None:
        if data is ABSENT:
            if self.omit:
                return
            raise missing(path)
        sub = getattr(msg, name)
        sub.SetInParent()
        decode_fields(data, sub, self.spec, path)


class Nullable(Codec):
    """A ``Nullable*`` wrapper: unset = absent, empty = null, else ``inner`` of its field."""

    def __init__(self, inner_name: str, inner: Codec) -> None:
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


class JsonValueField(Codec):
    """A required ``google.protobuf.Value`` (arbitrary JSON, ``null`` included)."""

    def encode(self, msg: Message, name: str, path: str) -> Any:
        if not msg.HasField(name):
            raise HappyWireError(path, "required JSON value is not set")
        return value_to_json(getattr(msg, name), path)

    def decode(self, data: Any, msg: Message, name: str, path: str) -> None:
        if data is ABSENT:
            raise missing(path)
        getattr(msg, name).CopyFrom(json_to_value(data, path))


class ObjectList(Codec):
    """A repeated message field rendered as a JSON array of objects."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec

    def encode(self, msg: Message, name: str, path: str) -> Any:
        items = getattr(msg, name)
        return [encode_fields(item, self.spec, f"{path}[{i}]") for i, item in enumerate(items)]

    def decode(self, data: Any, msg: Message, name: str, path: str) -> None:
        if data is ABSENT:
            raise missing(path)
        if not isinstance(data, list | tuple):
            raise HappyWireError(path, "expected an array")
        items = getattr(msg, name)
        for i, item in enumerate(data):
            decode_fields(item, items.add(), self.spec, f"{path}[{i}]")


class ServiceNames(Codec):
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


class UsageNumbers(Codec):
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
            raise missing(path)
        entries = getattr(msg, name)
        # A Mapping cannot repeat a key; json.loads keeps the last of duplicates.
        for key, value in expect_object(data, path).items():
            entry_path = join(path, str(key))
            entries.add(key=expect_str(key, entry_path), value=expect_number(value, entry_path))


def f(wire: str, codec: Codec, proto: str | None = None) -> _Field:
    """A field whose proto name is ``proto`` (default: the wire key, unchanged)."""
    return _Field(wire, proto or wire, codec)


def same(codec: Codec, *keys: str) -> tuple[_Field, ...]:
    """Several consecutive fields of one codec whose wire key is the proto name."""
    return tuple(f(key, codec) for key in keys)
