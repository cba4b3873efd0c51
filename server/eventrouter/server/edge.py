"""Translations at the gRPC edge: statuses, protobuf conversions, request parsing.

Small pure helpers the servicer (``service.py``) uses, kept apart so that the
servicer reads as the request flow only.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from eventrouter.server.auth import AuthError, Subscriber
from eventrouter.server.core import wire
from eventrouter.server.core.connections import (
    ClientConnection,
    MachineScopedConnection,
    SessionScopedConnection,
)
from eventrouter.server.core.queue import CloseReason
from eventrouter.server.core.router import EmitResult, OpenResult, ResumeStatus
from eventrouter.server.core.validation import PayloadTooLarge, RequestError
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import routing_pb2 as rt

CLOSE_STATUS = {
    CloseReason.TOO_SLOW: grpc.StatusCode.RESOURCE_EXHAUSTED,
    CloseReason.SHUTDOWN: grpc.StatusCode.UNAVAILABLE,
    CloseReason.DISCONNECTED: grpc.StatusCode.UNAVAILABLE,
    CloseReason.REVOKED: grpc.StatusCode.PERMISSION_DENIED,
    CloseReason.CREDENTIAL_EXPIRED: grpc.StatusCode.UNAUTHENTICATED,
}

RESUME_STATUS = {
    ResumeStatus.NOT_REQUESTED: pb.RESUME_STATUS_NOT_REQUESTED,
    ResumeStatus.RESUMED: pb.RESUME_STATUS_RESUMED,
    ResumeStatus.FAILED: pb.RESUME_STATUS_FAILED,
}


def resume_failure(result: OpenResult) -> pb.ResumeFailure.ValueType:
    if result.failure is None:
        return pb.RESUME_FAILURE_UNSPECIFIED
    return pb.ResumeFailure.Value("RESUME_FAILURE_" + result.failure.name)


def lenient_parser(kind: type[Message]) -> Callable[[bytes], Message | None]:
    """``kind.FromString`` that answers None instead of raising on bad bytes."""

    def parse(data: bytes) -> Message | None:
        try:
            return kind.FromString(data)
        except DecodeError:
            return None

    return parse


def parsed_or_refused(
    handler: Callable[[Any, Any], Awaitable[Any]], kind: type[Message]
) -> Callable[[Any, Any], Awaitable[Any]]:
    name = kind.DESCRIPTOR.full_name

    async def handle(request: Message | None, context: Any) -> Any:
        if request is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request: not a valid {name}")
        return await handler(request, context)

    return handle


def emit_response(result: EmitResult) -> pb.EmitResponse:
    response = pb.EmitResponse()
    fill_emit_response(response, result)
    return response


def emit_batch_response(results: Sequence[EmitResult]) -> pb.EmitBatchResponse:
    # Filled in place: building each EmitResponse first and passing the list
    # copies every one of them again (measured: 0.99 -> 0.56 µs per result).
    response = pb.EmitBatchResponse()
    add = response.results.add
    for result in results:
        fill_emit_response(add(), result)
    return response


def fill_emit_response(response: pb.EmitResponse, result: EmitResult) -> None:
    response.reached = result.reached
    if result.duplicate:
        response.duplicate = True
    if result.offset:
        position = response.position
        position.offset = result.offset
        position.epoch = result.epoch


def scope_from_label(label: str) -> rt.ConnectionScope:
    kind, _, ident = label.partition(":")
    if kind == "session":
        return rt.ConnectionScope(session=rt.SessionScope(session_id=ident))
    if kind == "machine":
        return rt.ConnectionScope(machine=rt.MachineScope(machine_id=ident))
    return rt.ConnectionScope(user=rt.UserScope())


def emit_labels(request: pb.EmitRequest, outcome: str) -> tuple[str, str, str]:
    """(payload kind, filter kind, outcome), e.g. ("update:new_message", "machine_only", "ok")."""
    payload = request.WhichOneof("payload")
    if payload == "update":
        kind = f"update:{request.update.body.WhichOneof('event')}"
    elif payload == "ephemeral":
        kind = f"ephemeral:{request.ephemeral.WhichOneof('event')}"
    else:
        kind = "none"
    recipient = (
        request.recipient_filter.WhichOneof("filter") or "all_user_authenticated_connections"
    )
    return kind, recipient, outcome


def outcome(error: RequestError) -> str:
    return "too_large" if isinstance(error, PayloadTooLarge) else "invalid"


def log_context(connection: ClientConnection) -> dict[str, str]:
    return {"connection_id": connection.connection_id, "user_id": connection.user_id}


def peer_auth(context: Any) -> dict[str, list[bytes]]:
    auth_context: dict[str, list[bytes]] = context.auth_context()
    return auth_context


def scope_denied(subscriber: Subscriber, connection: ClientConnection) -> str:
    """Why a restricted credential may not open this connection ("" when it may)."""
    if subscriber.machine_id is not None and not (
        isinstance(connection, MachineScopedConnection)
        and connection.machine_id == subscriber.machine_id
    ):
        return (
            f"token only allows the machine-scoped connection of machine {subscriber.machine_id!r}"
        )
    if subscriber.session_id is not None and not (
        isinstance(connection, SessionScopedConnection)
        and connection.session_id == subscriber.session_id
    ):
        return (
            f"token only allows the session-scoped connection of session {subscriber.session_id!r}"
        )
    return ""


def heartbeat_frame() -> bytes:
    event = pb.StreamEvent(heartbeat=pb.Heartbeat(server_time_ms=time.time_ns() // 1_000_000))
    return wire.event_frame(event.SerializeToString())


async def abort_request_status(context: Any, error: RequestError) -> None:
    code = (
        grpc.StatusCode.RESOURCE_EXHAUSTED
        if isinstance(error, PayloadTooLarge)
        else grpc.StatusCode.INVALID_ARGUMENT
    )
    await context.abort(code, str(error))


async def abort_auth(context: Any, error: AuthError) -> None:
    code = (
        grpc.StatusCode.PERMISSION_DENIED if error.permission else grpc.StatusCode.UNAUTHENTICATED
    )
    await context.abort(code, error.message)
