"""What every call shares: the router, the broker, credentials, limits and counters.

``CallInfo`` is what a transport tells a handler about one call: its
metadata (``authorization``, ...) and its TLS peer.  Nothing here knows gRPC
or HTTP.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from eventrouter.server.auth import Authenticator, AuthError, Metadata, PeerAuth, Subscriber
from eventrouter.server.broker.base import Broker
from eventrouter.server.core.stats import Histogram
from eventrouter.server.handlers.errors import Refused, auth_refused
from eventrouter.server.security.limits import SecurityLimits

SERVICE_NAME = "eventrouter.v1.EventRouterService"


@dataclass(frozen=True, slots=True)
class CallInfo:
    """One call as its transport saw it (metadata keys are lower case)."""

    metadata: Metadata = ()
    # TLS peer properties (grpc's auth_context(): "x509_common_name", ...).
    peer: PeerAuth = field(default_factory=dict)


@dataclass(slots=True)
class SecurityStats:
    """Rejections by reason, for the metrics endpoint."""

    auth_failures: Counter[str] = field(default_factory=Counter)
    limit_rejections: Counter[str] = field(default_factory=Counter)


class StreamWriter:
    """A Subscribe stream being written: its task, its credential, whether a write is pending."""

    __slots__ = ("broker_told", "subscriber", "task", "writing")

    def __init__(self, task: asyncio.Task[object] | None, subscriber: Subscriber) -> None:
        self.task = task
        self.subscriber = subscriber
        # A message handed to the transport and not yet taken by it.
        self.writing = False
        # The broker was told the connection closed (presence, watches).
        self.broker_told = False


class HandlerState:
    """The state behind every call, shared by the handlers of every protocol."""

    def __init__(
        self,
        broker: Broker,
        authenticator: Authenticator,
        limits: SecurityLimits,
        heartbeat_default_ms: int,
        heartbeat_min_ms: int,
    ) -> None:
        self.broker = broker
        self.router = broker.router
        self.auth = authenticator
        self.limits = limits
        self.heartbeat_default_ms = heartbeat_default_ms
        self.heartbeat_min_ms = heartbeat_min_ms
        self.accepting = True
        self.security_stats = SecurityStats()
        # Emit calls by (payload kind, filter kind, outcome) and the age of the
        # oldest event in each stream write; read by the metrics collector.
        self.emit_counts: Counter[tuple[str, str, str]] = Counter()
        self.write_latency = Histogram()
        # Open streams by connection id, and Subscribes not yet past their first write.
        self.writers: dict[str, StreamWriter] = {}
        self.handshakes = 0
        # The broker applies the per-user stream and emit rate limits across nodes.
        broker.configure_limits(limits)

    def service_identity(self, call: CallInfo) -> str:
        """The calling service, or Refused (UNAUTHENTICATED / PERMISSION_DENIED)."""
        try:
            return self.auth.service(call.metadata, call.peer)
        except AuthError as e:
            self.security_stats.auth_failures[e.reason] += 1
            raise auth_refused(e) from None


__all__ = [
    "SERVICE_NAME",
    "CallInfo",
    "HandlerState",
    "Refused",
    "SecurityStats",
    "StreamWriter",
]
