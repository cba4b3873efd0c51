"""Checks on what callers send, each failure naming the offending field.

The router calls these before touching any state, so a rejected request
leaves nothing behind: no half-registered connection, no partial delivery.
"""

from __future__ import annotations

from dataclasses import dataclass

from eventrouter.jsontext import JsonTextError
from eventrouter.server.core import happy_json
from eventrouter.server.core.connections import (
    ClientConnection,
    MachineScopedConnection,
    SessionScopedConnection,
    UserScopedConnection,
)
from eventrouter.server.core.filters import (
    ALL_CONNECTIONS,
    AllInterestedInSession,
    MachineOnly,
    MachineScopedOnly,
    RecipientFilter,
    UserScopedOnly,
)
from eventrouter.v1 import events_pb2, routing_pb2


class RequestError(ValueError):
    """A request the router refuses; ``field`` is the dotted path of the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message

    def under(self, prefix: str) -> RequestError:
        """The same refusal, its field path under ``prefix`` (e.g. ``emits[3].``)."""
        return type(self)(prefix + self.field, self.detail)


class InvalidArgument(RequestError):
    """Malformed or semantically wrong input (gRPC INVALID_ARGUMENT)."""


class IdTooLong(InvalidArgument):
    """An id over the configured length limit (INVALID_ARGUMENT, counted as a limit)."""


class PayloadTooLarge(RequestError):
    """An event larger than the configured maximum (gRPC RESOURCE_EXHAUSTED)."""


@dataclass(frozen=True, slots=True)
class IdRules:
    """Limits on user, session, machine and connection ids."""

    max_length: int = 256

    def check(self, value: str, field: str) -> None:
        if not value:
            raise InvalidArgument(field, "must be non-empty")
        if len(value) > self.max_length:
            raise IdTooLong(field, f"longer than {self.max_length} characters")
        # isprintable() is False for every control, format and separator
        # character except the ASCII space, which is checked on its own.
        if not value.isprintable() or " " in value:
            raise InvalidArgument(field, "must not contain whitespace or control characters")


DEFAULT_ID_RULES = IdRules()


def filter_from_proto(
    message: routing_pb2.RecipientFilter, field: str, ids: IdRules = DEFAULT_ID_RULES
) -> RecipientFilter:
    """The core filter for a protobuf ``RecipientFilter`` (unset = all connections)."""
    kind = message.WhichOneof("filter")
    if kind is None or kind == "all_user_authenticated_connections":
        return ALL_CONNECTIONS
    if kind == "user_scoped_only":
        return UserScopedOnly()
    if kind == "all_interested_in_session":
        ids.check(message.all_interested_in_session.session_id, f"{field}.{kind}.session_id")
        return AllInterestedInSession(message.all_interested_in_session.session_id)
    if kind == "machine_scoped_only":
        ids.check(message.machine_scoped_only.machine_id, f"{field}.{kind}.machine_id")
        return MachineScopedOnly(message.machine_scoped_only.machine_id)
    ids.check(message.machine_only.machine_id, f"{field}.{kind}.machine_id")
    return MachineOnly(message.machine_only.machine_id)


_RELATIONSHIP_VALUES = frozenset(events_pb2.RelationshipStatus.values()) - {
    events_pb2.RELATIONSHIP_STATUS_UNSPECIFIED
}


def validate_update(
    payload: events_pb2.UpdatePayload, field: str, data: bytes | None = None
) -> None:
    """Refuse a malformed update (``data``: it serialized, which spares a walk if known)."""
    if not payload.id:
        raise InvalidArgument(f"{field}.id", "must be non-empty (it is the idempotency key)")
    kind = payload.body.WhichOneof("event")
    if kind is None:
        raise InvalidArgument(f"{field}.body.event", "no update event is set")
    _check_happy_json(payload, kind, field, data)
    if kind == "relationship_updated":
        status = payload.body.relationship_updated.status
        if status not in _RELATIONSHIP_VALUES:
            raise InvalidArgument(
                f"{field}.body.relationship_updated.status",
                f"must be a RelationshipStatus other than UNSPECIFIED (got {status})",
            )


def validate_ephemeral(
    payload: events_pb2.EphemeralPayload, field: str, data: bytes | None = None
) -> None:
    kind = payload.WhichOneof("event")
    if kind is None:
        raise InvalidArgument(f"{field}.event", "no ephemeral event is set")
    _check_happy_json(payload, kind, field, data)
    if kind == "usage":
        for name in ("tokens", "cost"):
            seen: set[str] = set()
            for i, entry in enumerate(getattr(payload.usage, name)):
                if entry.key in seen:
                    raise InvalidArgument(f"{field}.usage.{name}[{i}].key", "duplicate key")
                seen.add(entry.key)


# -- Happy JSON carried as text (RawHappyEvent, JsonExtras): rules in core/happy_json.py --


def _check_happy_json(
    payload: events_pb2.UpdatePayload | events_pb2.EphemeralPayload,
    kind: str,
    field: str,
    data: bytes | None,
) -> None:
    extras = data is None or happy_json.EXTRAS_TAG in data
    try:
        if isinstance(payload, events_pb2.UpdatePayload):
            if kind == "raw":
                happy_json.check_raw(payload.body.raw, "t", f"{field}.body.raw")
            if extras:
                happy_json.check_update(payload, kind, field)
        else:
            if kind == "raw":
                happy_json.check_raw(payload.raw, "type", f"{field}.raw")
            if extras:
                happy_json.check_ephemeral(payload, kind, field)
    except JsonTextError as e:
        raise InvalidArgument(e.field, e.reason) from None


def check_size(size: int, limit: int, field: str) -> None:
    if size > limit:
        raise PayloadTooLarge(field, f"event is {size} bytes, the maximum is {limit}")


def connection_for_scope(
    user_id: str, scope: routing_pb2.ConnectionScope, field: str, ids: IdRules = DEFAULT_ID_RULES
) -> ClientConnection:
    """A new (unregistered) connection of the requested scope."""
    kind = scope.WhichOneof("scope")
    if kind is None:
        raise InvalidArgument(field, "required: set one of user, session, machine")
    if kind == "user":
        return UserScopedConnection(user_id)
    if kind == "session":
        ids.check(scope.session.session_id, f"{field}.session.session_id")
        return SessionScopedConnection(user_id, session_id=scope.session.session_id)
    ids.check(scope.machine.machine_id, f"{field}.machine.machine_id")
    return MachineScopedConnection(user_id, machine_id=scope.machine.machine_id)


def scope_to_proto(connection: ClientConnection) -> routing_pb2.ConnectionScope:
    if isinstance(connection, SessionScopedConnection):
        return routing_pb2.ConnectionScope(
            session=routing_pb2.SessionScope(session_id=connection.session_id)
        )
    if isinstance(connection, MachineScopedConnection):
        return routing_pb2.ConnectionScope(
            machine=routing_pb2.MachineScope(machine_id=connection.machine_id)
        )
    return routing_pb2.ConnectionScope(user=routing_pb2.UserScope())
