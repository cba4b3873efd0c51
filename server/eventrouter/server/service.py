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
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from eventrouter.server.auth import Authenticator, AuthError, Subscriber
from eventrouter.server.broker.base import Broker, BrokerUnavailable, EmitItem
from eventrouter.server.core import wire
from eventrouter.server.core.connections import (
    ClientConnection,
    SessionScopedConnection,
)
from eventrouter.server.core.filters import MachineOnly
from eventrouter.server.core.queue import CloseReason
from eventrouter.server.core.router import EmitResult, OpenResult
from eventrouter.server.core.stats import Histogram
from eventrouter.server.core.validation import (
    IdTooLong,
    InvalidArgument,
    PayloadTooLarge,
    RequestError,
    connection_for_scope,
    scope_to_proto,
)
from eventrouter.server.edge import (
    CLOSE_STATUS,
    RESUME_STATUS,
    abort_auth,
    abort_request_status,
    emit_batch_response,
    emit_labels,
    emit_response,
    heartbeat_frame,
    lenient_parser,
    log_context,
    outcome,
    parsed_or_refused,
    peer_auth,
    resume_failure,
    scope_denied,
    scope_from_label,
)
from eventrouter.server.security.limits import RateLimiter, SecurityLimits
from eventrouter.server.security.tokens import LEEWAY_S
from eventrouter.v1 import router_service_pb2 as pb

log = logging.getLogger("eventrouter.server")

SERVICE_NAME = "eventrouter.v1.EventRouterService"


class _Writer:
    """A Subscribe call's task, whether it is blocked in a write, and its credential."""

    __slots__ = ("broker_told", "subscriber", "task", "writing")

    def __init__(self, task: asyncio.Task[Any], subscriber: Subscriber) -> None:
        self.task = task
        self.subscriber = subscriber
        self.writing = False
        # The broker was told the connection closed (presence, watches).
        self.broker_told = False


class _PeerGone(Exception):
    """A write failed because the client vanished while it was in flight."""


class _Handshake:
    """Counts a Subscribe as handshaking until its first write (or its end)."""

    __slots__ = ("_open", "_service")

    def __init__(self, service: EventRouterService) -> None:
        self._service = service
        self._open = True
        service._handshakes += 1

    def done(self) -> None:
        if self._open:
            self._open = False
            self._service._handshakes -= 1


@dataclass(slots=True)
class SecurityStats:
    """Rejections by reason, for the metrics endpoint."""

    auth_failures: Counter[str] = field(default_factory=Counter)
    limit_rejections: Counter[str] = field(default_factory=Counter)


