"""The gRPC edge: turns RPCs into ``EventRouter`` calls and queues into writes.

The servicer holds no routing logic.  Each Subscribe owns one connection and
is its only writer: it waits on the connection's queue and writes everything
pending as one ``SubscribeResponse`` (the queued frames joined, as bytes, so
nothing is serialized per recipient).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from eventrouter.server.auth import AuthError, Authenticator
from eventrouter.server.core import wire
from eventrouter.server.core.connections import ClientConnection
from eventrouter.server.core.queue import CloseReason, ConnectionQueue
from eventrouter.server.core.router import EmitResult, EventRouter, OpenResult, ResumeStatus
from eventrouter.server.core.validation import (
    InvalidArgument,
    PayloadTooLarge,
    RequestError,
    connection_for_scope,
    scope_to_proto,
)
from eventrouter.v1 import router_service_pb2 as pb

log = logging.getLogger("eventrouter.server")

SERVICE_NAME = "eventrouter.v1.EventRouterService"

_CLOSE_STATUS = {
    CloseReason.TOO_SLOW: grpc.StatusCode.RESOURCE_EXHAUSTED,
    CloseReason.SHUTDOWN: grpc.StatusCode.UNAVAILABLE,
    CloseReason.DISCONNECTED: grpc.StatusCode.PERMISSION_DENIED,
}

_RESUME_STATUS = {
    ResumeStatus.NOT_REQUESTED: pb.RESUME_STATUS_NOT_REQUESTED,
    ResumeStatus.RESUMED: pb.RESUME_STATUS_RESUMED,
    ResumeStatus.FAILED: pb.RESUME_STATUS_FAILED,
}


def _resume_failure(result: OpenResult) -> pb.ResumeFailure.ValueType:
    if result.failure is None:
        return pb.RESUME_FAILURE_UNSPECIFIED
    return pb.ResumeFailure.Value("RESUME_FAILURE_" + result.failure.name)


class _Writer:
    """A Subscribe call's task and whether it is blocked handing a message to gRPC."""

    __slots__ = ("task", "writing")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.writing = False


