"""What a Subscribe means: authenticate, register a connection, then stream its queue.

``Subscriptions.open`` checks everything and registers the connection (or
raises ``Refused`` and leaves nothing behind).  The returned
``SubscribeStream`` yields the stream's messages, each a list of frames
(``SubscribeResponse.events`` elements, encoded once per event and shared
by every recipient; joined, they are the message): first the
``ConnectionOpened`` event, then everything the connection's queue holds,
one write's worth per message, and heartbeats on an idle stream.  A transport
writes each message and asks for the next; it calls ``close()`` when the
call ends, however it ends.

A stream the server ends (too slow, shutdown, Disconnect, expired token)
ends the iteration with ``Refused`` carrying the code to report.  When that
happens while the transport is blocked writing to a peer that stopped
reading, the stream cancels the transport's task (the write would
otherwise wait forever); ``interrupted()`` then tells the transport it was
this, and what to report.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

from eventrouter.server.auth import AuthError, Subscriber
from eventrouter.server.broker.base import BrokerUnavailable, LimitReached
from eventrouter.server.core.connections import ClientConnection
from eventrouter.server.core.queue import CloseReason, ConnectionQueue
from eventrouter.server.core.router import OpenResult
from eventrouter.server.core.validation import IdTooLong, RequestError, connection_for_scope
from eventrouter.server.handlers.errors import (
    CLOSE_CODE,
    Code,
    Refused,
    auth_refused,
    request_refused,
)
from eventrouter.server.handlers.messages import (
    heartbeat_frame,
    log_context,
    opened_frame,
    scope_denied,
)
from eventrouter.server.handlers.state import CallInfo, HandlerState, StreamWriter
from eventrouter.server.security.tokens import LEEWAY_S
from eventrouter.v1 import router_service_pb2 as pb

log = logging.getLogger("eventrouter.server")


class SubscribeStream:
    """One open Subscribe: its messages, then how it ended."""

    def __init__(
        self,
        state: HandlerState,
        connection: ClientConnection,
        writer: StreamWriter,
        first: list[bytes],
        heartbeat_ms: int,
    ) -> None:
        self._state = state
        self.connection = connection
        self._writer = writer
        self._first = first
        self._heartbeat_ms = heartbeat_ms
        self._expiry = _schedule_expiry(state, connection, writer.subscriber)
        self._closed = False
        self._handshaking = True
        self._beat: _Heartbeat | None = None
        assert connection.queue is not None
        self._queue: ConnectionQueue = connection.queue

    async def messages(self) -> AsyncGenerator[list[bytes], None]:
        """The stream's messages; ends with ``Refused`` when the server ends the stream."""
        queue, writer, state = self._queue, self._writer, self._state
        beat = _Heartbeat(self._heartbeat_ms) if self._heartbeat_ms else None
        self._beat = beat
        # The first message is never interrupted: it carries the response's
        # headers too, and it is small, so flow control cannot hold it long.
        yield self._first
        self._handshake_done()
        while True:
            if queue.closure is not None:
                break
            if not queue.has_pending():
                if beat is not None:
                    beat.idle()
                    try:
                        await queue.wait()
                    except asyncio.CancelledError:
                        if not beat.was_due():
                            raise
                        writer.writing = True
                        yield [heartbeat_frame()]
                        writer.writing = False
                        continue
                    beat.waiting = False
                else:
                    await queue.wait()
                if queue.closure is not None:
                    break
            queued_at = queue.pending_since
            frames = queue.drain()
            state.write_latency.observe(time.monotonic() - queued_at)
            writer.writing = True
            yield frames
            writer.writing = False
        refusal = self.interrupted()
        assert refusal is not None
        raise refusal

    def interrupted(self) -> Refused | None:
        """What to report if the server ended this stream (None: it did not)."""
        closure = self._queue.closure
        if closure is None:
            return None
        return Refused(CLOSE_CODE[closure.reason], closure.message)

    def _handshake_done(self) -> None:
        if self._handshaking:
            self._handshaking = False
            self._state.handshakes -= 1

    def close(self) -> None:
        """The call ended (any way): unregister the connection.  Safe to call again."""
        if self._closed:
            return
        self._closed = True
        self._handshake_done()
        state, connection = self._state, self.connection
        if self._expiry is not None:
            self._expiry.cancel()
        if self._beat is not None:
            self._beat.stop()
        state.writers.pop(connection.connection_id, None)
        state.router.remove_connection(connection.user_id, connection)
        if not self._writer.broker_told:
            state.broker.closed(connection)
        log.debug("stream closed", extra=log_context(connection))


