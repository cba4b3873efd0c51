"""The broker interface the gRPC service talks to.

A broker accepts emits (numbering updates in the user's history and
remembering idempotency keys), carries them to every node that holds a
connection of the user, and answers resume and presence questions.  Local
delivery is always the node's ``EventRouter``: a broker calls its
``deliver_*`` methods, never writes to a connection itself.

Where a guarantee stops: an emit is acknowledged only once the broker has
accepted it (for Redis: written to the user's history and published), so an
acknowledged update survives the crash of any node; delivery to a node that
is partitioned from the broker resumes through history, never silently.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from eventrouter.server.core.connections import ClientConnection
from eventrouter.server.core.filters import RecipientFilter
from eventrouter.server.core.router import EmitResult, EventRouter, OpenResult
from eventrouter.server.security.limits import RateLimiter, SecurityLimits
from eventrouter.v1 import events_pb2, router_service_pb2


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    """A connection as presence reports it, possibly held by another node."""

    connection_id: str
    user_id: str
    # "user", "session:<id>" or "machine:<id>".
    scope: str
    opened_at_ms: int
    node_id: str


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A live node as presence reports it: its id and the streams it holds."""

    node_id: str
    streams: int


class EmitItem(NamedTuple):
    """One validated emit: an update, or an ephemeral with its optional idempotency key.

    A tuple rather than a frozen dataclass: one is made per emit, and a frozen
    dataclass's ``__init__`` showed in the fan-out profile.
    """

    user_id: str
    payload: events_pb2.UpdatePayload | events_pb2.EphemeralPayload
    recipient_filter: RecipientFilter
    skip_connection_id: str | None
    idempotency_key: str | None = None
    # The payload serialized (validation did it already); b"": not given.
    data: bytes = b""


class BrokerUnavailable(Exception):
    """The broker cannot accept or answer now; the caller may retry (gRPC UNAVAILABLE)."""


class LimitReached(Exception):
    """A limit counted across nodes refused the call (RESOURCE_EXHAUSTED)."""


class Broker(abc.ABC):
    """Accepts emits, carries them between nodes, keeps history and presence."""

    # Set by the service: ends this node's streams a Disconnect selects (revoking
    # its token when asked) and returns how many.  A broker spanning nodes calls it
    # for the Disconnects other nodes broadcast.
    disconnect_locally: Callable[[router_service_pb2.DisconnectRequest], int] | None = None
    # Set by the service: refuse a token id until a Unix time.  A broker that
    # keeps revocations calls it for those it finds at start.
    revoke_locally: Callable[[str, float], None] | None = None

    def __init__(self, router: EventRouter) -> None:
        self.router = router
        self.configure_limits(SecurityLimits())

    def configure_limits(self, limits: SecurityLimits) -> None:
        """The service's limits; ``allow_emits`` and cluster brokers' ``open`` apply them."""
        self.security_limits = limits
        self._emit_rate = RateLimiter(limits.emit_rate_per_service, limits.emit_burst_per_service)

    async def allow_emits(self, service: str, cost: int) -> bool:
        """Take ``cost`` events from ``service``'s emit rate budget; False if short.

        One node: a token bucket in this process.  A broker spanning nodes
        counts across them (raising BrokerUnavailable when it cannot check).
        """
        return self._emit_rate.allow(service, cost)

    async def store_revocation(self, token_id: str, until: float) -> None:
        """Keep a revocation until ``until`` (Unix time) for nodes that start later.

        One node: nothing to do.  Raises BrokerUnavailable when it could not.
        """
        return None

    def live_nodes(self) -> list[NodeRecord]:
        """Every live node of the cluster as last seen; empty = this node alone."""
        return []

    async def start(self) -> None:
        """Connect; called once before serving."""
        return None

    async def close(self) -> None:
        """Disconnect; called once on shutdown."""
        return None

    def healthy(self) -> bool:
        """False while the broker cannot accept emits (health turns NOT_SERVING)."""
        return True

    @abc.abstractmethod
    async def emit_update(
        self,
        user_id: str,
        payload: events_pb2.UpdatePayload,
        recipient_filter: RecipientFilter,
        skip_connection_id: str | None,
    ) -> EmitResult:
        """Accept a validated update: number it, keep it, deliver it everywhere."""

    @abc.abstractmethod
    async def emit_ephemeral(
        self,
        user_id: str,
        payload: events_pb2.EphemeralPayload,
        recipient_filter: RecipientFilter,
        skip_connection_id: str | None,
        idempotency_key: str | None,
    ) -> EmitResult:
        """Deliver a validated ephemeral event to the connections open now."""

    async def emit_many(self, items: Sequence[EmitItem]) -> list[EmitResult]:
        """Accept emits in order (a broker may pipeline them); one result each."""
        return [await self._emit_one(item) for item in items]

    async def _emit_one(self, item: EmitItem) -> EmitResult:
        if isinstance(item.payload, events_pb2.UpdatePayload):
            return await self.emit_update(
                item.user_id, item.payload, item.recipient_filter, item.skip_connection_id
            )
        return await self.emit_ephemeral(
            item.user_id,
            item.payload,
            item.recipient_filter,
            item.skip_connection_id,
            item.idempotency_key,
        )

    @abc.abstractmethod
    async def open(
        self, connection: ClientConnection, resume_from: tuple[int, str] | None
    ) -> OpenResult:
        """Register a local connection, replaying the gap after ``resume_from`` first.

        A broker spanning nodes also counts the user's streams on every node
        against ``max_streams_per_user`` and raises LimitReached past it.
        """

    @abc.abstractmethod
    def closed(self, connection: ClientConnection) -> None:
        """A local connection ended (it is already out of the registry); must not block."""

    @abc.abstractmethod
    async def connections(self, user_id: str) -> list[ConnectionRecord]:
        """The user's open connections on every node, oldest first."""

    async def broadcast_disconnect(self, request: router_service_pb2.DisconnectRequest) -> None:
        """Have every other node apply a Disconnect this node already applied (one node: no-op).

        Raises BrokerUnavailable when it could not be sent: the caller should
        report UNAVAILABLE, so the service retries (Disconnect is idempotent).
        """
        return None


def scope_label(connection: ClientConnection) -> str:
    session_id = getattr(connection, "session_id", None)
    if session_id is not None:
        return f"session:{session_id}"
    machine_id = getattr(connection, "machine_id", None)
    if machine_id is not None:
        return f"machine:{machine_id}"
    return "user"
