"""Typed subscription events, and the subscription logic both clients share.

``SubscriptionState`` is the whole logic of a subscription without any I/O:
it builds each ``SubscribeRequest`` (resuming after the last position seen),
turns each ``SubscribeResponse`` into typed events, and decides after a
stream ends whether to reconnect and after how long. ``SubscriptionCore``
holds what the asyncio and the blocking subscriptions share around it, so
each of them is only its read loop.

Where the resume guarantee stops: the router replays every update after the
position *that was routed to this connection*, or says it cannot
(``RefetchRequired``); ephemerals are never replayed, so those sent while
the subscription was reconnecting are lost by design.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from eventrouter.client._calls import (
    Backoff,
    Credentials,
    Undecodable,
    UndecodableMessageError,
    call_metadata,
    make_error,
)
from eventrouter.v1 import events_pb2, routing_pb2
from eventrouter.v1 import router_service_pb2 as pb

__all__ = [
    "Connected",
    "EphemeralReceived",
    "Heartbeat",
    "ReconnectPolicy",
    "Reconnecting",
    "RefetchRequired",
    "SubscriptionEvent",
    "UpdateReceived",
]


@dataclass(frozen=True, slots=True)
class UpdateReceived:
    """A persistent update and its position in the user's stream."""

    payload: events_pb2.UpdatePayload
    position: pb.StreamPosition


@dataclass(frozen=True, slots=True)
class EphemeralReceived:
    """A transient event (never replayed after a reconnect)."""

    payload: events_pb2.EphemeralPayload


@dataclass(frozen=True, slots=True)
class RefetchRequired:
    """Resume failed: updates may have been missed, so reload your state, then read on.

    ``reason`` is ``"epoch_changed"`` (the router lost its history, e.g. it
    restarted), ``"too_old"`` (the gap is longer than the history it keeps)
    or ``"unknown_position"``. ``position`` is where the live stream starts.
    """

    reason: str
    position: pb.StreamPosition


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The server's keep-alive on an idle stream (yielded only with ``include_control``)."""

    server_time_ms: int


@dataclass(frozen=True, slots=True)
class Connected:
    """A stream was opened, or re-opened (yielded only with ``include_control``)."""

    opened: pb.ConnectionOpened


@dataclass(frozen=True, slots=True)
class Reconnecting:
    """A stream ended and a new one opens after ``delay_s`` (only with ``include_control``).

    ``code`` and ``details`` say why the stream ended (a stream that ended
    without a status counts as UNAVAILABLE). ``attempt`` counts the
    consecutive failed attempts, this one included (0 when an expired
    credential is refreshed and the stream reopens at once);
    ``max_attempts`` is the policy's limit (None: no limit). After the last
    attempt the subscription raises instead.
    """

    code: grpc.StatusCode
    details: str
    attempt: int
    max_attempts: int | None
    delay_s: float


