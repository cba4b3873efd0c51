"""Recipient filters and connection scopes, one small constructor each.

They return the generated protobuf messages, so the result can be passed to
``emit_*(recipient_filter=...)`` / ``subscribe(scope)`` or set on a raw
``EmitRequest``. The routing rule they select is the table in
``protos/eventrouter/v1/routing.proto``:

>>> all_interested_in_session("s1").WhichOneof("filter")
'all_interested_in_session'
"""

from __future__ import annotations

from eventrouter.v1 import routing_pb2 as rt

__all__ = [
    "all_interested_in_session",
    "all_user_authenticated_connections",
    "machine_only",
    "machine_scope",
    "machine_scoped_only",
    "session_scope",
    "user_scope",
    "user_scoped_only",
]


def all_user_authenticated_connections() -> rt.RecipientFilter:
    """Every connection of the user, whatever its scope (also what an unset filter means)."""
    return rt.RecipientFilter(
        all_user_authenticated_connections=rt.AllUserAuthenticatedConnections()
    )


def user_scoped_only() -> rt.RecipientFilter:
    """Only the user's user-scoped connections (the apps)."""
    return rt.RecipientFilter(user_scoped_only=rt.UserScopedOnly())


def all_interested_in_session(session_id: str) -> rt.RecipientFilter:
    """User-scoped connections plus the session-scoped connections of ``session_id``."""
    return rt.RecipientFilter(
        all_interested_in_session=rt.AllInterestedInSession(session_id=session_id)
    )


def machine_scoped_only(machine_id: str) -> rt.RecipientFilter:
    """User-scoped connections plus the machine-scoped connections of ``machine_id``."""
    return rt.RecipientFilter(machine_scoped_only=rt.MachineScopedOnly(machine_id=machine_id))


def machine_only(machine_id: str) -> rt.RecipientFilter:
    """Only the machine-scoped connections of ``machine_id`` (the apps do not see it)."""
    return rt.RecipientFilter(machine_only=rt.MachineOnly(machine_id=machine_id))


def user_scope() -> rt.ConnectionScope:
    """Scope of one of the user's apps: sees everything routed to the apps."""
    return rt.ConnectionScope(user=rt.UserScope())


def session_scope(session_id: str) -> rt.ConnectionScope:
    """Scope of a client watching one coding session."""
    return rt.ConnectionScope(session=rt.SessionScope(session_id=session_id))


def machine_scope(machine_id: str) -> rt.ConnectionScope:
    """Scope of the daemon of one of the user's machines."""
    return rt.ConnectionScope(machine=rt.MachineScope(machine_id=machine_id))
