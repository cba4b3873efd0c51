"""Per-user update history: offsets, epochs and replay for resume.

Each user's stream numbers its updates 1, 2, 3, ... within an *epoch*, a
random id chosen when the stream's history starts.  A client remembers the
last (offset, epoch) it saw and asks to resume after it.  Either every update
after that position is still retained and is replayed, or the answer is an
explicit failure: the epoch changed (history was lost: restart, eviction),
the position is older than what is retained (size or age limit), or it was
never handed out.  A partial replay is never given.

In-memory history lives as long as the process; an idle user's stream is
evicted once its newest update is older than the age limit and it has no
connections, which bounds memory by the emit rate times the age limit.
"""

from __future__ import annotations

import enum
import itertools
import os
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from eventrouter.server.core import wire
from eventrouter.server.core.filters import RecipientFilter


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    """How much history each user keeps (both limits apply)."""

    max_updates: int = 1000
    max_age_s: float = 600.0

    def __post_init__(self) -> None:
        if self.max_updates < 0 or self.max_age_s < 0:
            raise ValueError("history limits must not be negative")


class HistoryEntry(NamedTuple):
    """One numbered update as kept for replay (a tuple: one is made per emit).

    It keeps the serialized ``UpdatePayload``, not the stream frame: the frame
    is built when a live delivery or a replay needs it, so an update for a
    user with no connection open costs no encoding.
    """

    offset: int
    stored_at: float
    payload: bytes
    epoch: str
    # Kept so that a replay reaches exactly the connections live delivery would.
    recipient_filter: RecipientFilter
    skip_connection_id: str | None

    def frame(self) -> bytes:
        """The ``SubscribeResponse.events`` element that delivers this update."""
        return wire.update_frame(self.payload, self.offset, self.epoch)


class ResumeFailure(enum.Enum):
    EPOCH_CHANGED = "epoch_changed"
    TOO_OLD = "too_old"
    UNKNOWN_POSITION = "unknown_position"


class _EpochSource:
    """Unique 12-hex-digit epochs: a random 48-bit start per process, then counting.

    An epoch only has to differ from every earlier epoch of the same user's
    stream (it tells a resuming client that history was lost), not to be
    secret.  The clustered broker proposes one with every emit script call,
    where ``secrets.token_hex`` cost a ``getrandom`` system call each (1.4%
    of a cluster profile).  A forked child draws a new start.
    """

    def __init__(self) -> None:
        self._reseed()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._next = itertools.count(secrets.randbits(48))

    def __call__(self) -> str:
        return f"{next(self._next) & 0xFFFF_FFFF_FFFF:012x}"


new_epoch = _EpochSource()


@dataclass(slots=True)
class UserStream:
    """One user's numbered updates within one epoch."""

    epoch: str = field(default_factory=new_epoch)
    head: int = 0
    entries: deque[HistoryEntry] = field(default_factory=deque)
    last_append: float = 0.0


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """Result of checking a resume position: the entries to replay, or why not."""

    failure: ResumeFailure | None
    entries: tuple[HistoryEntry, ...] = ()


class MemoryHistory:
    """Update history held in this process."""

    def __init__(
        self,
        limits: HistoryLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits or HistoryLimits()
        self._clock = clock
        self._streams: dict[str, UserStream] = {}

    def stream(self, user_id: str) -> UserStream:
        stream = self._streams.get(user_id)
        if stream is None:
            stream = self._streams[user_id] = UserStream()
        return stream

    def append(
        self,
        user_id: str,
        payload: bytes,
        recipient_filter: RecipientFilter,
        skip_connection_id: str | None,
    ) -> HistoryEntry:
        """Number the next update (a serialized ``UpdatePayload``) and keep it."""
        stream = self.stream(user_id)
        now = self._clock()
        stream.head += 1
        entry = HistoryEntry(
            stream.head, now, payload, stream.epoch, recipient_filter, skip_connection_id
        )
        stream.last_append = now
        if self.limits.max_updates:
            stream.entries.append(entry)
            self._trim(stream, now)
        return entry

    def _trim(self, stream: UserStream, now: float) -> None:
        entries = stream.entries
        while len(entries) > self.limits.max_updates:
            entries.popleft()
        horizon = now - self.limits.max_age_s
        while entries and entries[0].stored_at < horizon:
            entries.popleft()

    def plan_replay(self, user_id: str, offset: int, epoch: str) -> ReplayPlan:
        """Everything after ``offset`` in ``epoch``, or the reason it cannot be given."""
        stream = self.stream(user_id)
        if epoch != stream.epoch:
            return ReplayPlan(ResumeFailure.EPOCH_CHANGED)
        if offset > stream.head:
            return ReplayPlan(ResumeFailure.UNKNOWN_POSITION)
        if offset == stream.head:
            return ReplayPlan(None)
        self._trim(stream, self._clock())
        entries = stream.entries
        # The update right after `offset` must still be retained.
        if not entries or entries[0].offset > offset + 1:
            return ReplayPlan(ResumeFailure.TOO_OLD)
        start = offset + 1 - entries[0].offset
        return ReplayPlan(None, tuple(entries[i] for i in range(start, len(entries))))

    def evict_idle(self, keep: Callable[[str], bool]) -> int:
        """Forget streams whose newest update is past the age limit, unless ``keep(user)``."""
        horizon = self._clock() - self.limits.max_age_s
        idle = [
            user
            for user, stream in self._streams.items()
            if stream.last_append < horizon and not keep(user)
        ]
        for user in idle:
            del self._streams[user]
        return len(idle)

    def users(self) -> Iterator[str]:
        return iter(self._streams)
