"""A connection's bounded outgoing queue and its overflow policy.

Every event routed to a connection is appended here as an encoded frame; the
connection's writer drains everything pending into one stream message.  The
queue is bounded by count and by bytes, so a consumer that stops reading can
never grow the server's memory without bound, and nothing that delivers to
it ever waits for it: a push always returns at once.

Limits and the overflow policy:

1. A burst may take the queue over its limits (``max_events`` /
   ``max_bytes``), up to ``OVERDRAFT`` times them, for at most
   ``overflow_grace_s`` while its writer catches up.  A writer that brings
   the queue back under its limits in time ends the overdraft.
2. Beyond that (grace over, or twice the limits reached), pending
   *ephemeral* events are dropped, oldest first, and counted; a new
   ephemeral that still finds no room is dropped and counted.
3. A new *update* that still finds no room, or updates that keep the queue
   over its limits when the grace ends, close the queue as too slow: the
   stream ends with RESOURCE_EXHAUSTED and the client resumes from its last
   position.  An update is never dropped from a queue that stays open.

Replayed history (resume) is not copied here: the queue keeps references to
the retained history entries and builds each entry's frame when the writer
takes it, at most one write's worth at a time.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

# How far over its limits a queue may go during the grace period.
OVERDRAFT = 2


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """Per-connection bounds; the defaults suit phones on slow networks."""

    max_events: int = 1024
    max_bytes: int = 8 * 1024 * 1024
    # Upper bound of one stream message, so a catch-up never exceeds the
    # client's maximum receive size (gRPC's default is 4 MiB).
    max_write_bytes: int = 1024 * 1024
    # How long a queue may stay over its limits (up to OVERDRAFT times them)
    # while its writer catches up with a burst; 0: never over its limits.
    overflow_grace_s: float = 1.0

    def __post_init__(self) -> None:
        if self.max_events < 1 or self.max_bytes < 1 or self.max_write_bytes < 1:
            raise ValueError("queue limits must be positive")
        if self.overflow_grace_s < 0:
            raise ValueError("overflow_grace_s must not be negative")


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


class Replayable(Protocol):
    """A retained update the queue can turn into a frame when the writer takes it."""

    def frame(self) -> bytes: ...


# What a push returns: falsy when the event was not queued.
REFUSED = 0
QUEUED = 1
# Queued, and this push took the queue to half full or over its limits: a
# caller applying a burst without yielding should give the writer a turn.
CROWDED = 2


class ConnectionQueue:
    """Bounded FIFO of encoded frames for one connection (single event loop)."""

    __slots__ = (
        "_crowd_bytes",
        "_crowd_count",
        "_grace_s",
        "_grace_timer",
        "_loop",
        "_max_bytes",
        "_max_events",
        "_over_since",
        "_pending",
        "_replay",
        "_replay_at",
        "_replay_next",
        "_waiter",
        "closure",
        "delivered",
        "dropped_ephemeral",
        "limits",
        "on_dropped",
        "on_replay_done",
        "on_too_slow",
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
        self._grace_s = limits.overflow_grace_s
        # Told how many ephemerals were dropped, whenever some are (the router's counter).
        self.on_dropped = on_dropped
        # Told when the queue closed itself as too slow outside a push (its
        # grace ran out on a timer), so the router unregisters the connection.
        self.on_too_slow: Callable[[], None] | None = None
        # Told when a replay is over (all written, or the queue closed): a
        # cluster node then lets go of the entries its resuming streams share.
        self.on_replay_done: Callable[[], None] | None = None
        # (offset, frame) pairs, oldest first; offset 0 marks an ephemeral event.
        self._pending: deque[tuple[int, bytes]] = deque()
        # Replay: retained entries to send before anything pending, from _replay_at
        # on; _replay_next holds a frame built but left for the next write.
        self._replay: Sequence[Replayable] = ()
        self._replay_at = 0
        self._replay_next: bytes | None = None
        # The writer's wake-up: a future of the loop the writer waits on, made
        # only while it waits.  Not an asyncio.Event: Event.wait() asks for
        # the running loop each time, which on Python 3.11 is a getpid()
        # system call; getpid was 9.8% of the many-users (W2) profile before
        # this change and left the top of the table after it.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        # Monotonic time the queue went over its limits (0.0: it is not), and
        # the timer that ends the grace.
        self._over_since = 0.0
        self._grace_timer: asyncio.TimerHandle | None = None
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
    # case (room under the limits) is written out inline: no helper calls,
    # one wake-up per empty-to-non-empty change.  They return REFUSED (0,
    # falsy), QUEUED, or CROWDED when this push took the queue to half full.

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
            return self._push_over(frame, offset or -1, size)
        if not count:
            self._became_non_empty()
        self._pending.append((offset or -1, frame))
        self.pending_bytes = nbytes
        self.pending_updates += 1
        if count == self._crowd_count - 1 or nbytes - size < self._crowd_bytes <= nbytes:
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
            return self._push_over(frame, 0, size)
        if not count:
            self._became_non_empty()
        self._pending.append((0, frame))
        self.pending_bytes = nbytes
        if count == self._crowd_count - 1 or nbytes - size < self._crowd_bytes <= nbytes:
            return CROWDED
        return QUEUED

    def _push_over(self, frame: bytes, offset: int, size: int) -> int:
        """A push that does not fit under the limits: overdraft, drops, or closing."""
        # A queue not over its limits yet starts a grace with this push.
        entering = not self._over_since
        in_grace = self._grace_s > 0 and (entering or self._in_grace())
        factor = OVERDRAFT if in_grace else 1
        max_events, max_bytes = self._max_events * factor, self._max_bytes * factor
        if not self._fits(size, max_events, max_bytes):
            self._drop_ephemerals_for(size, max_events, max_bytes)
        if not self._fits(size, max_events, max_bytes):
            if offset:
                self._close_too_slow()
            else:
                self._dropped(1)
                self._end_overdraft_if_back()
            return REFUSED
        if not self._pending:
            self._became_non_empty()
        self._pending.append((offset, frame))
        self.pending_bytes += size
        if offset:
            self.pending_updates += 1
        if entering and not self._within_limits():
            self._over_since = time.monotonic()
            self._arm_grace()
            return CROWDED
        self._end_overdraft_if_back()
        return QUEUED

    def _end_overdraft_if_back(self) -> None:
        # The ephemerals a push dropped may have brought the queue back within
        # its limits: that ends the overdraft as a writer's drain would.
        if self._over_since and self._within_limits():
            self._end_overdraft()

    def _in_grace(self) -> bool:
        return time.monotonic() - self._over_since < self._grace_s

    def _arm_grace(self) -> None:
        # Without a running loop (the embedded, synchronous API) the grace is
        # checked by the next push instead.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._grace_timer = loop.call_later(self._grace_s, self._grace_ended)

    def _grace_ended(self) -> None:
        self._grace_timer = None
        if self.closure is not None or not self._over_since:
            return
        if not self._within_limits():
            self._drop_ephemerals_for(0, self._max_events + 1, self._max_bytes)
        if self._within_limits():
            self._over_since = 0.0
            return
        self._close_too_slow()
        if self.on_too_slow is not None:
            self.on_too_slow()

    def _end_overdraft(self) -> None:
        self._over_since = 0.0
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None

    def _close_too_slow(self) -> None:
        self.close(
            CloseReason.TOO_SLOW,
            f"consumer too slow: more than {self._max_events} events or "
            f"{self._max_bytes} bytes pending; resume from the last position",
        )

    def takes_run(self, count: int, nbytes: int, first_offset: int = 0) -> bool:
        """Whether ``count`` more updates of ``nbytes`` leave this queue open and under half full.

        Then ``push_run`` can queue them in one step with exactly the outcome
        of pushing them one by one: nothing dropped, nothing closed, no turn
        owed to the writer.  ``first_offset``: the run's first offset, if
        known; a run the replay already covered a part of is refused.
        """
        replayed = self.replayed_through
        return (
            self.closure is None
            and (first_offset > replayed if first_offset else not replayed)
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
        if not self._replay_left():
            self.pending_since = time.monotonic()
        self._wake()

    def _dropped(self, count: int) -> None:
        self.dropped_ephemeral += count
        if self.on_dropped is not None:
            self.on_dropped(count)

    def push_replay(self, entries: Sequence[Replayable], through_offset: int = 0) -> None:
        """Send retained ``entries`` (through ``through_offset``) ahead of every live event.

        The sequence is kept, not copied: each frame is built when the writer
        takes it.  Called once, when the connection opens.
        """
        if through_offset > self.replayed_through:
            self.replayed_through = through_offset
            self._drop_replayed_live_updates()
        if entries:
            if not self.has_pending():
                self.pending_since = time.monotonic()
            self._replay, self._replay_at = entries, 0
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
            self._end_overdraft()
            # The writer reports the closure without writing what is pending:
            # let it go now (a stalled consumer's handler may linger).
            self._pending = deque()
            self.pending_bytes = self.pending_updates = 0
            replaying = self.replaying
            self._replay, self._replay_at, self._replay_next = (), 0, None
            self._wake()
            if replaying and self.on_replay_done is not None:
                self.on_replay_done()

    def _fits(self, size: int, max_events: int, max_bytes: int) -> bool:
        """Whether one more frame of ``size`` stays within these bounds."""
        return len(self._pending) < max_events and self.pending_bytes + size <= max_bytes

    def _within_limits(self) -> bool:
        return len(self._pending) <= self._max_events and self.pending_bytes <= self._max_bytes

    def _drop_ephemerals_for(self, size: int, max_events: int, max_bytes: int) -> None:
        # Drop the oldest ephemerals until the new frame fits; updates stay.
        if self.pending_updates == len(self._pending):
            return
        count = len(self._pending)
        nbytes = self.pending_bytes
        dropped = 0
        kept: deque[tuple[int, bytes]] = deque()
        for offset, frame in self._pending:
            fits = count < max_events and nbytes + size <= max_bytes
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

    def _replay_left(self) -> int:
        return len(self._replay) - self._replay_at

    @property
    def replaying(self) -> bool:
        """Replayed entries are still to be written."""
        return self._replay_at < len(self._replay)

    @property
    def depth(self) -> int:
        """Events waiting to be written (replay included)."""
        return len(self._pending) + self._replay_left()

    @property
    def crowded(self) -> bool:
        """Half full or more."""
        return (
            len(self._pending) * 2 >= self._max_events or self.pending_bytes * 2 >= self._max_bytes
        )

    @property
    def over_limits(self) -> bool:
        """In overdraft: over ``max_events`` / ``max_bytes``, within the grace."""
        return bool(self._over_since) and self.closure is None

    def has_pending(self) -> bool:
        return bool(self._pending) or self._replay_at < len(self._replay)

    async def wait(self) -> None:
        """Return once something is pending or the queue was closed (one waiter: the writer)."""
        while not self.has_pending() and self.closure is None:
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

    def drain(self) -> list[bytes]:
        """Take the oldest frames, up to one write's worth of bytes (at least one)."""
        budget = self.limits.max_write_bytes
        pending = self._pending
        if self._replay_at >= len(self._replay) and self.pending_bytes <= budget:
            # Fast path (the common case): everything pending fits one write.
            out = [frame for _, frame in pending]
            pending.clear()
            self.pending_bytes = 0
            self.pending_updates = 0
            return self._took(out)
        out, used = self._take_replay(budget)
        while pending and (not out or used + len(pending[0][1]) <= budget):
            offset, frame = pending.popleft()
            used += len(frame)
            self.pending_bytes -= len(frame)
            if offset:
                self.pending_updates -= 1
            out.append(frame)
        return self._took(out)

    def _take_replay(self, budget: int) -> tuple[list[bytes], int]:
        out: list[bytes] = []
        used = 0
        replay = self._replay
        while self._replay_at < len(replay):
            frame = self._replay_next
            if frame is None:
                frame = replay[self._replay_at].frame()
            if out and used + len(frame) > budget:
                self._replay_next = frame  # built once: it opens the next write
                return out, used
            self._replay_next = None
            self._replay_at += 1
            used += len(frame)
            out.append(frame)
        if not replay:
            return out, used
        # All sent: drop the references to the history entries.
        self._replay, self._replay_at = (), 0
        if self.on_replay_done is not None:
            self.on_replay_done()
        return out, used

    def _took(self, out: list[bytes]) -> list[bytes]:
        self.delivered += len(out)
        if self._over_since and self._within_limits():
            self._end_overdraft()
        # What is left (a write's worth was taken) counts as queued from now.
        self.pending_since = time.monotonic() if self.has_pending() else 0.0
        return out
