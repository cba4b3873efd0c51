"""``EventRouter``: Happy's router API, in Python, embeddable in any process.

Emitting an update takes one straight path:
validate -> idempotency check -> serialize once -> number it in the user's
history -> select recipients from the index -> append the same frame to each
recipient's bounded queue.  Everything runs on one event loop without
awaiting, so the emits for a user are numbered and queued in the order they
were accepted, and every connection of that user sees that one order.

Nothing here ever waits for a connection: a push into a queue returns at
once, and a slow consumer costs its own queue (see core/queue.py) and
nothing else.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import Callable, Sequence

from eventrouter.server.core import wire
from eventrouter.server.core.connections import ClientConnection
from eventrouter.server.core.emit_checks import EmitChecks, FilterInput
from eventrouter.server.core.filters import RecipientFilter
from eventrouter.server.core.history import (
    HistoryEntry,
    MemoryHistory,
)
from eventrouter.server.core.idempotency import IdempotencyCache
from eventrouter.server.core.queue import CROWDED, CloseReason, ConnectionQueue
from eventrouter.server.core.registry import ConnectionRegistry, accepts
from eventrouter.server.core.results import (
    EmitResult,
    OpenResult,
    ResumeStatus,
    RouterLimits,
    RouterStats,
)
from eventrouter.server.core.validation import InvalidArgument
from eventrouter.v1 import events_pb2

SkipInput = ClientConnection | str | None

# At most this many bytes, besides the epoch, wrap a payload into a stream
# frame (see wire.update_frame): four 1-byte tags with 5-byte lengths, the
# offset's tag and 10-byte varint, the epoch's tag and 2-byte length.
_FRAME_OVERHEAD = 4 * (1 + 5) + (1 + 10) + (1 + 2)


class EventRouter(EmitChecks):
    """Routes a user's events to the subset of that user's connections a filter selects."""

    def __init__(self, limits: RouterLimits | None = None, node_id: str | None = None) -> None:
        self.limits = limits or RouterLimits()
        self.node_id = node_id or "node-" + secrets.token_hex(4)
        self.registry = ConnectionRegistry()
        self.history = MemoryHistory(self.limits.history)
        self.stats = RouterStats()
        self._recent: IdempotencyCache[EmitResult] = IdempotencyCache(
            self.limits.idempotency_window_s
        )
        # Set when a delivery took some queue to half full (or over its
        # limits): a caller applying many emits without yielding (a batch, a
        # catch-up) should yield once so that writers take what is queued.
        # A yield, never a wait: nothing that serves many users waits on one
        # connection.  The caller clears it.
        self.turn_wanted = False
        # Called with every connection the router unregisters itself (too slow, closed).
        self.on_connection_closed: Callable[[ClientConnection], None] | None = None

    # -- connections -----------------------------------------------------

    def add_connection(
        self,
        user_id: str,
        connection: ClientConnection,
        resume_from: tuple[int, str] | None = None,
    ) -> OpenResult:
        """Register a connection; with ``resume_from=(offset, epoch)``, queue the gap first.

        Replay and registration happen without yielding, so no live update
        can fall between the replayed ones and the first live one.
        """
        if connection.user_id != user_id:
            raise InvalidArgument("user_id", "does not match the connection's user")
        self.limits.ids.check(user_id, "user_id")
        stream = self.history.stream(user_id)
        status, failure = ResumeStatus.NOT_REQUESTED, None
        entries: Sequence[HistoryEntry] = ()
        if resume_from is not None:
            plan = self.history.plan_replay(user_id, *resume_from)
            status = ResumeStatus.FAILED if plan.failure else ResumeStatus.RESUMED
            failure, entries = plan.failure, plan.entries
        self.register(connection)
        replayed = self.queue_replay(connection, entries)
        self.count_resume(status)
        # A resumed stream starts where the client asked: the replayed updates
        # move it forward as they arrive, so resuming from here loses nothing.
        offset = resume_from[0] if status is ResumeStatus.RESUMED and resume_from else stream.head
        return OpenResult(status, failure, replayed, offset, stream.epoch)

    def register(self, connection: ClientConnection) -> None:
        """Add a connection to the index (no history involved), giving it a queue."""
        self.limits.ids.check(connection.user_id, "user_id")
        if connection.queue is None:
            connection.queue = ConnectionQueue(self.limits.queue)
        if connection.queue.on_dropped is None:
            connection.queue.on_dropped = self._count_dropped
        connection.queue.on_too_slow = functools.partial(self._closed_too_slow, connection)
        self.registry.add(connection)

    def _count_dropped(self, count: int) -> None:
        self.stats.ephemeral_dropped += count

    def queue_replay(self, connection: ClientConnection, entries: Sequence[HistoryEntry]) -> int:
        """Queue the history entries this connection would have received live.

        The queue keeps references to the entries (shared with the history
        and with every other resuming stream) and builds each frame as its
        writer takes it: a resume from far back costs a list of references,
        not a copy of the history.
        """
        if not entries:
            return 0
        assert connection.queue is not None
        reaching = [e for e in entries if self._replay_reaches(e, connection)]
        connection.queue.push_replay(reaching, through_offset=entries[-1].offset)
        return len(reaching)

    @staticmethod
    def _replay_reaches(entry: HistoryEntry, connection: ClientConnection) -> bool:
        skip = entry.skip_connection_id
        if skip is not None and skip in (
            connection.connection_id,
            connection.previous_connection_id,
        ):
            return False
        return accepts(entry.recipient_filter, connection)

    def count_resume(self, status: ResumeStatus) -> None:
        if status is ResumeStatus.RESUMED:
            self.stats.resumes_ok += 1
        elif status is ResumeStatus.FAILED:
            self.stats.resumes_failed += 1

    def remove_connection(self, user_id: str, connection: ClientConnection) -> None:
        """Unregister; safe to call more than once."""
        if connection.user_id == user_id:
            self.registry.remove(connection)

    def get_connections(self, user_id: str) -> list[ClientConnection]:
        """The user's open connections, oldest first."""
        return self.registry.of_user(user_id)

    def close_connection(
        self, connection: ClientConnection, reason: CloseReason, message: str
    ) -> None:
        """End one connection: its writer reports ``reason`` to the client."""
        if connection.queue is not None:
            connection.queue.close(reason, message)
        if self.registry.remove(connection) and self.on_connection_closed is not None:
            self.on_connection_closed(connection)

    def _closed_too_slow(self, connection: ClientConnection) -> None:
        """The connection's queue closed itself: its consumer did not keep up."""
        self.stats.closed_too_slow += 1
        self.close_connection(connection, CloseReason.TOO_SLOW, "")

    def close_all(self, reason: CloseReason, message: str) -> int:
        """End every connection (shutdown); returns how many were open."""
        connections = list(self.registry.all())
        for connection in connections:
            self.close_connection(connection, reason, message)
        return len(connections)

    # -- emitting --------------------------------------------------------

    def emit_update(
        self,
        user_id: str,
        payload: events_pb2.UpdatePayload,
        recipient_filter: FilterInput = None,
        skip_sender_connection: SkipInput = None,
    ) -> EmitResult:
        """Route a persistent update; a repeat of a recent ``payload.id`` is not delivered again."""
        target = self.check_update(user_id, payload, recipient_filter)
        return self.accept_update(user_id, payload, target, _skip_id(skip_sender_connection))

    def accept_update(
        self,
        user_id: str,
        payload: events_pb2.UpdatePayload,
        target: RecipientFilter,
        skip: str | None,
        data: bytes = b"",
    ) -> EmitResult:
        """``emit_update`` for a checked update (``data``: it serialized, if known)."""
        key = (user_id, "u", payload.id)
        earlier = self._recent.get(key)
        if earlier is not None:
            self.stats.duplicates += 1
            return EmitResult(earlier.reached, True, earlier.offset, earlier.epoch)
        entry = self.history.append(user_id, data or payload.SerializeToString(), target, skip)
        recipients = self.registry.select(user_id, target, skip)
        # Encoded only when a connection here receives it (a replay encodes it then).
        frame = entry.frame() if recipients else b""
        reached = self._push_update(recipients, entry.offset, frame)
        result = EmitResult(reached, False, entry.offset, entry.epoch)
        self._recent.put(key, result)
        return result

    def accept_update_run(
        self,
        user_id: str,
        payloads: Sequence[events_pb2.UpdatePayload],
        target: RecipientFilter,
        skip: str | None,
    ) -> list[EmitResult]:
        """``accept_update`` for consecutive updates with one user, filter and skip.

        Queued to each recipient in one step: the longest prefix of new ids,
        provided no recipient's queue would be left half full (one by one,
        writers drain there), with exactly the numbering, results and queue
        contents ``accept_update`` gives one at a time.  Returns the prefix's
        results: empty when the caller should go one by one.
        """
        keys: dict[tuple[str, str, str], None] = {}
        run: list[events_pb2.UpdatePayload] = []
        recent = self._recent
        for payload in payloads:
            key = (user_id, "u", payload.id)
            if key in keys or recent.get(key) is not None:
                break
            keys[key] = None
            run.append(payload)
        if len(run) < 2:
            return []
        recipients = self.registry.select(user_id, target, skip)
        queues = [c.queue for c in recipients if c.queue is not None]
        count = len(run)
        # Serialized before the queues are asked: their bound needs the sizes.
        # A refused run (a queue filling up, rare) is serialized again one by one.
        datas = [p.SerializeToString() for p in run]
        if queues:
            # An upper bound of the frames' size before they are numbered:
            # the payload plus tags, lengths, the offset and the epoch.
            overhead = _FRAME_OVERHEAD + len(self.history.stream(user_id).epoch)
            bound = sum(len(d) for d in datas) + overhead * count
            if any(not q.takes_run(count, bound) for q in queues):
                return []
        entries = [self.history.append(user_id, d, target, skip) for d in datas]
        if queues:
            items = [(e.offset, e.frame()) for e in entries]
            nbytes = sum(len(frame) for _, frame in items)
            for queue in queues:
                queue.push_run(items, nbytes)
        reached = len(queues)
        self.stats.updates_emitted += count
        self.stats.deliveries += reached * count
        results = []
        for key, entry in zip(keys, entries, strict=True):
            result = EmitResult(reached, False, entry.offset, entry.epoch)
            recent.put(key, result)
            results.append(result)
        return results

    def emit_ephemeral(
        self,
        user_id: str,
        payload: events_pb2.EphemeralPayload,
        recipient_filter: FilterInput = None,
        skip_sender_connection: SkipInput = None,
        *,
        idempotency_key: str | None = None,
    ) -> EmitResult:
        """Route a transient event to the connections open now; nothing is kept."""
        target = self.check_ephemeral(user_id, payload, recipient_filter)
        return self.accept_ephemeral(
            user_id, payload, target, _skip_id(skip_sender_connection), idempotency_key
        )

    def accept_ephemeral(
        self,
        user_id: str,
        payload: events_pb2.EphemeralPayload,
        target: RecipientFilter,
        skip: str | None,
        idempotency_key: str | None = None,
    ) -> EmitResult:
        """``emit_ephemeral`` for an event ``check_ephemeral`` already accepted."""
        key = (user_id, "e", idempotency_key) if idempotency_key else None
        if key is not None:
            earlier = self._recent.get(key)
            if earlier is not None:
                self.stats.duplicates += 1
                return EmitResult(earlier.reached, True)
        recipients = self.registry.select(user_id, target, skip)
        frame = wire.ephemeral_frame(payload.SerializeToString()) if recipients else b""
        result = EmitResult(self._push_ephemeral(recipients, frame))
        if key is not None:
            self._recent.put(key, result)
        return result

    # -- local fan-out (brokers call these) -------------------------------

    def deliver_update(
        self,
        user_id: str,
        offset: int,
        frame: bytes,
        target: RecipientFilter,
        skip: str | None,
    ) -> int:
        """Queue an encoded update to this node's matching connections; returns how many."""
        return self._push_update(self.registry.select(user_id, target, skip), offset, frame)

    def deliver_update_run(
        self,
        user_id: str,
        items: list[tuple[int, bytes]],
        target: RecipientFilter,
        skip: str | None,
    ) -> bool:
        """``deliver_update`` for (offset, frame) updates with one filter and skip, in order.

        Queued to each recipient in one step, provided every recipient's queue
        ``takes_run`` them (the outcome of one by one); False, with nothing
        queued, when some queue would not: the caller goes one by one then.
        """
        recipients = self.registry.select(user_id, target, skip)
        queues = [c.queue for c in recipients if c.queue is not None]
        count = len(items)
        if queues:
            nbytes = sum(len(frame) for _, frame in items)
            first = items[0][0]
            if any(not q.takes_run(count, nbytes, first) for q in queues):
                return False
            for queue in queues:
                queue.push_run(items, nbytes)
        self.stats.updates_emitted += count
        self.stats.deliveries += len(queues) * count
        return True

    def _push_update(self, recipients: list[ClientConnection], offset: int, frame: bytes) -> int:
        # Once per delivery: kept to a push and a comparison (see ConnectionQueue).
        reached = 0
        for connection in recipients:
            queue = connection.queue
            assert queue is not None
            pushed = queue.push_update(frame, offset)
            if pushed:
                reached += 1
                if pushed == CROWDED:
                    self.turn_wanted = True
            elif queue.closure is not None and queue.closure.reason is CloseReason.TOO_SLOW:
                # The queue just closed itself as too slow: stop routing to it.
                self._closed_too_slow(connection)
        self.stats.updates_emitted += 1
        self.stats.deliveries += reached
        return reached

    def deliver_ephemeral(
        self, user_id: str, frame: bytes, target: RecipientFilter, skip: str | None
    ) -> int:
        """Queue an encoded ephemeral event to this node's matching connections.

        Connections still ``opening`` are left out: the event was emitted
        before they opened (a broker delivers it after their open otherwise).
        """
        recipients = [c for c in self.registry.select(user_id, target, skip) if not c.opening]
        return self._push_ephemeral(recipients, frame)

    def _push_ephemeral(self, recipients: list[ClientConnection], frame: bytes) -> int:
        reached = 0
        for connection in recipients:
            queue = connection.queue
            assert queue is not None
            # Older ephemerals or this one may be dropped to keep the bound
            # (the queue reports drops to _count_dropped).
            pushed = queue.push_ephemeral(frame)
            if pushed:
                reached += 1
                if pushed == CROWDED:
                    self.turn_wanted = True
        self.stats.ephemerals_emitted += 1
        self.stats.deliveries += reached
        return reached

    async def take_turn(self) -> None:
        """Yield once, so that writers take what a burst queued (clears ``turn_wanted``).

        For callers that apply many emits without yielding otherwise (an
        EmitBatch, the cluster subscriber).  Never a wait for a writer: the
        caller may serve many users, and a stalled one must cost them nothing.
        """
        self.turn_wanted = False
        await asyncio.sleep(0)

    # -- housekeeping ----------------------------------------------------

    def sweep(self) -> int:
        """Forget idle users' history (no connections, nothing newer than the age limit)."""
        return self.history.evict_idle(self.registry.has_user)


def _skip_id(skip: SkipInput) -> str | None:
    if skip is None or skip == "":
        return None
    if isinstance(skip, str):
        return skip
    return skip.connection_id


__all__ = [
    "EmitResult",
    "EventRouter",
    "FilterInput",
    "OpenResult",
    "ResumeStatus",
    "RouterLimits",
    "RouterStats",
    "SkipInput",
]
