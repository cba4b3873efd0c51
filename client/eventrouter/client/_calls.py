"""What every call of both clients (asyncio and blocking) shares.

Credentials, the error hierarchy, backoff and retry decisions, default
channel options, and building + cheaply checking ``EmitRequest`` messages.
Nothing here performs I/O, so the asyncio client and the blocking client run
the very same decisions and differ only in how they wait.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from google.protobuf.message import DecodeError

from eventrouter.v1 import events_pb2, routing_pb2
from eventrouter.v1 import router_service_pb2 as pb

__all__ = [
    "DEFAULT_CHANNEL_OPTIONS",
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT_S",
    "USER_ID_METADATA_KEY",
    "Backoff",
    "BearerTokenCredentials",
    "Credentials",
    "DeadlineExceededError",
    "EventRouterError",
    "InvalidArgumentError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "Retrying",
    "UnauthenticatedError",
    "UnavailableError",
    "UndecodableMessageError",
    "UserIdCredentials",
]

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 10.0
# The insecure development credential (mirrors eventrouter.server.auth, which the
# client must not import: a service that installs the client has no server).
USER_ID_METADATA_KEY = "x-eventrouter-user-id"

ChannelOption = tuple[str, int | str]

# Defaults for every channel the clients open; ``options=`` entries override by name.
DEFAULT_CHANNEL_OPTIONS: tuple[ChannelOption, ...] = (
    # Detect a dead transport under a quiet stream. The server refuses pings
    # more often than every 10 s (GOAWAY), so stay above that.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC's own reconnect backoff grows to 120 s by default: a router that was
    # down for a minute would then stay unreachable long after it is back.
    # Keep it in the range of our retry/reconnect backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)


def channel_options(overrides: Iterable[ChannelOption] = ()) -> list[ChannelOption]:
    """The default options with ``overrides`` replacing same-named entries."""
    merged = dict(DEFAULT_CHANNEL_OPTIONS)
    merged.update(dict(overrides))
    return list(merged.items())


# ---------------------------------------------------------------------------
# Credentials
# ---------------------------------------------------------------------------


class Credentials(Protocol):
    """Supplies the call metadata that identifies the caller; asked once per call.

    A one-method interface so that a new scheme is a small class::

        class ApiKey:
            def __init__(self, key: str) -> None:
                self.key = key

            def metadata(self) -> Sequence[tuple[str, str]]:
                return [("x-api-key", self.key)]
    """

    def metadata(self) -> Sequence[tuple[str, str]]: ...


def is_refreshable(credentials: Credentials | None) -> bool:
    """Whether ``credentials`` may present a new credential on the next call.

    A provider says so with a true ``refreshable`` attribute. A stream the
    router ends because its credential expired (UNAUTHENTICATED after it was
    accepted) is then reopened once at once with the fresh credential.
    """
    return bool(getattr(credentials, "refreshable", False))


@dataclass(frozen=True, slots=True)
class UserIdCredentials:
    """The insecure development mode: the subscriber names its user in metadata."""

    user_id: str

    def metadata(self) -> Sequence[tuple[str, str]]:
        return ((USER_ID_METADATA_KEY, self.user_id),)


@dataclass(frozen=True, slots=True)
class BearerTokenCredentials:
    """``authorization: Bearer <token>``; pass a callable to fetch a fresh token per call."""

    token: str | Callable[[], str]

    @property
    def refreshable(self) -> bool:
        """True when each call may get a new token (a subscription then outlives expiry)."""
        return callable(self.token)

    def metadata(self) -> Sequence[tuple[str, str]]:
        token = self.token() if callable(self.token) else self.token
        return (("authorization", f"Bearer {token}"),)


def resolve_credentials(
    *,
    user_id: str | None = None,
    token: str | Callable[[], str] | None = None,
    credentials: Credentials | None = None,
    default: Credentials | None = None,
) -> Credentials | None:
    """At most one of ``user_id=``, ``token=``, ``credentials=``; none = ``default``."""
    given = [c for c in (user_id, token, credentials) if c is not None]
    if len(given) > 1:
        raise TypeError("pass at most one of user_id=, token=, credentials=")
    if user_id is not None:
        return UserIdCredentials(user_id)
    if token is not None:
        return BearerTokenCredentials(token)
    return credentials if credentials is not None else default


def call_metadata(credentials: Credentials | None) -> tuple[tuple[str, str], ...] | None:
    return None if credentials is None else tuple(credentials.metadata())


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

_FIELD_PREFIX = re.compile(r"^([A-Za-z_][\w.\[\]]*): ")


class EventRouterError(Exception):
    """A call failed. Both clients raise only this hierarchy for RPC failures.

    ``code`` is the gRPC status, ``details`` the server's message and
    ``field`` the request field it names (``"emits[2].update.id"``), when it
    names one. The original ``grpc.RpcError`` (async or blocking flavour) is
    the ``__cause__``. Subclasses exist for the codes a caller acts on.
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}" if details else code.name)
        self.code = code
        self.details = details
        match = _FIELD_PREFIX.match(details)
        self.field: str | None = match.group(1) if match else None


