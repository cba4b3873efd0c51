"""JSON text carried inside the contract (``RawHappyEvent``, ``JsonExtras``): parsing and limits.

The client's Happy codec writes and reads these texts, and the server checks
them before it accepts an event; both use this module, so a text the codec
produces is one the server accepts, and one the server accepts is one every
subscriber can render. It imports only the standard library: the server's
routing core must not import grpc, which ``eventrouter.client`` does.

The rules, the same wherever a text sits:

* one well-formed JSON value: no ``NaN`` / ``Infinity`` (JSON has none), no key
  repeated within an object (JavaScript would keep only the last one, so the
  text would not render back as it is);
* at most ``MAX_DEPTH`` nested arrays and objects, so that any subscriber's
  JSON parser (recursive in most languages) can read it;
* a raw event's kind: 1 to 64 characters from ``A-Z a-z 0-9 - _ . :``, equal
  to the discriminator inside its text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, NoReturn

__all__ = [
    "KIND_RULE",
    "MAX_DEPTH",
    "JsonTextError",
    "check_kind",
    "dumps",
    "loads",
    "members",
    "raw_event",
]

# Levels of arrays and objects in one text: `{}` is 1, `{"a": [1]}` is 2. A whole
# Happy event nests 4 today (update, body, github, plan); the rest is headroom.
MAX_DEPTH: Final = 32
_KIND: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
KIND_RULE: Final = "must be 1 to 64 characters from A-Z a-z 0-9 - _ . :"


class JsonTextError(ValueError):
    """A JSON text (or a raw event's kind) breaks a rule; ``field`` names where it sits."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _no_constant(name: str) -> NoReturn:
    # json.loads would accept NaN, Infinity and -Infinity, which are not JSON.
    raise ValueError(f"{name} is not a JSON value")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"the key {key!r} is repeated")
            seen.add(key)
    return obj


def _too_deep(field: str) -> JsonTextError:
    return JsonTextError(field, f"nested deeper than {MAX_DEPTH} levels of arrays and objects")


def _check_depth(value: Any, field: str) -> None:
    # Iterative, so that the check itself never recurses.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > MAX_DEPTH:
            raise _too_deep(field)
        stack.extend((child, level + 1) for child in children)


def loads(text: str, field: str) -> Any:
    """Parse ``text`` as one JSON value under the rules above; objects keep their key order."""
    try:
        value = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_object)
    except RecursionError:
        # Far deeper than MAX_DEPTH: the C parser gave up before we could count.
        raise _too_deep(field) from None
    except ValueError as e:
        raise JsonTextError(field, f"not valid JSON text: {e}") from None
    _check_depth(value, field)
    return value


def _mapping(value: object) -> dict[Any, Any]:
    # json.dumps writes dicts only; a caller may hold any Mapping.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def dumps(value: Any, field: str) -> str:
    """Compact JSON text of ``value`` (as ``json.loads`` returns it), checked like ``loads``.

    Compact (``JSON.stringify``'s spacing) and not ASCII-escaped, so it is no
    longer than it must be; a string holding a lone surrogate, which UTF-8
    (and so a protobuf string) cannot hold, is written escaped instead.
    """
    try:
        options: dict[str, Any] = {"separators": (",", ":"), "allow_nan": False}
        text = json.dumps(value, ensure_ascii=False, default=_mapping, **options)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(value, default=_mapping, **options)
    except RecursionError:
        raise _too_deep(field) from None
    except (TypeError, ValueError) as e:
        raise JsonTextError(field, f"not a JSON value: {e}") from None
    loads(text, field)  # depth, and keys that only became equal as text ({1: .., "1": ..})
    return text


def check_kind(kind: str, field: str) -> None:
    """A raw event's kind follows ``KIND_RULE``."""
    if not _KIND.fullmatch(kind):
        raise JsonTextError(field, KIND_RULE)


def raw_event(kind: str, text: str, tag_key: str, *, kind_field: str, json_field: str) -> Any:
    """Check a ``RawHappyEvent`` and return its parsed JSON object.

    ``tag_key`` is Happy's discriminator: ``"t"`` in an update's body,
    ``"type"`` in an ephemeral event.
    """
    check_kind(kind, kind_field)
    obj = loads(text, json_field)
    if not isinstance(obj, dict):
        raise JsonTextError(json_field, "must be a JSON object")
    if obj.get(tag_key) != kind:
        raise JsonTextError(json_field, f"its {tag_key!r} must be the kind, {kind!r}")
    return obj


def members(pairs: Iterable[tuple[str, str]], field: str) -> dict[str, Any]:
    """Check ``JsonExtras.members`` given as (key, JSON text); return key -> parsed value."""
    out: dict[str, Any] = {}
    for i, (key, text) in enumerate(pairs):
        where = f"{field}[{i}]"
        if key in out:
            raise JsonTextError(f"{where}.key", f"the key {key!r} is repeated")
        out[key] = loads(text, f"{where}.json")
    return out
