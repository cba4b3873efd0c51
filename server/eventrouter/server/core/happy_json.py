"""The server's checks on Happy JSON carried as text: ``RawHappyEvent`` and ``JsonExtras``.

The router forwards payloads byte for byte, so whatever it accepts reaches
every subscriber; these checks make sure each of them can read it. The rules
are ``eventrouter.jsontext``'s, the ones the client codec writes by: each text
is one JSON value of at most ``MAX_DEPTH`` levels, with no repeated key; a raw
event names a valid kind and carries it as its discriminator; the members of
one object do not repeat a key. The event's size limit covers the texts like
any other field (``check_size``).

What is not checked here: that a member repeats none of the keys its object
models. The server does not know Happy's key names (they live in the client's
codec tables); the codec never writes such a member and refuses to render one.

A ``JsonExtras`` can sit in any message that is a JSON object on the wire, so
the walk visits every set sub-message that can hold one. Which fields those
are is worked out once per message type, so an event without extras costs a
few ``HasField`` calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Final

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from eventrouter import jsontext

__all__ = ["EXTRAS_TAG", "check_ephemeral", "check_extras", "check_raw", "check_update"]

_EXTRAS: Final = "json_extras"
# Every ``json_extras`` is field 1000, length-delimited: its tag's bytes.  A set
# message field is always written with its tag, so a serialized payload that
# lacks these two bytes has no ``json_extras`` set at any depth (their presence
# proves nothing: the walk decides then).  tests/unit/test_core_happy_json.py
# checks that every ``json_extras`` has this number.
EXTRAS_TAG: Final = bytes((((1000 << 3) | 2) & 0x7F | 0x80, ((1000 << 3) | 2) >> 7))


@dataclass(frozen=True, slots=True)
class _Plan:
    """Where a message type can hold a ``JsonExtras``: itself, and which fields lead to one."""

    has_extras: bool
    oneofs: tuple[str, ...]  # oneofs with a case that can hold one
    oneof_cases: frozenset[str]  # those cases
    singles: tuple[str, ...]
    repeated: tuple[str, ...]


@cache
def _can_hold(descriptor: Descriptor) -> bool:
    # google.protobuf.Value trees are JSON already: nothing of ours below them.
    if descriptor.full_name.startswith("google.protobuf."):
        return False
    return any(
        field.name == _EXTRAS or (field.message_type is not None and _can_hold(field.message_type))
        for field in descriptor.fields
    )


def _make_plan(descriptor: Any) -> _Plan:  # python or upb Descriptor, by runtime
    leads = [
        field
        for field in descriptor.fields
        if field.name != _EXTRAS
        and field.message_type is not None
        and _can_hold(field.message_type)
    ]
    in_oneof = {
        field.name: field.containing_oneof.name for field in leads if field.containing_oneof
    }
    return _Plan(
        has_extras=_EXTRAS in descriptor.fields_by_name,
        oneofs=tuple(dict.fromkeys(in_oneof.values())),
        oneof_cases=frozenset(in_oneof),
        singles=tuple(
            field.name
            for field in leads
            if field.containing_oneof is None and not field.is_repeated
        ),
        repeated=tuple(field.name for field in leads if field.is_repeated),
    )


# By message class: a dict lookup is several times cheaper than reading DESCRIPTOR.
_PLANS: dict[type[Message], _Plan] = {}


def check_update(payload: Any, kind: str, field: str) -> None:
    """Check the ``json_extras`` of an ``UpdatePayload`` whose event is ``kind``.

    Raises ``JsonTextError``. The caller knows the kind already, so the walk
    starts at the event: this runs for every emit.
    """
    if payload.HasField(_EXTRAS):
        _check_members(payload.json_extras, field)
    if kind != "raw":
        event = getattr(payload.body, kind)
        if _holds_extras(event):  # rarely: the paths are formatted only then
            check_extras(event, f"{field}.body.{kind}")


def check_ephemeral(payload: Any, kind: str, field: str) -> None:
    """Check the ``json_extras`` of an ``EphemeralPayload`` whose event is ``kind``."""
    if kind != "raw":
        event = getattr(payload, kind)
        if _holds_extras(event):
            check_extras(event, f"{field}.{kind}")


def _check_members(extras: Any, field: str) -> None:
    path = f"{field}.{_EXTRAS}.members"
    jsontext.members(((member.key, member.json) for member in extras.members), path)


def _plan_of(message: Message) -> _Plan:
    plan = _PLANS.get(type(message))
    if plan is None:
        plan = _PLANS[type(message)] = _make_plan(message.DESCRIPTOR)
    return plan


def _holds_extras(message: Message) -> bool:
    """Whether a ``JsonExtras`` is set in ``message`` or below (``check_extras``' walk)."""
    plan = _plan_of(message)
    if plan.has_extras and message.HasField(_EXTRAS):
        return True
    for oneof in plan.oneofs:
        case = message.WhichOneof(oneof)
        if case in plan.oneof_cases and _holds_extras(getattr(message, case)):
            return True
    for name in plan.singles:
        if message.HasField(name) and _holds_extras(getattr(message, name)):
            return True
    return any(_holds_extras(item) for name in plan.repeated for item in getattr(message, name))


def check_extras(message: Message, field: str) -> None:
    """Check every ``json_extras`` set in ``message`` or below; raises ``JsonTextError``."""
    plan = _plan_of(message)
    if plan.has_extras and message.HasField(_EXTRAS):
        _check_members(getattr(message, _EXTRAS), field)
    for oneof in plan.oneofs:
        case = message.WhichOneof(oneof)
        if case in plan.oneof_cases:
            check_extras(getattr(message, case), f"{field}.{case}")
    for name in plan.singles:
        if message.HasField(name):
            check_extras(getattr(message, name), f"{field}.{name}")
    for name in plan.repeated:
        for i, item in enumerate(getattr(message, name)):
            check_extras(item, f"{field}.{name}[{i}]")


def check_raw(raw: Any, tag_key: str, field: str) -> None:
    """Check a ``RawHappyEvent`` whose discriminator is ``tag_key``; raises ``JsonTextError``."""
    jsontext.raw_event(
        raw.kind, raw.json, tag_key, kind_field=f"{field}.kind", json_field=f"{field}.json"
    )
