"""How deeply a payload nests messages, against what every subscriber can decode.

Protobuf runtimes refuse to decode messages nested past a recursion limit:
100 levels below the top message in C++, Java and upb (Python), so 101 in
all.  A subscriber decodes a payload inside the stream's envelope
(``SubscribeResponse`` > ``StreamEvent`` > ``UpdateDelivery`` > payload), three
levels deeper than the ``EmitRequest`` that carried it in, so a payload the
server accepts could otherwise be one that no subscriber can decode: its
whole stream message would be lost, live and on every resume across it.

Only ``google.protobuf.Value`` / ``Struct`` / ``ListValue`` nest without a
bound in this contract (message content, feed bodies), so only fields that
can lead to them are walked; every other part of a payload has a fixed depth,
computed once per message type.  Counting follows the wire format: every
sub-message is one level, a map entry included (a JSON object level is
three: ``Value`` > ``Struct`` > entry; a JSON list level is two).
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Value

from eventrouter.server.core.validation import InvalidArgument

# Levels a payload may nest, itself counted as one.  The stream adds three,
# and 101 decode everywhere: this leaves 18 levels of margin for envelopes
# the contract may add.  In JSON terms, message content may nest lists about
# 37 deep, or objects about 25 deep.
MAX_PAYLOAD_DEPTH = 80

# Payloads up to this size get the byte-counting bound (see check_depth).
_COUNT_AT_MOST = 16 * 1024

_UNBOUNDED = frozenset(
    {"google.protobuf.Value", "google.protobuf.Struct", "google.protobuf.ListValue"}
)


class _Walk:
    """One field that may lead to unbounded nesting, as the walk reads it."""

    __slots__ = ("entry", "kind", "name", "repeated")

    def __init__(self, fd: FieldDescriptor, message_type: Descriptor) -> None:
        self.name = fd.name
        self.repeated = fd.is_repeated
        is_map = message_type.GetOptions().map_entry
        # A map's values sit one level (the entry) below the field.
        self.entry = 1 if is_map else 0
        sub = message_type.fields_by_name["value"].message_type if is_map else message_type
        name = sub.full_name if sub is not None else ""
        self.kind = name if name in _UNBOUNDED else ""

    def children(self, message: Any) -> list[Any]:
        field = getattr(message, self.name)
        if self.repeated:
            return list(field.values()) if self.entry else list(field)
        return [field]

    def depth(self, child: Any) -> int:
        """Levels from this field's sub-message down (its map entry included)."""
        kind = self.kind
        if kind == "google.protobuf.Value":
            return self.entry + value_depth(child)
        if kind == "google.protobuf.ListValue":
            items = child.values
            return self.entry + (1 + max(map(value_depth, items)) if items else 1)
        if kind == "google.protobuf.Struct":
            values = child.fields.values()
            return self.entry + (2 + max(map(value_depth, values)) if values else 1)
        return self.entry + message_depth(child)


class _Plan:
    """A message type's fixed depth and the fields a walk must visit, by oneof."""

    __slots__ = ("oneofs", "plain", "reach", "static")

    def __init__(self, static: int, reach: int, walks: list[tuple[_Walk, str | None]]) -> None:
        self.static = static
        # The deepest level an unbounded message (Value, Struct, ListValue)
        # can start at; 0: none can occur.
        self.reach = reach
        # Fields outside a oneof are visited when set; inside one, only the set one.
        self.plain = tuple(w for w, oneof in walks if oneof is None)
        self.oneofs: dict[str, dict[str, _Walk]] = {}
        for walk, oneof in walks:
            if oneof is not None:
                self.oneofs.setdefault(oneof, {})[walk.name] = walk

    def set_fields(self, message: Any) -> list[_Walk]:
        found = [w for w in self.plain if w.repeated or message.HasField(w.name)]
        for oneof, walks in self.oneofs.items():
            chosen = message.WhichOneof(oneof)
            if chosen in walks:
                found.append(walks[chosen])
        return found


@functools.cache
def _plan(descriptor: Descriptor) -> _Plan:
    static, reach = 1, 0
    walks: list[tuple[_Walk, str | None]] = []
    for fd in descriptor.fields:
        sub = fd.message_type
        if sub is None:
            continue
        if sub.full_name in _UNBOUNDED:
            unbounded = True
            reach = max(reach, 2)
        else:
            sub_plan = _plan(sub)
            static = max(static, 1 + sub_plan.static)
            unbounded = sub_plan.reach > 0
            if unbounded:
                reach = max(reach, 1 + sub_plan.reach)
        if unbounded:
            oneof = fd.containing_oneof
            walks.append((_Walk(fd, sub), oneof.name if oneof is not None else None))
    return _Plan(static, reach, walks)


def value_depth(value: Value) -> int:
    """Message levels of a ``Value``, itself included."""
    kind = value.WhichOneof("kind")
    if kind == "list_value":
        items = value.list_value.values
        return 2 + max(map(value_depth, items)) if items else 2
    if kind == "struct_value":
        fields = value.struct_value.fields
        return 3 + max(map(value_depth, fields.values())) if fields else 2
    return 1


def message_depth(message: Message) -> int:
    """Message levels of ``message``, itself included."""
    plan = _plan(message.DESCRIPTOR)
    deepest = plan.static
    for walk in plan.set_fields(message):
        for child in walk.children(message):
            deepest = max(deepest, 1 + walk.depth(child))
    return deepest


def _deepest_path(message: Message) -> str:
    """The dotted path of the field under which ``message`` nests deepest."""
    best, path = 0, ""
    for walk in _plan(message.DESCRIPTOR).set_fields(message):
        for child in walk.children(message):
            depth = walk.depth(child)
            if depth > best:
                best, path = depth, walk.name
                if not walk.kind and not walk.entry:
                    below = _deepest_path(child)
                    path = f"{walk.name}.{below}" if below else walk.name
    return path


def check_depth(payload: Message, data: bytes, field: str, limit: int = MAX_PAYLOAD_DEPTH) -> None:
    """Refuse a payload (serialized as ``data``) nested deeper than ``limit`` levels.

    The refusal names the field under which it nests too deep.
    """
    plan = _plan(payload.DESCRIPTOR)
    if plan.reach == 0:
        return
    # A cheap bound first, which nearly every payload meets: each JSON list
    # level in the payload carries a Value.list_value tag byte (0x32, "2") and
    # each object level a Value.struct_value tag byte (0x2a, "*"), so counting
    # those bytes (more may be in strings: counting more only loosens it)
    # bounds the levels below the deepest place a Value can start.  Counting
    # costs time per byte: a large payload (its bulk in strings, not in
    # levels) is walked instead, which costs per Value.
    if len(data) <= _COUNT_AT_MOST:
        bound = plan.reach + 2 + 2 * data.count(b"2") + 3 * data.count(b"*")
        if max(bound, plan.static) <= limit:
            return
    depth = message_depth(payload)
    if depth > limit:
        below = _deepest_path(payload)
        raise InvalidArgument(
            f"{field}.{below}" if below else field,
            f"nested {depth} message levels deep; the maximum is {limit} (with the stream's"
            " envelope, deeper payloads could not be decoded by subscribers)",
        )