class EventRouterService:
    """Implements eventrouter.v1.EventRouterService over an ``EventRouter``."""

    def __init__(
        self,
        router: EventRouter,
        authenticator: Authenticator,
        *,
        heartbeat_default_ms: int = 0,
        heartbeat_min_ms: int = 1000,
        on_insecure_stream: Callable[[], None] | None = None,
    ) -> None:
        self.router = router
        self.auth = authenticator
        self.heartbeat_default_ms = heartbeat_default_ms
        self.heartbeat_min_ms = heartbeat_min_ms
        self.accepting = True
        self._writers: dict[str, _Writer] = {}
        self._on_insecure_stream = on_insecure_stream
        router.on_connection_closed = self._interrupt_blocked_writer

    # -- Subscribe -------------------------------------------------------

    async def subscribe(self, request: pb.SubscribeRequest, context: Any) -> None:
        if not self.accepting:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "server is shutting down")
        try:
            user_id = self.auth.subscriber(context.invocation_metadata())
        except AuthError as e:
            await _abort_auth(context, e)
        if self._on_insecure_stream is not None:
            self._on_insecure_stream()
        try:
            connection = connection_for_scope(
                user_id, request.scope, "scope", self.router.limits.ids
            )
            resume = (
                (request.resume_from.offset, request.resume_from.epoch)
                if request.HasField("resume_from")
                else None
            )
            opened = self.router.add_connection(user_id, connection, resume)
        except RequestError as e:
            await _abort_request(context, e)
        writer = self._writers[connection.connection_id] = _Writer(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await self._stream(request, context, connection, opened, writer)
        finally:
            del self._writers[connection.connection_id]
            self.router.remove_connection(user_id, connection)

    async def _stream(
        self,
        request: pb.SubscribeRequest,
        context: Any,
        connection: ClientConnection,
        opened: OpenResult,
        writer: _Writer,
    ) -> None:
        queue = connection.queue
        assert queue is not None
        heartbeat_ms = self._heartbeat_ms(request.heartbeat_interval_ms)
        first = wire.event_frame(
            pb.StreamEvent(opened=self._opened(connection, opened, heartbeat_ms)).SerializeToString()
        )
        try:
            await self._write(context, writer, first)
            while True:
                if queue.closure is not None:
                    break
                if not queue.has_pending():
                    if heartbeat_ms:
                        try:
                            async with asyncio.timeout(heartbeat_ms / 1000):
                                await queue.wait()
                        except TimeoutError:
                            await self._write(context, writer, _heartbeat_frame())
                            continue
                    else:
                        await queue.wait()
                    if queue.closure is not None:
                        break
                await self._write(context, writer, b"".join(queue.drain()))
        except asyncio.CancelledError:
            # Interrupted while blocked in a write because the queue closed
            # (too slow, shutdown); otherwise the call itself went away.
            if queue.closure is None:
                raise
        closure = queue.closure
        assert closure is not None
        await context.abort(_CLOSE_STATUS[closure.reason], closure.message)

    @staticmethod
    async def _write(context: Any, writer: _Writer, data: bytes) -> None:
        writer.writing = True
        try:
            await context.write(data)
        finally:
            writer.writing = False

    def _interrupt_blocked_writer(self, connection: ClientConnection) -> None:
        # A writer waiting on its queue wakes up by itself when the queue
        # closes; one blocked handing a message to a peer that stopped reading
        # would wait forever, so cancel it and let it report the closure.
        writer = self._writers.get(connection.connection_id)
        if writer is not None and writer.writing:
            writer.task.cancel()

    def _heartbeat_ms(self, requested: int) -> int:
        value = requested or self.heartbeat_default_ms
        return max(value, self.heartbeat_min_ms) if value else 0

    def _opened(
        self, connection: ClientConnection, opened: OpenResult, heartbeat_ms: int
    ) -> pb.ConnectionOpened:
        return pb.ConnectionOpened(
            connection_id=connection.connection_id,
            user_id=connection.user_id,
            scope=scope_to_proto(connection),
            opened_at_ms=connection.opened_at_ms,
            resume=pb.ResumeResult(
                status=_RESUME_STATUS[opened.status],
                failure=_resume_failure(opened),
                replayed=opened.replayed,
            ),
            position=pb.StreamPosition(offset=opened.offset, epoch=opened.epoch),
            heartbeat_interval_ms=heartbeat_ms,
            node_id=self.router.node_id,
        )

    # -- Emit ------------------------------------------------------------

    async def emit(self, request: pb.EmitRequest, context: Any) -> pb.EmitResponse:
        await self._authorize_service(context)
        try:
            return _emit_response(self._apply(request, ""))
        except RequestError as e:
            await _abort_request(context, e)
            raise  # unreachable: abort raises

    async def emit_batch(self, request: pb.EmitBatchRequest, context: Any) -> pb.EmitBatchResponse:
        await self._authorize_service(context)
        try:
            # Validate everything first: a bad emit rejects the whole batch
            # before any of it is delivered.
            for i, emit in enumerate(request.emits):
                self._check(emit, f"emits[{i}].")
            results = [self._apply(emit, "") for emit in request.emits]
        except RequestError as e:
            await _abort_request(context, e)
        return pb.EmitBatchResponse(results=[_emit_response(r) for r in results])

    def _check(self, request: pb.EmitRequest, field: str) -> None:
        kind = request.WhichOneof("payload")
        if kind == "update":
            self.router.check_update(request.user_id, request.update, request.recipient_filter, field)
        elif kind == "ephemeral":
            self.router.check_ephemeral(
                request.user_id, request.ephemeral, request.recipient_filter, field
            )
        else:
            self.router.limits.ids.check(request.user_id, f"{field}user_id")
            raise InvalidArgument(f"{field}payload", "required: set update or ephemeral")

    def _apply(self, request: pb.EmitRequest, field: str) -> EmitResult:
        kind = request.WhichOneof("payload")
        recipient_filter = (
            request.recipient_filter if request.HasField("recipient_filter") else None
        )
        skip = request.skip_connection_id or None
        if kind == "update":
            return self.router.emit_update(request.user_id, request.update, recipient_filter, skip)
        if kind == "ephemeral":
            return self.router.emit_ephemeral(
                request.user_id,
                request.ephemeral,
                recipient_filter,
                skip,
                idempotency_key=request.idempotency_key or None,
            )
        self._check(request, field)
        raise AssertionError("unreachable")

    # -- GetConnections --------------------------------------------------

    async def get_connections(
        self, request: pb.GetConnectionsRequest, context: Any
    ) -> pb.GetConnectionsResponse:
        await self._authorize_service(context)
        try:
            self.router.limits.ids.check(request.user_id, "user_id")
        except RequestError as e:
            await _abort_request(context, e)
        return pb.GetConnectionsResponse(
            connections=[
                pb.ConnectionInfo(
                    connection_id=c.connection_id,
                    scope=scope_to_proto(c),
                    opened_at_ms=c.opened_at_ms,
                    node_id=self.router.node_id,
                )
                for c in self.router.get_connections(request.user_id)
            ]
        )

    async def _authorize_service(self, context: Any) -> None:
        try:
            self.auth.service(context.invocation_metadata())
        except AuthError as e:
            await _abort_auth(context, e)

    # -- wiring ----------------------------------------------------------

    def generic_handler(self) -> grpc.GenericRpcHandler:
        """Method handlers; Subscribe's responses are pre-encoded bytes (no serializer)."""
        handlers = {
            "Subscribe": grpc.unary_stream_rpc_method_handler(
                self.subscribe,
                request_deserializer=pb.SubscribeRequest.FromString,
                response_serializer=None,
            ),
            "Emit": grpc.unary_unary_rpc_method_handler(
                self.emit,
                request_deserializer=pb.EmitRequest.FromString,
                response_serializer=pb.EmitResponse.SerializeToString,
            ),
            "EmitBatch": grpc.unary_unary_rpc_method_handler(
                self.emit_batch,
                request_deserializer=pb.EmitBatchRequest.FromString,
                response_serializer=pb.EmitBatchResponse.SerializeToString,
            ),
            "GetConnections": grpc.unary_unary_rpc_method_handler(
                self.get_connections,
                request_deserializer=pb.GetConnectionsRequest.FromString,
                response_serializer=pb.GetConnectionsResponse.SerializeToString,
            ),
        }
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

    def close_all_streams(self, reason: CloseReason, message: str) -> int:
        self.accepting = False
        return self.router.close_all(reason, message)


def _emit_response(result: EmitResult) -> pb.EmitResponse:
    response = pb.EmitResponse(reached=result.reached, duplicate=result.duplicate)
    if result.offset:
        response.position.offset = result.offset
        response.position.epoch = result.epoch
    return response


def _heartbeat_frame() -> bytes:
    event = pb.StreamEvent(heartbeat=pb.Heartbeat(server_time_ms=time.time_ns() // 1_000_000))
    return wire.event_frame(event.SerializeToString())


async def _abort_request(context: Any, error: RequestError) -> None:
    code = (
        grpc.StatusCode.RESOURCE_EXHAUSTED
        if isinstance(error, PayloadTooLarge)
        else grpc.StatusCode.INVALID_ARGUMENT
    )
    await context.abort(code, str(error))


async def _abort_auth(context: Any, error: AuthError) -> None:
    code = grpc.StatusCode.PERMISSION_DENIED if error.permission else grpc.StatusCode.UNAUTHENTICATED
    await context.abort(code, error.message)


__all__ = ["SERVICE_NAME", "ConnectionQueue", "EventRouterService"]