class Subscriptions:
    """Opening Subscribe streams, and ending them from the server's side."""

    def __init__(self, state: HandlerState) -> None:
        self._state = state
        state.router.on_connection_closed = self._connection_closed

    async def open(
        self,
        request: pb.SubscribeRequest,
        call: CallInfo,
        *,
        heartbeat_default_ms: int | None = None,
    ) -> SubscribeStream:
        """Authenticate and register; raises ``Refused`` and leaves nothing behind.

        ``heartbeat_default_ms``: the transport's heartbeat for streams that
        ask for none (the web listener's proxies close idle responses).
        """
        state = self._state
        if not state.accepting:
            raise Refused(Code.UNAVAILABLE, "server is shutting down")
        if state.handshakes >= state.limits.max_concurrent_handshakes:
            state.security_stats.limit_rejections["handshakes"] += 1
            raise Refused(Code.RESOURCE_EXHAUSTED, "too many concurrent Subscribe handshakes")
        state.handshakes += 1
        try:
            subscriber = self._authenticate(call)
            connection, opened = await self._register(request, subscriber)
        except BaseException:
            state.handshakes -= 1
            raise
        writer = state.writers[connection.connection_id] = StreamWriter(
            asyncio.current_task(), subscriber
        )
        log.debug("stream opened", extra=log_context(connection))
        heartbeat_ms = self._heartbeat_ms(request.heartbeat_interval_ms, heartbeat_default_ms)
        first = [opened_frame(connection, opened, heartbeat_ms, state.router.node_id)]
        return SubscribeStream(state, connection, writer, first, heartbeat_ms)

    def _authenticate(self, call: CallInfo) -> Subscriber:
        try:
            return self._state.auth.subscriber(call.metadata, call.peer)
        except AuthError as e:
            self._state.security_stats.auth_failures[e.reason] += 1
            raise auth_refused(e) from None

    async def _register(
        self, request: pb.SubscribeRequest, subscriber: Subscriber
    ) -> tuple[ClientConnection, OpenResult]:
        """Check the request against the credential and limits, then register atomically."""
        state = self._state
        router = state.router
        try:
            connection = connection_for_scope(
                subscriber.user_id, request.scope, "scope", router.limits.ids
            )
            if request.previous_connection_id:
                router.limits.ids.check(request.previous_connection_id, "previous_connection_id")
                connection.previous_connection_id = request.previous_connection_id
        except RequestError as e:
            raise self._request_refused(e) from None
        denied = scope_denied(subscriber, connection)
        if denied:
            state.security_stats.auth_failures["scope_not_allowed"] += 1
            raise Refused(Code.PERMISSION_DENIED, denied)
        limits = state.limits
        registry = router.registry
        # This node's count first (cheap); a cluster broker's open counts every node's.
        if registry.count_of_user(subscriber.user_id) >= limits.max_streams_per_user:
            raise self._too_many_streams()
        if len(registry) >= limits.max_streams_per_node:
            state.security_stats.limit_rejections["streams_per_node"] += 1
            raise Refused(Code.RESOURCE_EXHAUSTED, "node is at its stream limit")
        resume = (
            (request.resume_from.offset, request.resume_from.epoch)
            if request.HasField("resume_from")
            else None
        )
        try:
            opened = await state.broker.open(connection, resume)
        except RequestError as e:
            raise self._request_refused(e) from None
        except BrokerUnavailable as e:
            raise Refused(Code.UNAVAILABLE, f"broker unavailable: {e}") from None
        except LimitReached:
            raise self._too_many_streams() from None
        return connection, opened

    def _too_many_streams(self) -> Refused:
        state = self._state
        state.security_stats.limit_rejections["streams_per_user"] += 1
        maximum = state.limits.max_streams_per_user
        return Refused(
            Code.RESOURCE_EXHAUSTED, f"user already holds {maximum} streams (the maximum)"
        )

    def _request_refused(self, error: RequestError) -> Refused:
        if isinstance(error, IdTooLong):
            self._state.security_stats.limit_rejections["id_length"] += 1
        return request_refused(error)

    def _heartbeat_ms(self, requested: int, transport_default: int | None) -> int:
        state = self._state
        default = state.heartbeat_default_ms
        if transport_default is not None:
            default = transport_default
        value = requested or default
        return max(value, state.heartbeat_min_ms) if value else 0

    def _connection_closed(self, connection: ClientConnection) -> None:
        """The router ended a connection (too slow, shutdown, Disconnect, expiry)."""
        state = self._state
        writer = state.writers.get(connection.connection_id)
        if writer is None:
            return
        # Tell the broker now, not when the call ends: a stalled client's call
        # may last until its transport dies, and meanwhile it must not count
        # in cluster presence (GetConnections, `reached`).
        writer.broker_told = True
        state.broker.closed(connection)
        # A stream waiting on its queue wakes up by itself when the queue
        # closes; a transport blocked handing a message to a peer that stopped
        # reading would wait forever, so cancel it (interrupted() says why).
        if writer.writing and writer.task is not None:
            writer.task.cancel()


