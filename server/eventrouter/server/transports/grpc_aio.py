"""The grpc.aio adapter: gRPC calls in, ``Handlers`` calls, gRPC statuses out.

All behaviour lives in ``eventrouter.server.handlers``; this module only
translates: request bytes into messages (a request that does not parse is
answered INVALID_ARGUMENT here, instead of grpc's UNKNOWN plus a traceback
per call, which would let anyone flood the log), metadata and the TLS peer
into ``CallInfo``, ``Refused`` into ``context.abort``, and a
``SubscribeStream``'s messages into ``context.write`` (pre-encoded bytes:
Subscribe has no response serializer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from eventrouter.server.handlers import SERVICE_NAME, CallInfo, Code, Handlers, Refused
from eventrouter.server.handlers.messages import log_context
from eventrouter.v1 import router_service_pb2 as pb

log = logging.getLogger("eventrouter.server")

STATUS = {
    Code.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Code.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Code.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Code.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Code.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Code.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    Code.INTERNAL: grpc.StatusCode.INTERNAL,
}

_NOT_VALID_SUBSCRIBE = "request: not a valid eventrouter.v1.SubscribeRequest"

_Request = TypeVar("_Request", bound=Message)
_Response = TypeVar("_Response", bound=Message)


def call_info(context: Any) -> CallInfo:
    return CallInfo(context.invocation_metadata(), context.auth_context())


async def _abort(context: Any, refusal: Refused) -> None:
    await context.abort(STATUS[refusal.code], refusal.message)


def _lenient_parser(kind: type[Message]) -> Callable[[bytes], Message | None]:
    """``kind.FromString`` that answers None instead of raising on bad bytes."""

    def parse(data: bytes) -> Message | None:
        try:
            return kind.FromString(data)
        except DecodeError:
            return None

    return parse


def _unary(
    handler: Callable[[_Request, CallInfo], Awaitable[_Response]], kind: type[_Request]
) -> Callable[[_Request | None, Any], Awaitable[_Response | None]]:
    name = kind.DESCRIPTOR.full_name

    async def handle(request: _Request | None, context: Any) -> _Response | None:
        if request is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request: not a valid {name}")
            return None
        try:
            return await handler(request, call_info(context))
        except Refused as refusal:
            await _abort(context, refusal)
            return None

    return handle


class GrpcAdapter:
    """``eventrouter.v1.EventRouterService`` for a ``grpc.aio`` server."""

    def __init__(self, handlers: Handlers) -> None:
        self.handlers = handlers

    async def subscribe(self, request: pb.SubscribeRequest | None, context: Any) -> None:
        if request is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "request: not a valid eventrouter.v1.SubscribeRequest",
            )
            return
        try:
            stream = await self.handlers.subscriptions.open(request, call_info(context))
        except Refused as refusal:
            await _abort(context, refusal)
            return
        try:
            async with contextlib.aclosing(stream.messages()) as messages:
                async for frames in messages:
                    try:
                        await context.write(b"".join(frames))
                    except asyncio.CancelledError:
                        raise
                    except Exception as e:
                        # grpc reports a peer that went away mid-write as an
                        # error of the write (ExecuteBatchError), not as a
                        # cancellation: nothing to report, no traceback to log.
                        context_ = log_context(stream.connection)
                        log.debug("client vanished during a write: %r", e, extra=context_)
                        return
        except Refused as refusal:
            await _abort(context, refusal)
        except asyncio.CancelledError:
            # Cancelled while blocked in a write because the server ended the
            # stream (too slow, shutdown, revoked); otherwise the call went away.
            ended = stream.interrupted()
            if ended is None:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            await _abort(context, ended)
        finally:
            stream.close()

    def generic_handler(self) -> grpc.GenericRpcHandler:
        """Method handlers; Subscribe's responses are pre-encoded bytes (no serializer)."""
        handlers = self.handlers
        unary = grpc.unary_unary_rpc_method_handler
        methods = {
            "Subscribe": grpc.unary_stream_rpc_method_handler(
                self.subscribe,
                request_deserializer=_lenient_parser(pb.SubscribeRequest),
                response_serializer=None,
            ),
            "Emit": unary(
                _unary(handlers.emits.emit, pb.EmitRequest),
                request_deserializer=_lenient_parser(pb.EmitRequest),
                response_serializer=pb.EmitResponse.SerializeToString,
            ),
            "EmitBatch": unary(
                _unary(handlers.emits.emit_batch, pb.EmitBatchRequest),
                request_deserializer=_lenient_parser(pb.EmitBatchRequest),
                response_serializer=pb.EmitBatchResponse.SerializeToString,
            ),
            "GetConnections": unary(
                _unary(handlers.admin.get_connections, pb.GetConnectionsRequest),
                request_deserializer=_lenient_parser(pb.GetConnectionsRequest),
                response_serializer=pb.GetConnectionsResponse.SerializeToString,
            ),
            "Disconnect": unary(
                _unary(handlers.admin.disconnect, pb.DisconnectRequest),
                request_deserializer=_lenient_parser(pb.DisconnectRequest),
                response_serializer=pb.DisconnectResponse.SerializeToString,
            ),
        }
        return grpc.method_handlers_generic_handler(SERVICE_NAME, methods)


__all__ = ["STATUS", "GrpcAdapter", "call_info"]
