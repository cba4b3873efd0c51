"""JSON values as Happy's JavaScript sees them, and their checked conversion.

Shared by the builders (Python input -> protobuf) and the Happy JSON codec
(wire JSON <-> protobuf): the error type, the scalar checks, JavaScript number
formatting and the ``google.protobuf.Value`` <-> JSON conversion.

Key order of JSON objects inside a ``google.protobuf.Value``: a ``Struct`` is a
protobuf map, and the upb runtime iterates maps in hash order, which is seeded
per process (the same message lists its keys in a different order in two runs)
and is not kept across serialization either. Insertion order is therefore lost
the moment an object enters a ``Value``. To stay deterministic we emit a
canonical order instead: Happy's discriminator key ``"t"`` first (Happy's
content objects are tagged unions such as ``{"t": "encrypted", "c": ...}``),
then the other keys sorted by code point.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, Final, TypeAlias

from google.protobuf import struct_pb2

from eventrouter import jsontext

__all__ = [
    "HappyWireError",
    "JsonValue",
    "b64_decode",
    "b64_encode",
    "expect_bool",
    "expect_int64",
    "expect_number",
    "expect_str",
    "js_number",
    "json_to_value",
    "struct_key_order",
    "value_to_json",
    "wire_errors",
    "wire_order",
]

# What ``json.loads`` produces (tuples are accepted as arrays on input).
JsonValue: TypeAlias = (
    bool | int | float | str | Sequence["JsonValue"] | Mapping[str, "JsonValue"] | None
)

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
# JavaScript prints integral numbers below 1e21 without a fraction or exponent.
_JS_PLAIN_INTEGER_LIMIT: Final = 1e21
_EXACT_INTEGER_LIMIT: Final = 2.0**53


class HappyWireError(ValueError):
    """A value cannot be turned into Happy's wire JSON or the protobuf contract.

    ``field`` is the dotted path of the offending value, with list indexes in
    brackets: ``body.github.login``, ``body.changes[1].value``, ``tokens.input``.
    Wire JSON is addressed by wire key names, builder input by argument and
    field names (``session.last_active_at``); ``""`` is the payload itself.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field or '<payload>'}: {reason}")
        self.field = field
        self.reason = reason


@contextmanager
def wire_errors() -> Iterator[None]:
    """Report a broken JSON text (``eventrouter.jsontext``) as a ``HappyWireError``, same field."""
    try:
        yield
    except jsontext.JsonTextError as e:
        raise HappyWireError(e.field, e.reason) from None


def wire_order(
    keys: Sequence[str], modelled: Iterable[str], head: Sequence[str] = ()
) -> list[str] | None:
    """An object's key order, if a renderer would not reproduce it by itself; else None.

    A renderer writes ``head`` (a discriminator), then the modelled keys in the
    contract's order, then the other keys in the order they came: the default
    order of ``JsonExtras``, whose ``key_order`` holds this function's answer.
    """
    present = set(keys)
    modelled = [key for key in modelled if key not in head]
    known = {*modelled, *head}
    default = [key for key in (*head, *modelled) if key in present]
    default += [key for key in keys if key not in known]
    return None if list(keys) == default else list(keys)


def join(path: str, key: str) -> str:
    """Extend a dotted error path by one key."""
    return f"{path}.{key}" if path else key