class _Heartbeat:
    """Wakes a stream idle for ``interval_ms`` (since its last message) to send a heartbeat.

    One timer per stream, armed when the stream first waits and re-armed only
    when it fires: a wait costs a clock reading, not a timer (``asyncio.timeout``
    per wait cost a timer, a context object and two loop look-ups per message).
    When it fires on a stream that wrote since, it moves to that write's
    deadline; on one still waiting past its deadline it cancels the stream's
    task, which ``was_due`` tells from any other cancellation (the way
    ``asyncio.timeout`` does).  The heartbeat is due ``interval_ms`` after the
    wait began, as with a timeout per wait.
    """

    __slots__ = ("_due", "_handle", "_interval", "_loop", "_since", "_task", "waiting")

    def __init__(self, interval_ms: int) -> None:
        self._interval = interval_ms / 1000
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._handle: asyncio.TimerHandle | None = None
        self._since = 0.0
        self._due = False
        self.waiting = False

    def idle(self) -> None:
        """The stream begins waiting for its queue."""
        self._since = since = self._loop.time()
        self.waiting = True
        if self._handle is None:
            self._handle = self._loop.call_at(since + self._interval, self._fire)

    def _fire(self) -> None:
        self._handle = None
        if not self.waiting:
            return  # re-armed by the next wait
        deadline = self._since + self._interval
        if self._loop.time() < deadline:
            self._handle = self._loop.call_at(deadline, self._fire)
        elif self._task is not None:
            self._due = True
            self._task.cancel()

    def was_due(self) -> bool:
        """On a cancellation: True when it was the heartbeat's alone (then it is absorbed)."""
        self.waiting = False
        if not self._due:
            return False
        self._due = False
        assert self._task is not None
        return self._task.uncancel() == 0

    def stop(self) -> None:
        self.waiting = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _schedule_expiry(
    state: HandlerState, connection: ClientConnection, subscriber: Subscriber
) -> asyncio.TimerHandle | None:
    if subscriber.expires_at is None:
        return None
    # The verifier accepts a token up to LEEWAY_S past `exp` (clock skew);
    # the stream lives exactly as long as the token would verify.
    delay = max(0.0, subscriber.expires_at + LEEWAY_S - time.time())
    message = "token expired: reconnect with a fresh token and resume from your last position"
    close: Any = state.router.close_connection
    return asyncio.get_running_loop().call_later(
        delay, close, connection, CloseReason.CREDENTIAL_EXPIRED, message
    )