SubscriptionEvent = (
    UpdateReceived | EphemeralReceived | RefetchRequired | Heartbeat | Connected | Reconnecting
)


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How a subscription comes back after its stream ended.

    Waits follow ``backoff`` (exponential, full jitter); the count restarts
    after a stream that made progress (delivered something after ``opened``,
    or stayed open ``healthy_after_s``). ``max_attempts`` consecutive failed
    attempts give up (None: never). ``enabled=False`` raises on any end.
    """

    enabled: bool = True
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=0.1, max_s=10.0))
    healthy_after_s: float = 5.0
    max_attempts: int | None = None


# Codes a reconnect cannot fix: the request or the credential is wrong, or
# the server does not implement the call.
FATAL_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)

_FAILURE_REASON = {
    pb.RESUME_FAILURE_EPOCH_CHANGED: "epoch_changed",
    pb.RESUME_FAILURE_TOO_OLD: "too_old",
    pb.RESUME_FAILURE_UNKNOWN_POSITION: "unknown_position",
}


def _copy(position: pb.StreamPosition) -> pb.StreamPosition:
    return pb.StreamPosition(offset=position.offset, epoch=position.epoch)


class SubscriptionState:
    """Position, connection and reconnect bookkeeping of one subscription (no I/O)."""

    def __init__(
        self,
        scope: routing_pb2.ConnectionScope,
        *,
        resume_from: pb.StreamPosition | None = None,
        heartbeat_ms: int = 0,
        policy: ReconnectPolicy | None = None,
        include_control: bool = False,
        refreshable_credentials: bool = False,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if scope.WhichOneof("scope") is None:
            raise TypeError("scope: set one of user, session, machine (see user_scope() & co.)")
        self.scope = scope
        self.heartbeat_ms = heartbeat_ms
        self.policy = policy or ReconnectPolicy()
        self.include_control = include_control
        self.refreshable_credentials = refreshable_credentials
        self._clock = clock
        self._rand = rand
        self._position: pb.StreamPosition | None = (
            None if resume_from is None else _copy(resume_from)
        )
        self.opened: pb.ConnectionOpened | None = None
        self.opens = 0
        # Consecutive failed attempts, for the backoff.
        self.failures = 0
        # Resume bookkeeping of the current stream: updates still to come from
        # the replay, and the head to adopt once they have all arrived.
        self._replay_left = 0
        self._head_at_open: pb.StreamPosition | None = None
        self._opened_at: float | None = None
        self._progress = False

    # -- what callers read ---------------------------------------------------

    @property
    def connection_id(self) -> str | None:
        return self.opened.connection_id if self.opened is not None else None

    @property
    def position(self) -> pb.StreamPosition | None:
        """The last position seen (a copy); resume after it to miss nothing."""
        return None if self._position is None else _copy(self._position)

    @property
    def reconnects(self) -> int:
        return max(0, self.opens - 1)

    def idle_timeout_s(self) -> float | None:
        """How long a stream with heartbeats may stay silent before it counts as dead."""
        if self.opened is None or not self.opened.heartbeat_interval_ms:
            return None
        return 3 * self.opened.heartbeat_interval_ms / 1000 + 1.0

    # -- one stream ----------------------------------------------------------

    def request(self) -> pb.SubscribeRequest:
        """The request for the next stream: resumes after the last position seen, if any."""
        request = pb.SubscribeRequest(scope=self.scope, heartbeat_interval_ms=self.heartbeat_ms)
        if self._position is not None:
            request.resume_from.CopyFrom(self._position)
            # Updates this client emitted skipping its old connection are not echoed.
            if self.connection_id:
                request.previous_connection_id = self.connection_id
        self._opened_at = None
        self._progress = False
        return request

    def on_response(self, response: pb.SubscribeResponse) -> list[SubscriptionEvent]:
        """The events of one stream message, in order, with the bookkeeping done."""
        out: list[SubscriptionEvent] = []
        for event in response.events:
            kind = event.WhichOneof("event")
            if kind == "update":
                received = self._on_update(event.update)
                if received is not None:
                    out.append(received)
            elif kind == "ephemeral":
                out.append(EphemeralReceived(event.ephemeral))
            elif kind == "opened":
                out.extend(self._on_opened(event.opened))
                continue
            elif kind == "heartbeat" and self.include_control:
                out.append(Heartbeat(event.heartbeat.server_time_ms))
            self._progress = True
        return out

    def _on_opened(self, opened: pb.ConnectionOpened) -> list[SubscriptionEvent]:
        self.opened = opened
        self.opens += 1
        self._opened_at = self._clock()
        out: list[SubscriptionEvent] = [Connected(opened)] if self.include_control else []
        resume = opened.resume
        self._replay_left = 0
        if resume.status == pb.RESUME_STATUS_RESUMED:
            # Replayed updates come first; only after the last of them is the
            # connection at the head it was registered at (updates routed
            # elsewhere do not come, so offsets may jump).
            self._head_at_open = _copy(opened.position)
            self._replay_left = resume.replayed
            if not self._replay_left:
                self._adopt_head()
        else:
            self._position = _copy(opened.position)
            if resume.status == pb.RESUME_STATUS_FAILED:
                reason = _FAILURE_REASON.get(resume.failure, "unknown")
                out.append(RefetchRequired(reason, _copy(opened.position)))
        return out

    def _adopt_head(self) -> None:
        head = self._head_at_open
        current = self._position
        if head is not None and (
            current is None or current.epoch != head.epoch or current.offset < head.offset
        ):
            self._position = head
        self._head_at_open = None

    def _on_update(self, delivery: pb.UpdateDelivery) -> UpdateReceived | None:
        position = delivery.position
        current = self._position
        replaying = self._replay_left > 0
        if replaying:
            self._replay_left -= 1
        duplicate = (
            current is not None
            and current.epoch == position.epoch
            and position.offset <= current.offset
        )
        if not duplicate:
            self._position = _copy(position)
        if replaying and not self._replay_left:
            self._adopt_head()
        return None if duplicate else UpdateReceived(delivery.payload, position)

    # -- between streams -----------------------------------------------------

    def on_stream_end(self, code: grpc.StatusCode | None, details: str = "") -> float:
        """A stream ended (``code`` None = it ended without a status); returns the wait.

        Raises the matching ``EventRouterError`` when reconnecting cannot help
        or is not allowed.
        """
        policy = self.policy
        code = code or grpc.StatusCode.UNAVAILABLE
        if (
            code == grpc.StatusCode.UNAUTHENTICATED
            and self.refreshable_credentials
            and self._opened_at is not None
            and policy.enabled
        ):
            # The credential was good when the stream opened and has expired
            # since: reopen now with a fresh one. If that one is refused too,
            # the handshake fails before `opened` and this raises.
            return 0.0
        if code in FATAL_CODES or not policy.enabled:
            raise make_error(code, details or "the stream ended")
        healthy = self._opened_at is not None and (
            self._progress or self._clock() - self._opened_at >= policy.healthy_after_s
        )
        if healthy:
            self.failures = 0
        self.failures += 1
        if policy.max_attempts is not None and self.failures > policy.max_attempts:
            raise make_error(code, f"{details} (gave up after {policy.max_attempts} reconnects)")
        return policy.backoff.delay(self.failures - 1, self._rand)


class SubscriptionCore:
    """What both subscription flavours share: state, buffer, the current call, closing.

    ``open_call`` is the stub's ``Subscribe`` multi-callable (asyncio or
    blocking); both flavours' calls have ``cancel()``.
    """

    def __init__(
        self,
        open_call: Callable[..., Any],
        state: SubscriptionState,
        credentials: Credentials | None,
    ) -> None:
        self._open_call = open_call
        self._state = state
        self._credentials = credentials
        self._buffer: deque[SubscriptionEvent] = deque()
        self._call: Any = None
        self._delay = 0.0
        self._closed = False

    @property
    def connection_id(self) -> str | None:
        """The id of the current connection (changes on reconnect); None before it opened."""
        return self._state.connection_id

    @property
    def opened(self) -> pb.ConnectionOpened | None:
        """The ``ConnectionOpened`` of the current stream."""
        return self._state.opened

    @property
    def position(self) -> pb.StreamPosition | None:
        """The last position handed out (initially ``ConnectionOpened.position``)."""
        return self._state.position

    @property
    def reconnects(self) -> int:
        """How many times a new stream was opened after the first."""
        return self._state.reconnects

    @property
    def pending(self) -> int:
        """Events received and not yet handed out."""
        return len(self._buffer)

    @property
    def closed(self) -> bool:
        return self._closed

    def _take(self, response: pb.SubscribeResponse | Undecodable) -> None:
        """Buffer the events of one stream message, or end on one that does not decode."""
        if isinstance(response, Undecodable):
            position = self._state.position
            after = f" after offset {position.offset}" if position is not None else ""
            self._mark_closed()
            raise UndecodableMessageError(
                grpc.StatusCode.INTERNAL,
                f"a stream message{after} could not be decoded ({response.reason});"
                " the subscription ends: a server newer than this client, or a payload"
                " nested deeper than this protobuf runtime decodes",
            )
        self._buffer.extend(self._state.on_response(response))

    def _start_call(self) -> Any:
        request = self._state.request()
        self._call = self._open_call(request, metadata=call_metadata(self._credentials))
        return self._call

    def _mark_closed(self) -> None:
        self._closed = True
        self._drop_call()

    def _drop_call(self) -> None:
        call, self._call = self._call, None
        if call is not None:
            call.cancel()

    def _stream_ended(
        self, code: grpc.StatusCode | None, details: str, cause: BaseException | None
    ) -> None:
        """Forget the call; plan the reconnect wait, or raise when there is none."""
        self._drop_call()
        if self._closed:
            return
        try:
            self._delay = self._state.on_stream_end(code, details)
        except Exception as error:
            self._closed = True
            raise error from cause
        state = self._state
        if state.include_control:
            self._buffer.append(
                Reconnecting(
                    code or grpc.StatusCode.UNAVAILABLE,
                    details,
                    state.failures,
                    state.policy.max_attempts,
                    self._delay,
                )
            )
