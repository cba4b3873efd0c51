"""eventrouter server: the routing core and the gRPC service around it.

Embed the router in your own process (as Happy Server does)::

    from eventrouter.server import EventRouter, UserScopedConnection

    router = EventRouter()
    conn = UserScopedConnection("user-1")
    router.add_connection("user-1", conn)
    router.emit_update("user-1", payload)

or run it as a service with ``eventrouter serve`` / ``RouterServer``.
"""

from eventrouter.server.app import RouterServer, serve
from eventrouter.server.config import ServerConfig
from eventrouter.server.core.connections import (
    ClientConnection,
    MachineScopedConnection,
    SessionScopedConnection,
    UserScopedConnection,
)
from eventrouter.server.core.filters import (
    AllInterestedInSession,
    AllUserAuthenticatedConnections,
    MachineOnly,
    MachineScopedOnly,
    RecipientFilter,
    UserScopedOnly,
)
from eventrouter.server.core.history import HistoryLimits
from eventrouter.server.core.queue import CloseReason, ConnectionQueue, QueueLimits
from eventrouter.server.core.router import (
    EmitResult,
    EventRouter,
    OpenResult,
    ResumeStatus,
    RouterLimits,
)
from eventrouter.server.core.validation import InvalidArgument, PayloadTooLarge, RequestError

__all__ = [
    "AllInterestedInSession",
    "AllUserAuthenticatedConnections",
    "ClientConnection",
    "CloseReason",
    "ConnectionQueue",
    "EmitResult",
    "EventRouter",
    "HistoryLimits",
    "InvalidArgument",
    "MachineOnly",
    "MachineScopedConnection",
    "MachineScopedOnly",
    "OpenResult",
    "PayloadTooLarge",
    "QueueLimits",
    "RecipientFilter",
    "RequestError",
    "ResumeStatus",
    "RouterLimits",
    "RouterServer",
    "ServerConfig",
    "SessionScopedConnection",
    "UserScopedConnection",
    "UserScopedOnly",
    "serve",
]
