"""A connection's bounded outgoing queue and its overflow policy.

Every event routed to a connection is appended here as an encoded frame; the
connection's writer drains everything pending into one stream message.  The
queue is bounded by count and by bytes, so a consumer that stops reading can
never grow the server's memory without bound.  When it is full:

1. pending *ephemeral* events are dropped, oldest first, and counted;
2. a new ephemeral event that still finds no room is dropped and counted;
3. a new *update* that still finds no room closes the queue as too slow: the
   stream ends with RESOURCE_EXHAUSTED and the client resumes from its last
   position.  An update is never dropped from a queue that stays open.

Replayed history (resume) goes into a separate backlog that the limits do not
count: it references bytes the history already holds, and it is bounded by
the history's own limits.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """Per-connection bounds; the defaults suit phones on slow networks."""

    max_events: int = 1024
    max_bytes: int = 8 * 1024 * 1024
    # Upper bound of one stream message, so a catch-up never exceeds the
    # client's maximum receive size (gRPC's default is 4 MiB).
    max_write_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_events < 1 or self.max_bytes < 1 or self.max_write_bytes < 1:
            raise ValueError("queue limits must be positive")


class CloseReason(enum.Enum):
    """Why the server ended a connection."""

    TOO_SLOW = "too_slow"
    SHUTDOWN = "shutdown"
    # Ended by a service's Disconnect; clients may reconnect.
    DISCONNECTED = "disconnected"
    # Ended because access was revoked; clients must not retry.
    REVOKED = "revoked"
    # The credential the stream was opened with has expired.
    CREDENTIAL_EXPIRED = "credential_expired"


@dataclass(frozen=True, slots=True)
class Closure:
    reason: CloseReason
    message: str


# What a push returns: falsy when the event was not queued.
REFUSED = 0
QUEUED = 1
CROWDED = 2  # queued, and the queue is now half full or more


class ConnectionQueue:
    """Bounded FIFO of encoded frames for one connection (single event loop)."""

    __slots__ = (
        "_backlog",
        "_crowd_bytes",
        "_crowd_count",
        "_drained",
        "_loop",
        "_max_bytes",
        "_max_events",
        "_pending",
        "_waiter",
        "closure",
        "delivered",
        "dropped_ephemeral",
        "limits",
        "on_dropped",
        "pending_bytes",
        "pending_since",
        "pending_updates",
        "replayed_through",
    )

    def __init__(
        self,
        limits: QueueLimits | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        self.limits = limits = limits or QueueLimits()
        # The limits as plain attributes, and "half full" as thresholds the
        # length and byte count reach: read once per delivery.
        self._max_events = limits.max_events
        self._max_bytes = limits.max_bytes
        self._crowd_count = (limits.max_events + 1) // 2
        self._crowd_bytes = (limits.max_bytes + 1) // 2
        # Told how many ephemerals were dropped, whenever some are (the router's counter).
        self.on_dropped = on_dropped
        # (offset, frame) pairs, oldest first; offset 0 marks an ephemeral event.
        self._pending: deque[tuple[int, bytes]] = deque()
        self._backlog: deque[bytes] = deque()
        # The writer's wake-up: a future of the loop the writer waits on, made
        # only while it waits.  Not an asyncio.Event: Event.wait() asks for
        # the running loop each time, which on Python 3.11 is a getpid()
        # system call; getpid was 9.8% of the many-users (W2) profile before
        # this change and left the top of the table after it.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        # Created on first use: set whenever the writer takes frames.
        self._drained: asyncio.Event | None = None
        self.pending_bytes = 0
        self.pending_updates = 0
        self.dropped_ephemeral = 0
        self.delivered = 0
        # Monotonic time the oldest pending event was queued (0.0 when empty):
        # the writer observes emit-to-write latency from it, once per write.
        self.pending_since = 0.0
        # Offset of the last update queued by a replay: a live copy of it is a
        # duplicate (a cluster resume reads history while live events flow).
        self.replayed_through = 0
        self.closure: Closure | None = None

    # -- producer side ---------------------------------------------------
    #
    # push_update and push_ephemeral run once per delivery, so their common
    # case (room without dropping anything) is written out inline: no helper
    # calls, one wake-up per empty-to-non-empty change.  They return REFUSED
    # (0, falsy), QUEUED, or CROWDED when the event left the queue half full,
    # which tells the router the writer should get a turn before a burst goes on.

    def push_update(self, frame: bytes, offset: int = 0) -> int:
        """Queue the update at ``offset``; REFUSED if the queue is closed or closes now (too slow).

        An update the replay already queued counts as queued and is not added again.
        """
        if self.closure is not None:
            return REFUSED
        if offset and offset <= self.replayed_through:
            return QUEUED
        size = len(frame)
        count = len(self._pending)
        nbytes = self.pending_bytes + size
        if count >= self._max_events or nbytes > self._max_bytes:
            if not self._make_room(size):
                self.close(
                    CloseReason.TOO_SLOW,
                    f"consumer too slow: more than {self._max_events} events or "
                    f"{self._max_bytes} bytes pending; resume from the last position",
                )
                return REFUSED
            count = len(self._pending)
            nbytes = self.pending_bytes + size
        if not count:
            self._became_non_empty()
        self._pending.append((offset or -1, frame))
        self.pending_bytes = nbytes
        self.pending_updates += 1
        if count >= self._crowd_count - 1 or nbytes >= self._crowd_bytes:
            return CROWDED
        return QUEUED

    def push_ephemeral(self, frame: bytes) -> int:
        """Queue an ephemeral event; REFUSED when it was dropped or the queue is closed."""
        if self.closure is not None:
            return REFUSED
        size = len(frame)
        count = len(self._pending)
        nbytes = self.pending_bytes + size
        if count >= self._max_events or nbytes > self._max_bytes:
            if not self._make_room(size):
                self._dropped(1)
                return REFUSED
            count = len(self._pending)
            nbytes = self.pending_bytes + size
        if not count:
            self._became_non_empty()
        self._pending.append((0, frame))
        self.pending_bytes = nbytes
        if count >= self._crowd_count - 1 or nbytes >= self._crowd_bytes:
            return CROWDED
        return QUEUED

    def takes_run(self, count: int, nbytes: int) -> bool:
        """Whether ``count`` more updates of ``nbytes`` leave this queue open and under half full.

        Then ``push_run`` can queue them in one step with exactly the outcome
        of pushing them one by one: nothing dropped, nothing closed, no turn
        owed to the writer.
        """
        return (
            self.closure is None
            and not self.replayed_through
            and len(self._pending) + count < self._crowd_count
            and self.pending_bytes + nbytes < self._crowd_bytes
        )

    def push_run(self, items: list[tuple[int, bytes]], nbytes: int) -> None:
        """Queue the (offset, frame) updates ``takes_run`` accepted; ``nbytes``: their size."""
        if not self._pending:
            self._became_non_empty()
        self._pending.extend(items)
        self.pending_bytes += nbytes
        self.pending_updates += len(items)

    def _became_non_empty(self) -> None:
        # The writer only ever waits on an empty queue, so waking it when the
        # first event arrives is enough.
        if not self._backlog:
            self.pending_since = time.monotonic()
        self._wake()

    def _dropped(self, count: int) -> None:
        self.dropped_ephemeral += count
        if self.on_dropped is not None:
            self.on_dropped(count)

    def push_backlog(self, frames: list[bytes], through_offset: int = 0) -> None:
        """Queue replayed history (up to ``through_offset``) ahead of every live event."""
        if through_offset > self.replayed_through:
            self.replayed_through = through_offset
            self._drop_replayed_live_updates()
        if frames:
            if not self.has_pending():
                self.pending_since = time.monotonic()
            self._backlog.extend(frames)
            self._wake()

    def _drop_replayed_live_updates(self) -> None:
        through = self.replayed_through
        kept: deque[tuple[int, bytes]] = deque()
        for offset, frame in self._pending:
            if 0 < offset <= through:
                self.pending_bytes -= len(frame)
                self.pending_updates -= 1
                continue
            kept.append((offset, frame))
        self._pending = kept

    def close(self, reason: CloseReason, message: str) -> None:
        """End the connection; the writer reports it once the queue is drained of nothing more."""
        if self.closure is None:
            self.closure = Closure(reason, message)
            self._wake()

    def _fits(self, size: int) -> bool:
        return (
            len(self._pending) < self.limits.max_events
            and self.pending_bytes + size <= self.limits.max_bytes
        )

    def _make_room(self, size: int) -> bool:
        if self._fits(size):
            return True
        if self.pending_updates < len(self._pending):
            self._drop_ephemerals_for(size)
        return self._fits(size)

    def _drop_ephemerals_for(self, size: int) -> None:
        # Drop the oldest ephemerals until the new frame fits; updates stay.
        limits = self.limits
        count = len(self._pending)
        nbytes = self.pending_bytes
        dropped = 0
        kept: deque[tuple[int, bytes]] = deque()
        for offset, frame in self._pending:
            fits = count < limits.max_events and nbytes + size <= limits.max_bytes
            if offset == 0 and not fits:
                count -= 1
                nbytes -= len(frame)
                dropped += 1
                continue
            kept.append((offset, frame))
        self._pending = kept
        self.pending_bytes = nbytes
        self._dropped(dropped)

    # -- consumer side ---------------------------------------------------

    @property
    def depth(self) -> int:
        """Events waiting to be written (backlog included)."""
        return len(self._pending) + len(self._backlog)

    @property
    def crowded(self) -> bool:
        """Half full or more: its writer should get a turn before more is queued."""
        limits = self.limits
        return (
            len(self._pending) * 2 >= limits.max_events
            or self.pending_bytes * 2 >= limits.max_bytes
        )

    def has_pending(self) -> bool:
        return bool(self._pending or self._backlog)

    async def wait(self) -> None:
        """Return once something is pending or the queue was closed (one waiter: the writer)."""
        while not self._pending and not self._backlog and self.closure is None:
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_drained(self) -> None:
        """Return after the writer next takes frames out (see ``drain``)."""
        if self._drained is None:
            self._drained = asyncio.Event()
        self._drained.clear()
        await self._drained.wait()

    def drain(self) -> list[bytes]:
        """Take the oldest frames, up to one write's worth of bytes (at least one)."""
        budget = self.limits.max_write_bytes
        pending = self._pending
        if not self._backlog and self.pending_bytes <= budget:
            # Fast path (the common case): everything pending fits one write.
            out = [frame for _, frame in pending]
            pending.clear()
            self.pending_bytes = 0
            self.pending_updates = 0
            return self._took(out)
        out = []
        used = 0
        backlog = self._backlog
        while backlog and (not out or used + len(backlog[0]) <= budget):
            frame = backlog.popleft()
            used += len(frame)
            out.append(frame)
        while pending and (not out or used + len(pending[0][1]) <= budget):
            offset, frame = pending.popleft()
            used += len(frame)
            self.pending_bytes -= len(frame)
            if offset:
                self.pending_updates -= 1
            out.append(frame)
        return self._took(out)

    def _took(self, out: list[bytes]) -> list[bytes]:
        self.delivered += len(out)
        if self._drained is not None:
            self._drained.set()
        # What is left (a write's worth was taken) counts as queued from now.
        self.pending_since = time.monotonic() if self.has_pending() else 0.0
        return out
