"""What GetConnections and Disconnect mean (service callers only).

A Disconnect ends the selected streams on this node, then is broadcast to
the other nodes through the broker, which call ``disconnect_locally`` for it.
"""

from __future__ import annotations

import logging

from eventrouter.server.broker.base import BrokerUnavailable
from eventrouter.server.core.connections import ClientConnection, SessionScopedConnection
from eventrouter.server.core.filters import MachineOnly
from eventrouter.server.core.queue import CloseReason
from eventrouter.server.core.validation import IdTooLong, InvalidArgument, RequestError
from eventrouter.server.handlers.errors import Code, Refused, request_refused
from eventrouter.server.handlers.messages import scope_from_label
from eventrouter.server.handlers.state import CallInfo, HandlerState
from eventrouter.v1 import router_service_pb2 as pb

log = logging.getLogger("eventrouter.server")


class Admin:
    """GetConnections and Disconnect."""

    def __init__(self, state: HandlerState) -> None:
        self._state = state
        state.broker.disconnect_locally = self.disconnect_locally

    async def get_connections(
        self, request: pb.GetConnectionsRequest, call: CallInfo
    ) -> pb.GetConnectionsResponse:
        state = self._state
        state.service_identity(call)
        try:
            state.router.limits.ids.check(request.user_id, "user_id")
        except RequestError as e:
            raise self._refused(e) from None
        try:
            records = await state.broker.connections(request.user_id)
        except BrokerUnavailable as e:
            raise Refused(Code.UNAVAILABLE, f"broker unavailable: {e}") from None
        return pb.GetConnectionsResponse(
            connections=[
                pb.ConnectionInfo(
                    connection_id=r.connection_id,
                    scope=scope_from_label(r.scope),
                    opened_at_ms=r.opened_at_ms,
                    node_id=r.node_id,
                )
                for r in records
            ]
        )

    async def disconnect(
        self, request: pb.DisconnectRequest, call: CallInfo
    ) -> pb.DisconnectResponse:
        state = self._state
        service = state.service_identity(call)
        try:
            targets = self._targets(request)
        except RequestError as e:
            raise self._refused(e) from None
        ended = self.disconnect_locally(request, targets)
        try:
            # Other nodes apply it too (a no-op for a single node).
            await state.broker.broadcast_disconnect(request)
        except BrokerUnavailable as e:
            raise Refused(Code.UNAVAILABLE, f"broker unavailable: {e}") from None
        log.info(
            "disconnect by %s: %s ended %d streams on this node",
            service,
            request.WhichOneof("selector"),
            ended,
        )
        return pb.DisconnectResponse(disconnected=ended)

    def disconnect_locally(
        self, request: pb.DisconnectRequest, targets: list[ClientConnection] | None = None
    ) -> int:
        """End this node's streams the request selects; the broker calls it for other nodes'."""
        state = self._state
        if targets is None:
            try:
                targets = self._targets(request)
            except RequestError:
                return 0
        if request.revoke and request.WhichOneof("selector") == "token_id":
            state.auth.revoke(request.token_id)
        reason = CloseReason.REVOKED if request.revoke else CloseReason.DISCONNECTED
        message = "disconnected by the service" + (f": {request.reason}" if request.reason else "")
        for connection in targets:
            state.router.close_connection(connection, reason, message)
        return len(targets)

    def _refused(self, error: RequestError) -> Refused:
        if isinstance(error, IdTooLong):
            self._state.security_stats.limit_rejections["id_length"] += 1
        return request_refused(error)

    def _targets(self, request: pb.DisconnectRequest) -> list[ClientConnection]:
        state = self._state
        ids = state.router.limits.ids
        registry = state.router.registry
        match request.WhichOneof("selector"):
            case "user_id":
                ids.check(request.user_id, "user_id")
                return registry.of_user(request.user_id)
            case "connection_id":
                ids.check(request.connection_id, "connection_id")
                found = registry.get(request.connection_id)
                return [found] if found is not None else []
            case "machine":
                ids.check(request.machine.user_id, "machine.user_id")
                ids.check(request.machine.machine_id, "machine.machine_id")
                return registry.select(
                    request.machine.user_id, MachineOnly(request.machine.machine_id)
                )
            case "session":
                ids.check(request.session.user_id, "session.user_id")
                ids.check(request.session.session_id, "session.session_id")
                return [
                    c
                    for c in registry.of_user(request.session.user_id)
                    if isinstance(c, SessionScopedConnection)
                    and c.session_id == request.session.session_id
                ]
            case "token_id":
                ids.check(request.token_id, "token_id")
                return [
                    connection
                    for connection_id, writer in list(state.writers.items())
                    if writer.subscriber.token_id == request.token_id
                    and (connection := registry.get(connection_id)) is not None
                ]
        raise InvalidArgument(
            "selector", "required: set user_id, connection_id, machine, session or token_id"
        )
