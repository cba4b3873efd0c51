"""What GetConnections and Disconnect mean (service callers only).

A Disconnect ends the selected streams on this node, then is broadcast to
the other nodes through the broker, which call ``disconnect_locally`` for it.
A revocation (``revoke`` with ``token_id``) lasts until the later of
``revocation_ttl_s`` from now and the token's own expiry (plus the verifier's
leeway) when a node holds a stream of it; the broker keeps it that long for
nodes that start later (``store_revocation``), each node that knows a later
expiry extending it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from eventrouter.server.broker.base import BrokerUnavailable
from eventrouter.server.core.connections import ClientConnection, SessionScopedConnection
from eventrouter.server.core.filters import MachineOnly
from eventrouter.server.core.queue import CloseReason
from eventrouter.server.core.validation import IdTooLong, InvalidArgument, RequestError
from eventrouter.server.handlers.errors import Code, Refused, request_refused
from eventrouter.server.handlers.messages import scope_from_label
from eventrouter.server.handlers.state import CallInfo, HandlerState
from eventrouter.server.security.tokens import LEEWAY_S
from eventrouter.v1 import router_service_pb2 as pb

log = logging.getLogger("eventrouter.server")


class Admin:
    """GetConnections and Disconnect."""

    def __init__(self, state: HandlerState) -> None:
        self._state = state
        state.broker.disconnect_locally = self.disconnect_locally
        state.broker.revoke_locally = state.auth.revoke
        self._storing: set[asyncio.Task[Any]] = set()

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
        revokes = self._revokes_token(request)
        # (Before the streams end: their credentials tell the token's expiry.)
        until = self._revocation_until(request.token_id, targets) if revokes else 0.0
        ended = self.disconnect_locally(request, targets)
        try:
            if revokes:
                # Kept first, broadcast second: a node starting meanwhile either
                # reads it from the broker or is subscribed in time to hear it.
                await state.broker.store_revocation(request.token_id, until)
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
        broadcast = targets is None
        if targets is None:
            try:
                targets = self._targets(request)
            except RequestError:
                return 0
        if self._revokes_token(request):
            until = self._revocation_until(request.token_id, targets)
            state.auth.revoke(request.token_id, until)
            if broadcast and until > time.time() + state.limits.revocation_ttl_s + 1:
                # This node holds the token's streams and knows it outlives what
                # the origin stored: extend the stored revocation.
                self._store_later(request.token_id, until)
        reason = CloseReason.REVOKED if request.revoke else CloseReason.DISCONNECTED
        message = "disconnected by the service" + (f": {request.reason}" if request.reason else "")
        for connection in targets:
            state.router.close_connection(connection, reason, message)
        return len(targets)

    @staticmethod
    def _revokes_token(request: pb.DisconnectRequest) -> bool:
        return request.revoke and request.WhichOneof("selector") == "token_id"

    def _revocation_until(self, token_id: str, targets: list[ClientConnection]) -> float:
        """``revocation_ttl_s`` from now, or the token's expiry if a stream shows it later."""
        state = self._state
        until = time.time() + state.limits.revocation_ttl_s
        for connection in targets:
            writer = state.writers.get(connection.connection_id)
            if writer is None or writer.subscriber.token_id != token_id:
                continue
            if writer.subscriber.expires_at is not None:
                until = max(until, writer.subscriber.expires_at + LEEWAY_S)
        return until

    def _store_later(self, token_id: str, until: float) -> None:
        async def store() -> None:
            try:
                await self._state.broker.store_revocation(token_id, until)
            except BrokerUnavailable as e:
                log.warning("could not extend the revocation of a token: %s", e)

        task = asyncio.get_running_loop().create_task(store())
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)

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