class InvalidArgumentError(EventRouterError):
    """The request is malformed; also raised client-side before sending when that is cheap."""


class UnauthenticatedError(EventRouterError):
    """Missing or invalid credentials."""


class PermissionDeniedError(EventRouterError):
    """Valid credentials that may not do this (or access was revoked mid-stream)."""


class UnavailableError(EventRouterError):
    """The router could not be reached (after the retries the policy allows)."""


class ResourceExhaustedError(EventRouterError):
    """An event or request over the server's size limit."""


class DeadlineExceededError(EventRouterError):
    """The per-call deadline passed."""


class UndecodableMessageError(EventRouterError):
    """A stream message this client's protobuf runtime could not decode; the subscription ends.

    The server refuses at Emit what subscribers cannot decode, so this means
    a server or contract mismatch.  Resuming would meet the same message
    again, so the subscription does not reconnect by itself.
    """


class Undecodable:
    """What the Subscribe deserializer returns for bytes that do not parse."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def decode_subscribe_response(data: bytes) -> pb.SubscribeResponse | Undecodable:
    """Subscribe's response deserializer: never raises (grpc would drop the message)."""
    try:
        return pb.SubscribeResponse.FromString(data)
    except DecodeError as e:
        return Undecodable(str(e))


SUBSCRIBE_METHOD = "/eventrouter.v1.EventRouterService/Subscribe"


def subscribe_callable(channel: Any) -> Any:
    """The Subscribe multi-callable of ``channel`` (asyncio or blocking) with that deserializer."""
    return channel.unary_stream(
        SUBSCRIBE_METHOD,
        request_serializer=pb.SubscribeRequest.SerializeToString,
        response_deserializer=decode_subscribe_response,
    )


_ERROR_BY_CODE: dict[grpc.StatusCode, type[EventRouterError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}


def make_error(code: grpc.StatusCode, details: str) -> EventRouterError:
    return _ERROR_BY_CODE.get(code, EventRouterError)(code, details)


def error_from_rpc(error: grpc.RpcError) -> EventRouterError:
    """Wrap a ``grpc.RpcError`` / ``grpc.aio.AioRpcError``; raise the result ``from error``."""
    code: Any = error.code()
    details: Any = error.details()
    return make_error(code if code is not None else grpc.StatusCode.UNKNOWN, details or "")


def invalid(field_path: str, message: str) -> InvalidArgumentError:
    return InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT, f"{field_path}: {message}")


# ---------------------------------------------------------------------------
# Backoff and retry decisions
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits U(0, min(max_s, base_s * 2**n)).

    Full jitter spreads the reconnects of many clients cut off at once (a
    router restart) over the whole window instead of bunching them up.
    """

    base_s: float = 0.1
    max_s: float = 10.0

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.max_s < self.base_s:
            raise ValueError("Backoff needs 0 < base_s <= max_s")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        ceiling = self.max_s if attempt >= 60 else min(self.max_s, self.base_s * 2**attempt)
        return rand() * ceiling


_RETRIED_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a unary call (Emit, EmitBatch, GetConnections) is tried again.

    UNAVAILABLE is retried (the call did not reach the router, or the router
    went away), and CANCELLED from the server (a router shutting down ends
    calls it did not finish). A retried call may have been applied the first time,
    so only calls that are safe to repeat are retried: updates (the router
    drops a repeat of a recent update ``id``), ephemerals that carry an
    ``idempotency_key`` (same, by key), and GetConnections (a read). An
    ephemeral without a key has nothing the router could recognise it by, so
    a retry might show it twice; it fails with ``UnavailableError`` instead.
    ``max_attempts`` counts the first try; each try has the client's timeout.
    """

    max_attempts: int = 5
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=0.05, max_s=2.0))

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def next_delay(self, code: grpc.StatusCode | None, attempt: int, safe: bool) -> float | None:
        """Seconds to wait before another try after try number ``attempt`` (1-based), or None."""
        if code not in _RETRIED_CODES or not safe or attempt >= self.max_attempts:
            return None
        return self.backoff.delay(attempt - 1)


