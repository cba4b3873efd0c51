"""A plain reference model of the routing rule, and helpers the routing tests share.

The model restates the table of GUIDE.md on its own small types; it imports
nothing from the server's registry or filters, so a bug there cannot hide in
the model too.  The adapters below only *translate* model values into the
server's core or protobuf types.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import grpc

from eventrouter.server.core import connections as core_conn
from eventrouter.server.core import filters as core_filters
from eventrouter.v1 import events_pb2 as ev
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import routing_pb2 as rt
from tests.support.servers import user_metadata

# ---------------------------------------------------------------------------
# Scopes and filters
# ---------------------------------------------------------------------------

ScopeKind = Literal["user", "session", "machine"]
FilterKind = Literal[
    "all", "user_scoped_only", "interested_in_session", "machine_scoped_only", "machine_only"
]
FILTER_KINDS: tuple[FilterKind, ...] = (
    "all",
    "user_scoped_only",
    "interested_in_session",
    "machine_scoped_only",
    "machine_only",
)


@dataclass(frozen=True, slots=True)
class Scope:
    """What a connection is: user-scoped, or the watcher of a session / daemon of a machine."""

    kind: ScopeKind
    ref: str = ""

    def __str__(self) -> str:
        return self.kind if self.kind == "user" else f"{self.kind}:{self.ref}"


@dataclass(frozen=True, slots=True)
class Filter:
    """Which of a user's connections an emit selects; ``ref`` is the session/machine id."""

    kind: FilterKind
    ref: str = ""

    def __str__(self) -> str:
        return self.kind if not self.ref else f"{self.kind}({self.ref})"


USER = Scope("user")


def session(session_id: str) -> Scope:
    return Scope("session", session_id)


def machine(machine_id: str) -> Scope:
    return Scope("machine", machine_id)


def routes(flt: Filter, scope: Scope) -> bool:
    """The routing table of GUIDE.md, one row per filter."""
    if flt.kind == "all":
        return True
    if flt.kind == "user_scoped_only":
        return scope.kind == "user"
    if flt.kind == "interested_in_session":
        return scope.kind == "user" or (scope.kind == "session" and scope.ref == flt.ref)
    if flt.kind == "machine_scoped_only":
        return scope.kind == "user" or (scope.kind == "machine" and scope.ref == flt.ref)
    if flt.kind == "machine_only":
        return scope.kind == "machine" and scope.ref == flt.ref
    raise AssertionError(flt)


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivered:
    """One event as a connection sees it: its kind, test-chosen id and (updates) offset."""

    kind: Literal["update", "ephemeral"]
    event_id: str
    offset: int = 0


@dataclass(frozen=True, slots=True)
class ModelConnection:
    connection_id: str
    user_id: str
    scope: Scope


@dataclass(frozen=True, slots=True)
class ModelUpdate:
    offset: int
    event_id: str
    flt: Filter
    skip: str | None


@dataclass
class RoutingModel:
    """Who receives what: connections per user, received events per connection, offsets."""

    users: dict[str, dict[str, ModelConnection]] = field(default_factory=dict)
    received: dict[str, list[Delivered]] = field(default_factory=dict)
    history: dict[str, list[ModelUpdate]] = field(default_factory=dict)

    def head(self, user_id: str) -> int:
        return len(self.history.get(user_id, ()))

    def add(
        self, user_id: str, connection_id: str, scope: Scope, resume_after: int | None = None
    ) -> list[Delivered]:
        """Open a connection; with ``resume_after``, what it is replayed first."""
        conn = ModelConnection(connection_id, user_id, scope)
        self.users.setdefault(user_id, {})[connection_id] = conn
        replay: list[Delivered] = []
        if resume_after is not None:
            replay = [
                Delivered("update", u.event_id, u.offset)
                for u in self.history.get(user_id, ())
                if u.offset > resume_after and routes(u.flt, scope) and u.skip != connection_id
            ]
        self.received[connection_id] = list(replay)
        return replay

    def remove(self, connection_id: str) -> None:
        for conns in self.users.values():
            conns.pop(connection_id, None)

    def connections(self, user_id: str) -> list[ModelConnection]:
        return list(self.users.get(user_id, {}).values())

    def recipients(self, user_id: str, flt: Filter, skip: str | None) -> list[str]:
        return [
            c.connection_id
            for c in self.users.get(user_id, {}).values()
            if routes(flt, c.scope) and c.connection_id != skip
        ]

    def emit_update(
        self, user_id: str, event_id: str, flt: Filter, skip: str | None = None
    ) -> tuple[int, int]:
        """Returns (reached, offset)."""
        updates = self.history.setdefault(user_id, [])
        offset = len(updates) + 1
        updates.append(ModelUpdate(offset, event_id, flt, skip))
        targets = self.recipients(user_id, flt, skip)
        for cid in targets:
            self.received[cid].append(Delivered("update", event_id, offset))
        return len(targets), offset

    def emit_ephemeral(
        self, user_id: str, event_id: str, flt: Filter, skip: str | None = None
    ) -> int:
        targets = self.recipients(user_id, flt, skip)
        for cid in targets:
            self.received[cid].append(Delivered("ephemeral", event_id))
        return len(targets)


