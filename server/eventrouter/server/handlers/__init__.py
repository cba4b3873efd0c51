"""What each call of ``eventrouter.v1.EventRouterService`` means, whatever carries it.

Every protocol the server speaks (grpc.aio, and Connect / gRPC-Web for
browsers) is a thin adapter in ``eventrouter.server.transports`` over these
handlers: it turns its calls into ``CallInfo`` + request messages, writes
the messages a ``SubscribeStream`` yields, and turns ``Refused`` into its own
status.  Nothing here imports grpc or an HTTP library.

    subscribe.py  authenticate, register, stream a connection's queue
    emits.py      Emit / EmitBatch: authorize, validate all, accept
    admin.py      GetConnections / Disconnect
    state.py      what they share (router, broker, credentials, counters)
    messages.py   contract messages and metric labels
    errors.py     Code and Refused
"""

from __future__ import annotations

from collections import Counter

from eventrouter.server.auth import Authenticator
from eventrouter.server.broker.base import Broker
from eventrouter.server.core.queue import CloseReason
from eventrouter.server.core.stats import Histogram
from eventrouter.server.handlers.admin import Admin
from eventrouter.server.handlers.emits import Emits
from eventrouter.server.handlers.errors import Code, Refused
from eventrouter.server.handlers.state import (
    SERVICE_NAME,
    CallInfo,
    HandlerState,
    SecurityStats,
)
from eventrouter.server.handlers.subscribe import SubscribeStream, Subscriptions
from eventrouter.server.security.limits import SecurityLimits


class Handlers:
    """The service's calls over one router and broker, shared by every transport."""

    def __init__(
        self,
        broker: Broker,
        authenticator: Authenticator,
        *,
        limits: SecurityLimits | None = None,
        heartbeat_default_ms: int = 0,
        heartbeat_min_ms: int = 1000,
    ) -> None:
        self.state = state = HandlerState(
            broker,
            authenticator,
            limits or SecurityLimits(),
            heartbeat_default_ms,
            heartbeat_min_ms,
        )
        self.subscriptions = Subscriptions(state)
        self.emits = Emits(state)
        self.admin = Admin(state)

    # What the metrics endpoint and status page read.

    @property
    def security_stats(self) -> SecurityStats:
        return self.state.security_stats

    @property
    def emit_counts(self) -> Counter[tuple[str, str, str]]:
        return self.state.emit_counts

    @property
    def write_latency(self) -> Histogram:
        return self.state.write_latency

    def close_all_streams(self, reason: CloseReason, message: str) -> int:
        """Refuse new streams from now on and end every open one (shutdown)."""
        self.state.accepting = False
        return self.state.router.close_all(reason, message)


__all__ = [
    "SERVICE_NAME",
    "CallInfo",
    "Code",
    "Handlers",
    "Refused",
    "SubscribeStream",
]