class Retrying:
    """The retry state of one call: ask it what to do after each failed try.

    Both clients drive it the same way, each with its own way to wait::

        retrying = Retrying(policy, safe)
        while True:
            try:
                return call()
            except grpc.RpcError as e:
                time.sleep(retrying.delay_after(e))  # raises when done
    """

    __slots__ = ("attempt", "policy", "safe")

    def __init__(self, policy: RetryPolicy, safe: bool) -> None:
        self.policy = policy
        self.safe = safe
        self.attempt = 0

    def delay_after(self, error: grpc.RpcError) -> float:
        """Seconds to wait before the next try; raises the wrapped error when there is none."""
        self.attempt += 1
        delay = self.policy.next_delay(error.code(), self.attempt, self.safe)
        if delay is None:
            raise error_from_rpc(error) from error
        return delay


# ---------------------------------------------------------------------------
# Emit requests
# ---------------------------------------------------------------------------


def update_request(
    user_id: str,
    payload: events_pb2.UpdatePayload,
    recipient_filter: routing_pb2.RecipientFilter | None = None,
    skip_connection_id: str | None = None,
) -> pb.EmitRequest:
    request = pb.EmitRequest(user_id=user_id, update=payload)
    return _route(request, recipient_filter, skip_connection_id)


def ephemeral_request(
    user_id: str,
    payload: events_pb2.EphemeralPayload,
    recipient_filter: routing_pb2.RecipientFilter | None = None,
    skip_connection_id: str | None = None,
    idempotency_key: str | None = None,
) -> pb.EmitRequest:
    request = pb.EmitRequest(user_id=user_id, ephemeral=payload)
    if idempotency_key:
        request.idempotency_key = idempotency_key
    return _route(request, recipient_filter, skip_connection_id)


def _route(
    request: pb.EmitRequest,
    recipient_filter: routing_pb2.RecipientFilter | None,
    skip_connection_id: str | None,
) -> pb.EmitRequest:
    if recipient_filter is not None:
        request.recipient_filter.CopyFrom(recipient_filter)
    if skip_connection_id:
        request.skip_connection_id = skip_connection_id
    return request


_FILTER_IDS = {
    "all_interested_in_session": "session_id",
    "machine_scoped_only": "machine_id",
    "machine_only": "machine_id",
}


def check_request(request: pb.EmitRequest, prefix: str = "") -> None:
    """Reject, before sending, what the router would surely reject (field names as it names them).

    Only the cheap structural checks: the router stays the authority (id
    charset and length, relationship status, usage keys, sizes). A batch
    with one bad item is rejected whole by the router, so catching the
    common mistakes here keeps them from costing the other callers a
    round trip.
    """
    if not request.user_id:
        raise invalid(f"{prefix}user_id", "must be non-empty")
    kind = request.WhichOneof("payload")
    if kind == "update":
        if not request.update.id:
            raise invalid(f"{prefix}update.id", "must be non-empty (it is the idempotency key)")
        if request.update.body.WhichOneof("event") is None:
            raise invalid(f"{prefix}update.body.event", "no update event is set")
    elif kind == "ephemeral":
        if request.ephemeral.WhichOneof("event") is None:
            raise invalid(f"{prefix}ephemeral.event", "no ephemeral event is set")
    else:
        raise invalid(f"{prefix}payload", "required: set update or ephemeral")
    if request.HasField("recipient_filter"):
        which = request.recipient_filter.WhichOneof("filter")
        id_field = _FILTER_IDS.get(which or "")
        if id_field and not getattr(getattr(request.recipient_filter, which or ""), id_field):
            raise invalid(f"{prefix}recipient_filter.{which}.{id_field}", "must be non-empty")


def retry_safe(request: pb.EmitRequest) -> bool:
    """Whether repeating this emit cannot deliver it twice (see ``RetryPolicy``)."""
    return request.HasField("update") or bool(request.idempotency_key)


def batch_request(requests: Iterable[pb.EmitRequest]) -> tuple[pb.EmitBatchRequest, bool]:
    """A checked ``EmitBatchRequest`` and whether it is safe to repeat as a whole."""
    batch = pb.EmitBatchRequest(emits=list(requests))
    for i, emit in enumerate(batch.emits):
        check_request(emit, f"emits[{i}].")
    return batch, all(retry_safe(r) for r in batch.emits)