class ModelQueue:
    """The overflow policy of a connection's queue, restated.

    When an event does not fit (count or bytes), pending ephemerals are dropped
    oldest first until it does; an ephemeral that still does not fit is
    dropped; an update that still does not fit closes the queue.  With
    ``overdraft`` > 1 the bounds are that many times the limits: a queue
    within its overflow grace (core/queue.py).
    """

    def __init__(self, max_events: int, max_bytes: int, overdraft: int = 1) -> None:
        self.max_events = max_events * overdraft
        self.max_bytes = max_bytes * overdraft
        self.items: deque[tuple[bool, int]] = deque()
        self.bytes = 0
        self.dropped = 0
        self.closed = False

    def _fits(self, size: int) -> bool:
        return len(self.items) < self.max_events and self.bytes + size <= self.max_bytes

    def push(self, is_update: bool, size: int) -> bool:
        if self.closed:
            return False
        while not self._fits(size):
            oldest = next((i for i, (upd, _) in enumerate(self.items) if not upd), None)
            if oldest is None:
                break
            self.bytes -= self.items[oldest][1]
            del self.items[oldest]
            self.dropped += 1
        if not self._fits(size):
            if is_update:
                self.closed = True
                self.items.clear()
                self.bytes = 0
            else:
                self.dropped += 1
            return False
        self.items.append((is_update, size))
        self.bytes += size
        return True

    @property
    def pending_updates(self) -> int:
        return sum(1 for is_update, _ in self.items if is_update)


# ---------------------------------------------------------------------------
# Adapters: model values -> server core / protobuf
# ---------------------------------------------------------------------------


def core_filter(flt: Filter) -> core_filters.RecipientFilter:
    match flt.kind:
        case "all":
            return core_filters.AllUserAuthenticatedConnections()
        case "user_scoped_only":
            return core_filters.UserScopedOnly()
        case "interested_in_session":
            return core_filters.AllInterestedInSession(flt.ref)
        case "machine_scoped_only":
            return core_filters.MachineScopedOnly(flt.ref)
        case "machine_only":
            return core_filters.MachineOnly(flt.ref)
    raise AssertionError(flt)


def proto_filter(flt: Filter) -> rt.RecipientFilter:
    match flt.kind:
        case "all":
            return rt.RecipientFilter(
                all_user_authenticated_connections=rt.AllUserAuthenticatedConnections()
            )
        case "user_scoped_only":
            return rt.RecipientFilter(user_scoped_only=rt.UserScopedOnly())
        case "interested_in_session":
            return rt.RecipientFilter(
                all_interested_in_session=rt.AllInterestedInSession(session_id=flt.ref)
            )
        case "machine_scoped_only":
            return rt.RecipientFilter(machine_scoped_only=rt.MachineScopedOnly(machine_id=flt.ref))
        case "machine_only":
            return rt.RecipientFilter(machine_only=rt.MachineOnly(machine_id=flt.ref))
    raise AssertionError(flt)


def core_connection(user_id: str, scope: Scope) -> core_conn.ClientConnection:
    if scope.kind == "user":
        return core_conn.UserScopedConnection(user_id)
    if scope.kind == "session":
        return core_conn.SessionScopedConnection(user_id, session_id=scope.ref)
    return core_conn.MachineScopedConnection(user_id, machine_id=scope.ref)


