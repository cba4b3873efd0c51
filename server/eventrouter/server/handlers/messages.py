"""The contract's messages built from the router's results, and labels for metrics.

Pure functions, shared by every protocol: what a response says does not
depend on how it travels.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from eventrouter.server.auth import Subscriber
from eventrouter.server.core import wire
from eventrouter.server.core.connections import (
    ClientConnection,
    MachineScopedConnection,
    SessionScopedConnection,
)
from eventrouter.server.core.router import EmitResult, OpenResult, ResumeStatus
from eventrouter.server.core.validation import PayloadTooLarge, RequestError, scope_to_proto
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import routing_pb2 as rt

RESUME_STATUS = {
    ResumeStatus.NOT_REQUESTED: pb.RESUME_STATUS_NOT_REQUESTED,
    ResumeStatus.RESUMED: pb.RESUME_STATUS_RESUMED,
    ResumeStatus.FAILED: pb.RESUME_STATUS_FAILED,
}


def resume_failure(result: OpenResult) -> pb.ResumeFailure.ValueType:
    if result.failure is None:
        return pb.RESUME_FAILURE_UNSPECIFIED
    return pb.ResumeFailure.Value("RESUME_FAILURE_" + result.failure.name)


def opened_frame(
    connection: ClientConnection, opened: OpenResult, heartbeat_ms: int, node_id: str
) -> bytes:
    """The stream's first event, ``ConnectionOpened``, as a ``SubscribeResponse`` frame."""
    event = pb.StreamEvent(
        opened=pb.ConnectionOpened(
            connection_id=connection.connection_id,
            user_id=connection.user_id,
            scope=scope_to_proto(connection),
            opened_at_ms=connection.opened_at_ms,
            resume=pb.ResumeResult(
                status=RESUME_STATUS[opened.status],
                failure=resume_failure(opened),
                replayed=opened.replayed,
            ),
            position=pb.StreamPosition(offset=opened.offset, epoch=opened.epoch),
            heartbeat_interval_ms=heartbeat_ms,
            node_id=node_id,
        )
    )
    return wire.event_frame(event.SerializeToString())


def heartbeat_frame() -> bytes:
    event = pb.StreamEvent(heartbeat=pb.Heartbeat(server_time_ms=time.time_ns() // 1_000_000))
    return wire.event_frame(event.SerializeToString())


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