def _type_name(value: object) -> str:
    # Name JSON's types, not Python's: the reader of the error thinks in JSON.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def expect_str(value: object, field: str) -> str:
    """Return ``value`` if it is a string protobuf can store (valid UTF-8)."""
    if not isinstance(value, str):
        raise HappyWireError(field, f"expected a string, got {_type_name(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # json.loads keeps lone surrogates ("\ud800"); protobuf strings cannot hold them.
        raise HappyWireError(field, "string is not valid Unicode (lone surrogate)") from None
    return value


def expect_bool(value: object, field: str) -> bool:
    """Return ``value`` if it is a boolean (0 and 1 are not booleans)."""
    if not isinstance(value, bool):
        raise HappyWireError(field, f"expected a boolean, got {_type_name(value)}")
    return value


def expect_int64(value: object, field: str) -> int:
    """Return ``value`` as an int if it is an integral JSON number in int64 range.

    JSON has one number type, so ``5.0`` is the integer 5 (as in JavaScript);
    ``True`` is not a number.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HappyWireError(field, f"expected an integer, got {_type_name(value)}")
    if isinstance(value, float):
        if not value.is_integer():
            raise HappyWireError(field, f"expected an integer, got {value!r}")
        value = int(value)
    if not INT64_MIN <= value <= INT64_MAX:
        raise HappyWireError(field, f"integer {value} is outside the int64 range")
    return value


def expect_number(value: object, field: str) -> float:
    """Return ``value`` as a finite double, as a JavaScript number would hold it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HappyWireError(field, f"expected a number, got {_type_name(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise HappyWireError(field, f"number {value} does not fit a double") from None
    if not math.isfinite(number):
        raise HappyWireError(field, f"number {value!r} is not finite (JSON has no NaN/Infinity)")
    # -0.0 + 0.0 is 0.0: the wire cannot carry -0 (JSON.stringify(-0) is "0").
    return number + 0.0


def b64_decode(data: object, path: str) -> bytes:
    """Raw bytes of a canonical base64 string (as Node's Buffer writes it)."""
    text = expect_str(data, path)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HappyWireError(path, "not valid base64") from None
    # Only the canonical spelling decodes, so decoding then encoding gives back the same text.
    if base64.b64encode(raw).decode("ascii") != text:
        raise HappyWireError(path, "not canonical base64 (padding or trailing bits)")
    return raw


def b64_encode(raw: bytes, _path: str = "") -> str:
    """Standard, padded base64 (Node's ``Buffer.toString("base64")``)."""
    return base64.b64encode(raw).decode("ascii")


def js_number(value: float, field: str = "") -> int | float:
    """Return a double as JavaScript's ``JSON.stringify`` would print it.

    An integral double below 1e21 becomes an ``int`` so ``json.dumps`` writes
    ``1``, not ``1.0`` (with JavaScript's digits above 2^53); ``-0.0`` becomes
    ``0``. Other values stay floats: their digits match JavaScript's shortest
    round-trip form; ``json.dumps`` spells some exponents differently
    (``1e-05`` vs ``0.00001``, ``1e+21`` alike), the number is the same.
    """
    if not math.isfinite(value):
        raise HappyWireError(field, f"number {value!r} is not finite (JSON has no NaN/Infinity)")
    if value.is_integer() and abs(value) < _JS_PLAIN_INTEGER_LIMIT:
        if abs(value) < _EXACT_INTEGER_LIMIT:
            return int(value)
        # Above 2^53 JavaScript prints the shortest round-trip digits padded with
        # zeros (2**60 -> 1152921504606847000), not the double's exact value.
        return int(Decimal(repr(value)))
    return value


def struct_key_order(keys: Iterable[str]) -> list[str]:
    """The canonical order of an object's keys (see the module docstring)."""
    return sorted(keys, key=lambda key: (key != "t", key))


def json_to_value(data: object, field: str) -> struct_pb2.Value:
    """Convert a JSON value (as ``json.loads`` returns it) into a ``Value``."""
    value = struct_pb2.Value()
    _fill_value(value, data, field)
    return value


def _fill_value(target: struct_pb2.Value, data: object, field: str) -> None:
    if data is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(data, bool):
        target.bool_value = data
    elif isinstance(data, int | float):
        target.number_value = expect_number(data, field)
    elif isinstance(data, str):
        target.string_value = expect_str(data, field)
    elif isinstance(data, Mapping):
        # SetInParent marks an empty object as an object (not "no kind").
        target.struct_value.SetInParent()
        fields = target.struct_value.fields
        for key, item in data.items():
            item_field = join(field, str(key))
            expect_str(key, item_field)
            _fill_value(fields[key], item, item_field)
    elif isinstance(data, list | tuple):
        target.list_value.SetInParent()
        values = target.list_value.values
        for index, item in enumerate(data):
            _fill_value(values.add(), item, f"{field}[{index}]")
    else:
        raise HappyWireError(field, f"{type(data).__name__} is not a JSON value")


def value_to_json(value: struct_pb2.Value, field: str) -> Any:
    """Convert a ``Value`` into JSON data, objects' keys in canonical order."""
    kind = value.WhichOneof("kind")
    if kind == "null_value":
        return None
    if kind == "bool_value":
        return value.bool_value
    if kind == "number_value":
        return js_number(value.number_value, field)
    if kind == "string_value":
        return value.string_value
    if kind == "struct_value":
        fields = value.struct_value.fields
        return {
            key: value_to_json(fields[key], join(field, key)) for key in struct_key_order(fields)
        }
    if kind == "list_value":
        return [
            value_to_json(item, f"{field}[{index}]")
            for index, item in enumerate(value.list_value.values)
        ]
    raise HappyWireError(field, "google.protobuf.Value has no kind set")