def proto_scope(scope: Scope) -> rt.ConnectionScope:
    if scope.kind == "user":
        return rt.ConnectionScope(user=rt.UserScope())
    if scope.kind == "session":
        return rt.ConnectionScope(session=rt.SessionScope(session_id=scope.ref))
    return rt.ConnectionScope(machine=rt.MachineScope(machine_id=scope.ref))


def scope_of_proto(scope: rt.ConnectionScope) -> Scope:
    kind = scope.WhichOneof("scope")
    if kind == "user":
        return USER
    if kind == "session":
        return session(scope.session.session_id)
    if kind == "machine":
        return machine(scope.machine.machine_id)
    raise AssertionError(scope)


# ---------------------------------------------------------------------------
# Events: payloads carrying a test-chosen id, and reading them back
# ---------------------------------------------------------------------------


def update_payload(event_id: str, pad: int = 0) -> ev.UpdatePayload:
    """A valid update whose ``id`` is ``event_id``; ``pad`` adds that many bytes."""
    return ev.UpdatePayload(
        id=event_id,
        seq=1,
        body=ev.UpdateEvent(new_feed_post=ev.NewFeedPost(id=event_id, cursor="x" * pad)),
        created_at_ms=1,
    )


def ephemeral_payload(event_id: str, pad: int = 0) -> ev.EphemeralPayload:
    """A valid ephemeral event carrying ``event_id`` (as its session id)."""
    return ev.EphemeralPayload(
        activity=ev.SessionActivity(session_id=event_id + "x" * pad, active=True, active_at_ms=1)
    )


def delivered(event: pb.StreamEvent) -> Delivered | None:
    """The model's view of a stream event (None for opened/heartbeat)."""
    kind = event.WhichOneof("event")
    if kind == "update":
        return Delivered("update", event.update.payload.id, event.update.position.offset)
    if kind == "ephemeral":
        return Delivered("ephemeral", event.ephemeral.activity.session_id)
    return None


def take_queued_events(connection: core_conn.ClientConnection) -> list[pb.StreamEvent]:
    """Everything queued for ``connection`` (drained), parsed as the stream would carry it."""
    queue = connection.queue
    assert queue is not None
    frames: list[bytes] = []
    while queue.has_pending():
        frames.extend(queue.drain())
    return list(pb.SubscribeResponse.FromString(b"".join(frames)).events)


def take_queued(connection: core_conn.ClientConnection) -> list[Delivered]:
    """``take_queued_events`` as the model sees them."""
    out = [delivered(e) for e in take_queued_events(connection)]
    assert None not in out  # only events are queued: no opened or heartbeat frames
    return [d for d in out if d is not None]


def update_request(
    user_id: str, event_id: str, flt: Filter | None = None, skip: str | None = None, pad: int = 0
) -> pb.EmitRequest:
    request = pb.EmitRequest(user_id=user_id, update=update_payload(event_id, pad))
    if flt is not None:
        request.recipient_filter.CopyFrom(proto_filter(flt))
    if skip:
        request.skip_connection_id = skip
    return request


def ephemeral_request(
    user_id: str,
    event_id: str,
    flt: Filter | None = None,
    skip: str | None = None,
    idempotency_key: str = "",
) -> pb.EmitRequest:
    request = pb.EmitRequest(
        user_id=user_id, ephemeral=ephemeral_payload(event_id), idempotency_key=idempotency_key
    )
    if flt is not None:
        request.recipient_filter.CopyFrom(proto_filter(flt))
    if skip:
        request.skip_connection_id = skip
    return request


# ---------------------------------------------------------------------------
# Waiting and reading, always with a deadline
# ---------------------------------------------------------------------------