class EventRouterService:
    """Implements eventrouter.v1.EventRouterService over an ``EventRouter``."""

    def __init__(
        self,
        broker: Broker,
        authenticator: Authenticator,
        *,
        limits: SecurityLimits | None = None,
        heartbeat_default_ms: int = 0,
        heartbeat_min_ms: int = 1000,
    ) -> None:
        self.broker = broker
        self.router = router = broker.router
        self.auth = authenticator
        self.limits = limits or SecurityLimits()
        self.heartbeat_default_ms = heartbeat_default_ms
        self.heartbeat_min_ms = heartbeat_min_ms
        self.accepting = True
        self.security_stats = SecurityStats()
        # Emit calls by (payload kind, filter kind, outcome) and the age of the
        # oldest event in each stream write; read by the metrics collector.
        self.emit_counts: Counter[tuple[str, str, str]] = Counter()
        self.write_latency = Histogram()
        self._writers: dict[str, _Writer] = {}
        self._handshakes = 0
        self._emit_rate = RateLimiter(
            self.limits.emit_rate_per_service, self.limits.emit_burst_per_service
        )
        router.on_connection_closed = self._connection_closed
        broker.disconnect_locally = self._disconnect_locally

    # -- Subscribe -------------------------------------------------------

    async def subscribe(self, request: pb.SubscribeRequest, context: Any) -> None:
        if not self.accepting:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "server is shutting down")
        if self._handshakes >= self.limits.max_concurrent_handshakes:
            self.security_stats.limit_rejections["handshakes"] += 1
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "too many concurrent Subscribe handshakes"
            )
        handshake = _Handshake(self)
        try:
            subscriber = await self._authenticate_subscriber(context)
            connection, opened = await self._register(request, context, subscriber)
            writer = self._writers[connection.connection_id] = _Writer(
                asyncio.current_task(),  # type: ignore[arg-type]
                subscriber,
            )
            expiry = self._schedule_expiry(connection, subscriber)
            log.debug("stream opened", extra=log_context(connection))
            try:
                heartbeat_ms = self._heartbeat_ms(request.heartbeat_interval_ms)
                opened_event = pb.StreamEvent(opened=self._opened(connection, opened, heartbeat_ms))
                first = wire.event_frame(opened_event.SerializeToString())
                await self._stream(context, connection, writer, first, heartbeat_ms, handshake)
            finally:
                if expiry is not None:
                    expiry.cancel()
                del self._writers[connection.connection_id]
                self.router.remove_connection(connection.user_id, connection)
                if not writer.broker_told:
                    self.broker.closed(connection)
                log.debug("stream closed", extra=log_context(connection))
        finally:
            handshake.done()

    async def _authenticate_subscriber(self, context: Any) -> Subscriber:
        try:
            subscriber = self.auth.subscriber(context.invocation_metadata(), peer_auth(context))
        except AuthError as e:
            self.security_stats.auth_failures[e.reason] += 1
            await abort_auth(context, e)
        return subscriber

    async def _register(
        self, request: pb.SubscribeRequest, context: Any, subscriber: Subscriber
    ) -> tuple[ClientConnection, OpenResult]:
        """Check the request against the credential and limits, then register atomically."""
        try:
            connection = connection_for_scope(
                subscriber.user_id, request.scope, "scope", self.router.limits.ids
            )
            if request.previous_connection_id:
                self.router.limits.ids.check(
                    request.previous_connection_id, "previous_connection_id"
                )
                connection.previous_connection_id = request.previous_connection_id
        except RequestError as e:
            await self._abort_request(context, e)
        denied = scope_denied(subscriber, connection)
        if denied:
            self.security_stats.auth_failures["scope_not_allowed"] += 1
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, denied)
        registry = self.router.registry
        if registry.count_of_user(subscriber.user_id) >= self.limits.max_streams_per_user:
            self.security_stats.limit_rejections["streams_per_user"] += 1
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"user already holds {self.limits.max_streams_per_user} streams (the maximum)",
            )
        if len(registry) >= self.limits.max_streams_per_node:
            self.security_stats.limit_rejections["streams_per_node"] += 1
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "node is at its stream limit")
        resume = (
            (request.resume_from.offset, request.resume_from.epoch)
            if request.HasField("resume_from")
            else None
        )
        try:
            opened = await self.broker.open(connection, resume)
        except RequestError as e:
            await self._abort_request(context, e)
        except BrokerUnavailable as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"broker unavailable: {e}")
        return connection, opened

    def _schedule_expiry(
        self, connection: ClientConnection, subscriber: Subscriber
    ) -> asyncio.TimerHandle | None:
        if subscriber.expires_at is None:
            return None
        # The verifier accepts a token up to LEEWAY_S past `exp` (clock skew);
        # the stream lives exactly as long as the token would verify.
        return asyncio.get_running_loop().call_later(
            max(0.0, subscriber.expires_at + LEEWAY_S - time.time()),
            self.router.close_connection,
            connection,
            CloseReason.CREDENTIAL_EXPIRED,
            "token expired: reconnect with a fresh token and resume from your last position",
        )

    async def _stream(
        self,
        context: Any,
        connection: ClientConnection,
        writer: _Writer,
        first: bytes,
        heartbeat_ms: int,
        handshake: _Handshake,
    ) -> None:
        queue = connection.queue
        assert queue is not None
        try:
            # The first write is never interrupted: it carries the initial
            # metadata too, and a call cancelled mid-way through that batch can
            # no longer be aborted with a status. It is small, so flow control
            # cannot hold it for long.
            await context.write(first)
            handshake.done()
            while True:
                if queue.closure is not None:
                    break
                if not queue.has_pending():
                    if heartbeat_ms:
                        try:
                            async with asyncio.timeout(heartbeat_ms / 1000):
                                await queue.wait()
                        except TimeoutError:
                            await self._write(context, writer, heartbeat_frame())
                            continue
                    else:
                        await queue.wait()
                    if queue.closure is not None:
                        break
                queued_at = queue.pending_since
                data = b"".join(queue.drain())
                self.write_latency.observe(time.monotonic() - queued_at)
                await self._write(context, writer, data)
        except asyncio.CancelledError:
            # Interrupted while blocked in a write because the queue closed
            # (too slow, shutdown, revoked); otherwise the call itself went away.
            if queue.closure is None:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except _PeerGone as e:
            log.debug(
                "client vanished during a write: %r", e.__cause__, extra=log_context(connection)
            )
            return
        closure = queue.closure
        assert closure is not None
        await context.abort(CLOSE_STATUS[closure.reason], closure.message)

    @staticmethod
    async def _write(context: Any, writer: _Writer, data: bytes) -> None:
        writer.writing = True
        try:
            await context.write(data)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            # grpc reports a peer that went away mid-write as an error of the
            # write (ExecuteBatchError), not as a cancellation: nothing to
            # report to anyone, and no traceback in the log.
            raise _PeerGone() from e
        finally:
            writer.writing = False

    def _connection_closed(self, connection: ClientConnection) -> None:
        """The router ended a connection (too slow, shutdown, Disconnect, expiry)."""
        writer = self._writers.get(connection.connection_id)
        if writer is None:
            return
        # Tell the broker now, not when the handler ends: a stalled client's
        # handler may take until its transport dies, and meanwhile it must not
        # count in cluster presence (GetConnections, `reached`).
        writer.broker_told = True
        self.broker.closed(connection)
        # A writer waiting on its queue wakes up by itself when the queue
        # closes; one blocked handing a message to a peer that stopped reading
        # would wait forever, so cancel it and let it report the closure.
        if writer.writing:
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
                status=RESUME_STATUS[opened.status],
                failure=resume_failure(opened),
                replayed=opened.replayed,
            ),
            position=pb.StreamPosition(offset=opened.offset, epoch=opened.epoch),
            heartbeat_interval_ms=heartbeat_ms,
            node_id=self.router.node_id,
        )

    # -- Emit ------------------------------------------------------------

    async def emit(self, request: pb.EmitRequest, context: Any) -> pb.EmitResponse:
        await self._authorize_emit(context, (request,))
        try:
            item = self._check(request, "")
        except RequestError as e:
            self._count_emits((request,), outcome(e))
            await self._abort_request(context, e)
        results = await self._accept(context, (request,), [item])
        return emit_response(results[0])

    async def emit_batch(self, request: pb.EmitBatchRequest, context: Any) -> pb.EmitBatchResponse:
        await self._authorize_emit(context, request.emits)
        try:
            # Validate everything first: a bad emit rejects the whole batch
            # before any of it is delivered.
            items = [self._check(emit, f"emits[{i}].") for i, emit in enumerate(request.emits)]
        except RequestError as e:
            self._count_emits(request.emits, outcome(e))
            await self._abort_request(context, e)
        results = await self._accept(context, request.emits, items)
        return emit_batch_response(results)

    async def _accept(
        self, context: Any, requests: Sequence[pb.EmitRequest], items: list[EmitItem]
    ) -> list[EmitResult]:
        try:
            results = await self.broker.emit_many(items)
        except BrokerUnavailable as e:
            self._count_emits(requests, "unavailable")
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"broker unavailable: {e}")
        for request, result in zip(requests, results, strict=True):
            outcome = "duplicate" if result.duplicate else "ok"
            self.emit_counts[emit_labels(request, outcome)] += 1
        return results

    def _count_emits(self, requests: Iterable[pb.EmitRequest], outcome: str) -> None:
        for request in requests:
            self.emit_counts[emit_labels(request, outcome)] += 1

    def _check(self, request: pb.EmitRequest, field: str) -> EmitItem:
        """Validate one emit (no state changes) into what the broker accepts."""
        kind = request.WhichOneof("payload")
        recipient_filter = (
            request.recipient_filter if request.HasField("recipient_filter") else None
        )
        skip = request.skip_connection_id or None
        # Each read of a string or message field builds a new Python object: once each.
        user_id = request.user_id
        if kind == "update":
            update = request.update
            target = self.router.check_update(user_id, update, recipient_filter, field)
            self._check_id(skip, f"{field}skip_connection_id")
            return EmitItem(user_id, update, target, skip)
        if kind == "ephemeral":
            ephemeral = request.ephemeral
            target = self.router.check_ephemeral(user_id, ephemeral, recipient_filter, field)
            self._check_id(skip, f"{field}skip_connection_id")
            key = request.idempotency_key or None
            self._check_id(key, f"{field}idempotency_key")
            return EmitItem(user_id, ephemeral, target, skip, key)
        self.router.limits.ids.check(request.user_id, f"{field}user_id")
        raise InvalidArgument(f"{field}payload", "required: set update or ephemeral")

    def _check_id(self, value: str | None, field: str) -> None:
        """An optional id (skip, idempotency key) follows the same rules as every id."""
        if value is not None:
            self.router.limits.ids.check(value, field)

    # -- GetConnections --------------------------------------------------

    async def get_connections(
        self, request: pb.GetConnectionsRequest, context: Any
    ) -> pb.GetConnectionsResponse:
        await self._authorize_service(context)
        try:
            self.router.limits.ids.check(request.user_id, "user_id")
        except RequestError as e:
            await self._abort_request(context, e)
        try:
            records = await self.broker.connections(request.user_id)
        except BrokerUnavailable as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"broker unavailable: {e}")
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

    # -- Disconnect ------------------------------------------------------

    async def disconnect(
        self, request: pb.DisconnectRequest, context: Any
    ) -> pb.DisconnectResponse:
        service = await self._authorize_service(context)
        try:
            targets = self._disconnect_targets(request)
        except RequestError as e:
            await self._abort_request(context, e)
        ended = self._disconnect_locally(request, targets)
        try:
            # Other nodes apply it too (a no-op for a single node).
            await self.broker.broadcast_disconnect(request)
        except BrokerUnavailable as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"broker unavailable: {e}")
        log.info(
            "disconnect by %s: %s ended %d streams on this node",
            service,
            request.WhichOneof("selector"),
            ended,
        )
        return pb.DisconnectResponse(disconnected=ended)

    def _disconnect_locally(
        self, request: pb.DisconnectRequest, targets: list[ClientConnection] | None = None
    ) -> int:
        """End this node's streams the request selects; the broker calls it for other nodes'."""
        if targets is None:
            try:
                targets = self._disconnect_targets(request)
            except RequestError:
                return 0
        if request.revoke and request.WhichOneof("selector") == "token_id":
            self.auth.revoke(request.token_id)
        reason = CloseReason.REVOKED if request.revoke else CloseReason.DISCONNECTED
        message = "disconnected by the service" + (f": {request.reason}" if request.reason else "")
        for connection in targets:
            self.router.close_connection(connection, reason, message)
        return len(targets)

    def _disconnect_targets(self, request: pb.DisconnectRequest) -> list[ClientConnection]:
        ids = self.router.limits.ids
        registry = self.router.registry
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
                    registry_connection
                    for writer_id, writer in list(self._writers.items())
                    if writer.subscriber.token_id == request.token_id
                    and (registry_connection := registry.get(writer_id)) is not None
                ]
        raise InvalidArgument(
            "selector", "required: set user_id, connection_id, machine, session or token_id"
        )

    # -- credentials -----------------------------------------------------

    async def _abort_request(self, context: Any, error: RequestError) -> None:
        """Answer a refused request; limit violations are counted by kind."""
        if isinstance(error, IdTooLong):
            self.security_stats.limit_rejections["id_length"] += 1
        elif isinstance(error, PayloadTooLarge):
            self.security_stats.limit_rejections["event_bytes"] += 1
        await abort_request_status(context, error)

    async def _authorize_service(self, context: Any) -> str:
        try:
            return self.auth.service(context.invocation_metadata(), peer_auth(context))
        except AuthError as e:
            self.security_stats.auth_failures[e.reason] += 1
            await abort_auth(context, e)
            raise  # unreachable: abort raises

    async def _authorize_emit(self, context: Any, requests: Sequence[pb.EmitRequest]) -> None:
        try:
            service = self.auth.service(context.invocation_metadata(), peer_auth(context))
        except AuthError as e:
            self.security_stats.auth_failures[e.reason] += 1
            self._count_emits(requests, "unauthenticated")
            await abort_auth(context, e)
        if not self._emit_rate.allow(service, len(requests)):
            self.security_stats.limit_rejections["emit_rate"] += 1
            self._count_emits(requests, "rate_limited")
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"emit rate limit of {self.limits.emit_rate_per_service:g} events/s exceeded",
            )

    # -- wiring ----------------------------------------------------------

    def generic_handler(self) -> grpc.GenericRpcHandler:
        """Method handlers; Subscribe's responses are pre-encoded bytes (no serializer).

        Requests that do not parse are answered INVALID_ARGUMENT by the
        handler (grpc itself would answer UNKNOWN and log a traceback per
        call, which lets anyone flood the error log).
        """
        handlers = {
            "Subscribe": grpc.unary_stream_rpc_method_handler(
                parsed_or_refused(self.subscribe, pb.SubscribeRequest),
                request_deserializer=lenient_parser(pb.SubscribeRequest),
                response_serializer=None,
            ),
            "Emit": grpc.unary_unary_rpc_method_handler(
                parsed_or_refused(self.emit, pb.EmitRequest),
                request_deserializer=lenient_parser(pb.EmitRequest),
                response_serializer=pb.EmitResponse.SerializeToString,
            ),
            "EmitBatch": grpc.unary_unary_rpc_method_handler(
                parsed_or_refused(self.emit_batch, pb.EmitBatchRequest),
                request_deserializer=lenient_parser(pb.EmitBatchRequest),
                response_serializer=pb.EmitBatchResponse.SerializeToString,
            ),
            "GetConnections": grpc.unary_unary_rpc_method_handler(
                parsed_or_refused(self.get_connections, pb.GetConnectionsRequest),
                request_deserializer=lenient_parser(pb.GetConnectionsRequest),
                response_serializer=pb.GetConnectionsResponse.SerializeToString,
            ),
            "Disconnect": grpc.unary_unary_rpc_method_handler(
                parsed_or_refused(self.disconnect, pb.DisconnectRequest),
                request_deserializer=lenient_parser(pb.DisconnectRequest),
                response_serializer=pb.DisconnectResponse.SerializeToString,
            ),
        }
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

    def close_all_streams(self, reason: CloseReason, message: str) -> int:
        self.accepting = False
        return self.router.close_all(reason, message)


__all__ = ["SERVICE_NAME", "EventRouterService"]
