"""The three kinds of connection a user can hold, as small typed objects.

They mirror Happy's ``UserScopedConnection``, ``SessionScopedConnection`` and
``MachineScopedConnection``; where Happy's hold a Socket.IO socket, ours hold
the bounded queue their events are written to.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from eventrouter.server.core.queue import ConnectionQueue


def new_connection_id() -> str:
    """A random, unguessable connection id (also used as the skip-sender key)."""
    return "c_" + secrets.token_hex(8)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(eq=False, slots=True)
class _ConnectionBase:
    user_id: str
    connection_id: str = field(default_factory=new_connection_id)
    opened_at_ms: int = field(default_factory=_now_ms)
    # The router attaches a queue sized by its limits when none is given.
    queue: ConnectionQueue | None = field(default=None, repr=False)
    # On resume, the id this client held before: an update that skipped it
    # (the client's own emit) is not replayed to this connection either.
    previous_connection_id: str | None = field(default=None, repr=False)
    # Cluster: registered on this node, but the broker has not yet seen the
    # moment it opened in the user's message order; ephemerals emitted before
    # that moment must not reach it (see broker/redis.py).
    opening: bool = field(default=False, repr=False)


@dataclass(eq=False, slots=True)
class UserScopedConnection(_ConnectionBase):
    """One of the user's apps: sees everything routed to the apps."""


@dataclass(eq=False, slots=True, kw_only=True)
class SessionScopedConnection(_ConnectionBase):
    """A client watching one coding session."""

    session_id: str


@dataclass(eq=False, slots=True, kw_only=True)
class MachineScopedConnection(_ConnectionBase):
    """The daemon of one of the user's machines."""

    machine_id: str


ClientConnection = UserScopedConnection | SessionScopedConnection | MachineScopedConnection
