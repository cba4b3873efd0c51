"""A user's resuming streams on one cluster node share what they replay.

A resume reads the user's history from Redis after the client's position.
Read once per stream, N streams of one user resuming from far back would
each hold their own copy of up to the whole retained history until their
writers took it (and a user may open ``max_streams_per_user`` streams at
once).  Instead the node keeps, per user, the entries its resuming streams
still have to write; a resume reads from Redis only what is not among them,
and every stream's replay references the same payload bytes.  Resumes of
one user are read one at a time (a lock per user), so concurrent ones share
too.  The entries go as soon as no local stream of the user has replay left
to write; what a stream has already written it no longer references.

Entries never change within an epoch, so sharing them is exact; an entry of
another epoch is never used (a new epoch empties the share, and a resume
across epochs fails with EPOCH_CHANGED before anything is replayed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Any

from eventrouter.server.broker.redis_watch import LogEntry, parse_entries, plan_replay
from eventrouter.server.core.connections import ClientConnection
from eventrouter.server.core.history import HistoryEntry, ResumeFailure
from eventrouter.server.core.registry import ConnectionRegistry
from eventrouter.server.core.router import ResumeStatus

Plan = tuple[ResumeStatus, ResumeFailure | None, tuple[HistoryEntry, ...]]


class SharedReplay:
    """One user's entries kept for its local resuming streams, by offset."""

    __slots__ = ("entries", "epoch", "lock")

    def __init__(self) -> None:
        self.entries: dict[int, LogEntry] = {}
        self.epoch: str | None = None
        # Held while a resume reads from Redis and plans its replay.
        self.lock = asyncio.Lock()

    def read_after(self, after: int, epoch: str) -> int:
        """Where the Redis read starts for a resume after ``after``: past the entries kept here."""
        if epoch != self.epoch:
            return after
        offset = after
        while offset + 1 in self.entries:
            offset += 1
        return offset

    def combine(
        self, after: int, read_after: int, epoch: str, read: list[LogEntry], floor: int
    ) -> list[LogEntry]:
        """The entries after ``after``: those kept here through ``read_after``, then ``read``.

        What was read joins the share (an offset already kept keeps its
        entry: the streams share one).  Entries at or below ``floor`` are
        past the history's length limit and can no longer be replayed: the
        share lets them go.
        """
        if epoch != self.epoch:
            # Nothing kept belongs to this epoch.
            self.entries.clear()
            self.epoch = epoch
            if read_after > after:
                # It skipped reading what was kept of the old epoch, which the
                # resume named: it fails with EPOCH_CHANGED, nothing replayed.
                return read
        entries = self.entries
        out = [entries[offset] for offset in range(after + 1, read_after + 1)]
        out += [entries.setdefault(entry.offset, entry) for entry in read]
        for offset in [offset for offset in entries if offset <= floor]:
            del entries[offset]
        return out


class ReplayShares:
    """The ``SharedReplay`` of each user whose local streams are resuming."""

    def __init__(self, registry: ConnectionRegistry) -> None:
        self._registry = registry
        self._by_user: dict[str, SharedReplay] = {}

    def of(self, user: str) -> SharedReplay:
        share = self._by_user.get(user)
        if share is None:
            share = self._by_user[user] = SharedReplay()
        return share

    @contextlib.asynccontextmanager
    async def reading(self, user: str, resume_from: tuple[int, str] | None) -> AsyncIterator[int]:
        """Hold the user's share while an opening stream reads: yields where the read starts."""
        if resume_from is None:
            yield -1  # not resuming: nothing to read
            return
        share = self.of(user)
        async with share.lock:
            yield share.read_after(*resume_from)

    def plan(
        self,
        user: str,
        resume_from: tuple[int, str] | None,
        read_after: int,
        epoch: str,
        head: int,
        now_ms: int,
        raw: Any,
        limits: tuple[int, int],
    ) -> Plan:
        """``plan_replay`` over what was read (``raw``, XRANGE's reply) and what is shared."""
        entries = parse_entries(raw)
        share = self._by_user.get(user)
        if resume_from is not None and share is not None:
            floor = head - limits[0]
            entries = share.combine(resume_from[0], read_after, epoch, entries, floor)
        return plan_replay(resume_from, epoch, head, now_ms, entries, limits)

    def follow(self, connection: ClientConnection) -> None:
        """Settle the connection's user when its replay is over."""
        assert connection.queue is not None
        connection.queue.on_replay_done = functools.partial(self.settle, connection.user_id)

    def settle(self, user: str) -> None:
        """Let the user's entries go once none of its local streams has replay left to write."""
        share = self._by_user.get(user)
        if share is None or share.lock.locked():
            return  # none, or a resume is reading into it (it settles when done)
        for connection in self._registry.of_user(user):
            if connection.queue is not None and connection.queue.replaying:
                return
        del self._by_user[user]

    def kept(self, user: str) -> int:
        """How many entries are kept for ``user`` (0: none)."""
        share = self._by_user.get(user)
        return len(share.entries) if share is not None else 0