READ_TIMEOUT_S = 10.0


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    within_s: float = READ_TIMEOUT_S,
    what: str = "condition",
) -> None:
    """Poll ``predicate`` (sync or async) until it holds; fail after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class StreamReader:
    """Reads a raw Subscribe call event by event, every read bounded by a deadline."""

    def __init__(
        self, call: Any, opened: pb.ConnectionOpened, resume_from: pb.StreamPosition | None = None
    ) -> None:
        self.call = call
        self.opened = opened
        self.resume_from = resume_from
        self._buffer: deque[pb.StreamEvent] = deque()
        # Updates and ephemerals read so far (heartbeats left out).
        self.received: list[Delivered] = []
        self.heartbeats = 0

    @property
    def connection_id(self) -> str:
        return self.opened.connection_id

    @property
    def last_position(self) -> pb.StreamPosition:
        """The position to resume from.

        The last update read; before any, ``opened.position`` (on a resumed
        stream that is the position it resumed from, so the replayed updates
        not read yet are replayed again).
        """
        position = pb.StreamPosition()
        position.CopyFrom(self.opened.position)
        for d in reversed(self.received):
            if d.kind == "update":
                position.offset = d.offset
                break
        return position

    async def next_event(self, within_s: float = READ_TIMEOUT_S) -> pb.StreamEvent:
        """The next event; raises AioRpcError when the stream ends with a status."""
        while not self._buffer:
            async with asyncio.timeout(within_s):
                message = await self.call.read()
            if message is grpc.aio.EOF:
                raise EOFError("stream ended without a status")
            self._buffer.extend(message.events)
        event = self._buffer.popleft()
        d = delivered(event)
        if d is not None:
            self.received.append(d)
        elif event.WhichOneof("event") == "heartbeat":
            self.heartbeats += 1
        return event

    async def read_until(self, event_id: str, within_s: float = READ_TIMEOUT_S) -> list[Delivered]:
        """Read through the update ``event_id`` (a marker); the events before it."""
        start = len(self.received)
        while True:
            event = await self.next_event(within_s)
            if event.WhichOneof("event") == "update" and event.update.payload.id == event_id:
                return self.received[start:-1]

    async def read_until_status(self, within_s: float = READ_TIMEOUT_S) -> grpc.aio.AioRpcError:
        """Read what is buffered until the stream's final status; return that status."""
        while True:
            try:
                await self.next_event(within_s)
            except grpc.aio.AioRpcError as e:
                return e

    def cancel(self) -> None:
        self.call.cancel()


async def subscribe(
    stub: Any,
    user_id: str,
    scope: Scope | rt.ConnectionScope,
    resume_from: pb.StreamPosition | None = None,
    heartbeat_interval_ms: int = 0,
) -> StreamReader:
    """Open a Subscribe with the generated stub and read its ``opened`` event."""
    request = pb.SubscribeRequest(
        scope=proto_scope(scope) if isinstance(scope, Scope) else scope,
        heartbeat_interval_ms=heartbeat_interval_ms,
    )
    if resume_from is not None:
        request.resume_from.CopyFrom(resume_from)
    call = stub.Subscribe(request, metadata=user_metadata(user_id))
    async with asyncio.timeout(READ_TIMEOUT_S):
        first = await call.read()
    if first is grpc.aio.EOF:
        raise EOFError("stream ended before it opened")
    assert first.events[0].WhichOneof("event") == "opened", first
    reader = StreamReader(call, first.events[0].opened, resume_from)
    reader._buffer.extend(first.events[1:])
    return reader


async def connection_ids(stub: Any, user_id: str) -> list[str]:
    response = await stub.GetConnections(pb.GetConnectionsRequest(user_id=user_id))
    return [c.connection_id for c in response.connections]


def joined(events: Iterable[Delivered]) -> list[str]:
    """Compact rendering for assertion messages."""
    return [f"{d.kind[0]}:{d.event_id}@{d.offset}" for d in events]


# The matrix both routing suites check: five connections of one user, the five
# filters (with s1/m1 as their ids), and GUIDE.md's table written out for them
# by hand — who receives each filter.
MATRIX_SCOPES: list[Scope] = [USER, session("s1"), session("s2"), machine("m1"), machine("m2")]
MATRIX_FILTERS: list[Filter] = [
    Filter("all"),
    Filter("user_scoped_only"),
    Filter("interested_in_session", "s1"),
    Filter("machine_scoped_only", "m1"),
    Filter("machine_only", "m1"),
]
MATRIX_SPEC: dict[str, set[str]] = {
    "all": {"user", "session:s1", "session:s2", "machine:m1", "machine:m2"},
    "user_scoped_only": {"user"},
    "interested_in_session": {"user", "session:s1"},
    "machine_scoped_only": {"user", "machine:m1"},
    "machine_only": {"machine:m1"},
}
