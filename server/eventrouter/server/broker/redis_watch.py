"""What a node knows about each user it watches, and how updates reach its connections.

A ``Watch`` exists while the node holds (or is opening) a connection of the
user.  It remembers the user's epoch, the last offset delivered to the local
connections (``last``) and the position each local connection was opened at,
which is what recovery needs:

* a live update numbered ``last + 1`` is delivered; ``<= last`` was already
  delivered (by a recovery) and is dropped; ``> last + 1`` means messages were
  lost, so the gap is read from the log first;
* after the subscription was interrupted, everything after ``last`` (or,
  when nothing was delivered yet, after the oldest local position) is read
  from the log and delivered before any live message;
* an update of another epoch means the user's history restarted (Redis lost
  it, or it expired): local connections opened in the old epoch are closed
  with UNAVAILABLE; their clients resume and get EPOCH_CHANGED;
* a gap the log cannot fill (trimmed, expired, Redis unreachable) closes the
  user's local connections with UNAVAILABLE: their clients resume and either
  get the gap replayed or learn that it is gone.  Never a silent hole.

The control stream (cluster-wide Disconnect) is watched the same way; a gap
in it that cannot be filled ends every local connection, since any of them
might have been one a missed Disconnect selected.
"""

from __future__ import annotations

import abc
import logging
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from eventrouter.server.broker.base import BrokerUnavailable
from eventrouter.server.broker.redis_scripts import UPDATE, StreamKeys, decode_route
from eventrouter.server.core import wire
from eventrouter.server.core.history import HistoryEntry, ResumeFailure
from eventrouter.server.core.queue import CloseReason
from eventrouter.server.core.router import EventRouter, ResumeStatus
from eventrouter.v1 import router_service_pb2 as pb

log = logging.getLogger("eventrouter.server.broker.redis")

CONTROL_ROUTE = b"a\n\n"
RESET_MESSAGE = (
    "this user's event history was reset (the broker lost or expired it): reconnect and"
    " resume; the resume reports EPOCH_CHANGED, so refetch"
)
LOST_MESSAGE = (
    "events may have been missed while the broker was unreachable: reconnect and resume"
    " from your last position"
)


@dataclass(frozen=True, slots=True)
class LogEntry:
    offset: int
    stored_ms: int
    payload: bytes
    route: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """A READ of a stream: its epoch (None: gone), head and the entries asked for."""

    epoch: str | None
    head: int
    entries: list[LogEntry]


def parse_entries(raw: Any) -> list[LogEntry]:
    """XRANGE's reply: [[b"<offset>-0", [b"p", payload, b"r", route, b"t", ms]], ...]."""
    out = []
    for entry_id, fields in raw or ():
        f = dict(zip(fields[::2], fields[1::2], strict=True))
        out.append(
            LogEntry(
                int(bytes(entry_id).split(b"-", 1)[0]),
                int(f[b"t"]),
                bytes(f[b"p"]),
                bytes(f[b"r"]),
            )
        )
    return out


def contiguous(entries: Sequence[LogEntry], after: int, through: int) -> list[LogEntry] | None:
    """The entries after+1 .. through, all of them, or None if any is missing."""
    run = [e for e in entries if after < e.offset <= through]
    if len(run) != max(0, through - after):
        return None
    if any(e.offset != after + 1 + i for i, e in enumerate(run)):
        return None
    return run


def plan_replay(
    resume_from: tuple[int, str] | None,
    epoch: str,
    head: int,
    now_ms: int,
    entries: Sequence[LogEntry],
    limits: tuple[int, int],
) -> tuple[ResumeStatus, ResumeFailure | None, tuple[HistoryEntry, ...]]:
    """``MemoryHistory.plan_replay``'s rules over what the OPEN script read."""
    if resume_from is None:
        return ResumeStatus.NOT_REQUESTED, None, ()
    offset, wanted = resume_from
    if wanted != epoch:
        return ResumeStatus.FAILED, ResumeFailure.EPOCH_CHANGED, ()
    if offset > head:
        return ResumeStatus.FAILED, ResumeFailure.UNKNOWN_POSITION, ()
    if offset == head:
        return ResumeStatus.RESUMED, None, ()
    max_updates, max_age_ms = limits
    # Retained: the newest max_updates, not older than max_age (the log may keep a
    # few more: MAXLEN ~ trims whole stream nodes).
    horizon = now_ms - max_age_ms
    kept = [e for e in entries if e.offset > head - max_updates and e.stored_ms >= horizon]
    run = contiguous(kept, offset, head)
    if run is None:
        return ResumeStatus.FAILED, ResumeFailure.TOO_OLD, ()
    replay = []
    for e in run:
        target, skip = decode_route(e.route)
        replay.append(HistoryEntry(e.offset, e.stored_ms / 1000, e.payload, epoch, target, skip))
    return ResumeStatus.RESUMED, None, tuple(replay)


def encode_control(origin: str, request: pb.DisconnectRequest) -> bytes:
    node = origin.encode()
    return b"%d:%s%s" % (len(node), node, request.SerializeToString())


def decode_control(payload: bytes) -> tuple[str, pb.DisconnectRequest]:
    colon = payload.index(b":")
    end = colon + 1 + int(payload[:colon])
    return payload[colon + 1 : end].decode(), pb.DisconnectRequest.FromString(payload[end:])


class Watch:
    """This node's view of one user's stream (``user == ""``: the control stream)."""

    __slots__ = (
        "control",
        "delivered",
        "epoch",
        "floor",
        "keys",
        "last",
        "opening",
        "positions",
        "retired",
        "user",
    )

    def __init__(self, user: str, keys: StreamKeys) -> None:
        self.user = user
        self.keys = keys
        self.control = user == ""
        self.epoch: str | None = None
        # Last offset delivered to the local connections in this epoch.
        self.last: int | None = None
        # Control stream: its head when this node started watching it.
        self.floor: int | None = None
        # Epochs known to be over: late messages of theirs are dropped.
        self.retired: deque[str] = deque(maxlen=8)
        # connection id -> (position it was opened at, epoch)
        self.positions: dict[str, tuple[int, str]] = {}
        self.opening = 0
        self.delivered = 0

    def recover_from(self) -> int | None:
        """The offset after which updates may be missing, or None if nobody needs any."""
        if self.last is not None:
            return self.last
        if self.control:
            return self.floor
        if self.positions:
            return min(position for position, _ in self.positions.values())
        return None


class WatchDelivery(abc.ABC):
    """Live delivery, gap filling and recovery for watched streams (the subscriber's handler)."""

    def __init__(self, router: EventRouter, control: Watch) -> None:
        self.router = router
        self.control = control
        self.by_channel: dict[bytes, Watch] = {}

    @abc.abstractmethod
    async def read_after(self, watches: Sequence[Watch], after: Sequence[int]) -> list[Reply]:
        """READ each stream after an offset (raises BrokerUnavailable)."""

    @abc.abstractmethod
    def apply_control(self, payload: bytes) -> None:
        """Carry out one control message (a Disconnect from another node)."""

    # -- live -------------------------------------------------------------------

    def on_batch(self, watch: Watch, data: bytes) -> Awaitable[None] | None:
        """One EMIT call's events for the user (see redis_scripts' message format)."""
        header = data.index(b"\n")
        return self._apply(watch, data, header + 1, data[1:header].decode())

    def _apply(self, watch: Watch, data: bytes, pos: int, epoch: str) -> Awaitable[None] | None:
        """Deliver the events from ``pos`` on: consecutive updates with one route as a run.

        Returns what is left to do (after a gap the log fills first, or a
        turn for the writers when a queue filled to half), or None.
        """
        run: list[tuple[int, bytes]] = []
        run_route = b""
        end = len(data)
        while pos < end:
            start = pos
            update = data[pos] == UPDATE
            offset = 0
            if update:
                a = data.index(b":", pos + 1)
                offset = int(data[pos + 1 : a])
            else:
                a = pos
            b = data.index(b":", a + 1)
            c = data.index(b":", b + 1)
            route_end = c + 1 + int(data[a + 1 : b])
            pos = route_end + int(data[b + 1 : c])
            route = data[c + 1 : route_end]
            if update and epoch in watch.retired:
                continue
            if update and run:
                if offset == run[-1][0] + 1 and route == run_route:
                    run.append((offset, wire.update_frame(data[route_end:pos], offset, epoch)))
                    continue
                # Anything else ends the run first (delivered as it was given).
                if not self._deliver_run(watch, epoch, run_route, run):
                    return self._slowly_then_apply(watch, epoch, run_route, run, data, start)
                run = []
                if self.router.turn_wanted:
                    return self._turn_then_apply(watch, data, start, epoch)
            payload = data[route_end:pos]
            if not update:
                if run:
                    if not self._deliver_run(watch, epoch, run_route, run):
                        return self._slowly_then_apply(watch, epoch, run_route, run, data, start)
                    run = []
                if not watch.control:
                    target, skip = decode_route(route)
                    frame = wire.ephemeral_frame(payload)
                    self.router.deliver_ephemeral(watch.user, frame, target, skip)
            else:
                if watch.epoch is not None and epoch != watch.epoch:
                    # Subscribed all along, so nothing of the old epoch was missed;
                    # but local positions in it are void (control: nothing to do).
                    self.restart(watch, epoch)
                watch.epoch = epoch
                last = watch.last
                if last is not None:
                    if offset <= last:
                        continue
                    if offset > last + 1:
                        return self._fill_then_apply(watch, data, start, epoch, offset)
                if watch.control:
                    self._deliver(watch, offset, epoch, route, payload)
                else:
                    run_route = route
                    run.append((offset, wire.update_frame(payload, offset, epoch)))
                    continue
            if self.router.turn_wanted and pos < end:
                return self._turn_then_apply(watch, data, pos, epoch)
        if run and not self._deliver_run(watch, epoch, run_route, run):
            return self._slowly_then_apply(watch, epoch, run_route, run, data, end)
        return None

    def _deliver_run(
        self, watch: Watch, epoch: str, route: bytes, run: list[tuple[int, bytes]]
    ) -> bool:
        """Framed updates with consecutive offsets and one route, to the local connections.

        False (nothing done) when some queue would not take them in one step.
        """
        target, skip = decode_route(route)
        if len(run) > 1 and not self.router.deliver_update_run(watch.user, run, target, skip):
            return False
        if len(run) == 1:
            self.router.deliver_update(watch.user, run[0][0], run[0][1], target, skip)
        watch.last = run[-1][0]
        watch.delivered += len(run)
        return True

    async def _slowly_then_apply(
        self,
        watch: Watch,
        epoch: str,
        route: bytes,
        run: list[tuple[int, bytes]],
        data: bytes,
        pos: int,
    ) -> None:
        """A run one update at a time, with a turn for the writers whenever a queue fills."""
        target, skip = decode_route(route)
        for offset, frame in run:
            self.router.deliver_update(watch.user, offset, frame, target, skip)
            watch.last = offset
            watch.delivered += 1
            if self.router.turn_wanted:
                await self.router.take_turn()
        await self._go_on(watch, data, pos, epoch)

    async def _turn_then_apply(self, watch: Watch, data: bytes, pos: int, epoch: str) -> None:
        await self.router.take_turn()
        await self._go_on(watch, data, pos, epoch)

    async def _go_on(self, watch: Watch, data: bytes, pos: int, epoch: str) -> None:
        rest = self._apply(watch, data, pos, epoch) if pos < len(data) else None
        if rest is not None:
            await rest

    def _deliver(self, watch: Watch, offset: int, epoch: str, route: bytes, payload: bytes) -> None:
        watch.last = offset
        if watch.control:
            self.apply_control(payload)
            return
        target, skip = decode_route(route)
        frame = wire.update_frame(payload, offset, epoch)
        self.router.deliver_update(watch.user, offset, frame, target, skip)
        watch.delivered += 1

    async def _fill_then_apply(
        self, watch: Watch, data: bytes, pos: int, epoch: str, offset: int
    ) -> None:
        """Read the updates before ``offset`` from the log, then go on from ``pos``."""
        last = watch.last
        assert last is not None
        missing = None
        try:
            reply = (await self.read_after([watch], [last]))[0]
            if reply.epoch == epoch:
                missing = contiguous(reply.entries, last, offset - 1)
        except BrokerUnavailable as e:
            log.warning("could not read the gap %d..%d: %s", last + 1, offset - 1, e)
        if watch.epoch != epoch:
            return  # an open saw a newer epoch meanwhile: these events are history
        if missing is None:
            self.lost(watch)
        else:
            for entry in missing:
                self._deliver(watch, entry.offset, epoch, entry.route, entry.payload)
        watch.last = offset - 1
        await self._go_on(watch, data, pos, epoch)

    # -- failures -----------------------------------------------------------------

    def restart(self, watch: Watch, epoch: str | None) -> None:
        """The stream now has ``epoch`` (None: gone): end local streams of another epoch."""
        if watch.epoch is not None and watch.epoch != epoch:
            watch.retired.append(watch.epoch)
        watch.epoch = epoch
        watch.last = None
        if watch.control:
            return
        ended = 0
        for connection in self.router.registry.of_user(watch.user):
            position = watch.positions.get(connection.connection_id)
            if position is not None and position[1] != epoch:
                del watch.positions[connection.connection_id]
                self.router.close_connection(connection, CloseReason.SHUTDOWN, RESET_MESSAGE)
                ended += 1
        if ended:
            log.warning("history of user %r was reset: ended %d local streams", watch.user, ended)

    def lost(self, watch: Watch) -> None:
        """Updates were missed and cannot be delivered: end the streams that needed them."""
        watch.last = None
        if watch.control:
            connections = list(self.router.registry.all())
        else:
            watch.positions.clear()
            connections = self.router.registry.of_user(watch.user)
        for connection in connections:
            self.router.close_connection(connection, CloseReason.SHUTDOWN, LOST_MESSAGE)
        if connections:
            who = "all users (control stream)" if watch.control else repr(watch.user)
            log.warning("missed events of %s: ended %d local streams", who, len(connections))

    # -- recovery after the subscription was interrupted ------------------------------

    async def on_recover(self, channels: list[bytes]) -> None:
        reads = []
        for channel in channels:
            watch = self.by_channel.get(channel)
            if watch is not None:
                # Open marks published while the subscription was down are
                # lost: let those connections have ephemerals from now on.
                for connection in self.router.registry.of_user(watch.user):
                    connection.opening = False
                after = watch.recover_from()
                if after is not None:
                    reads.append((watch, after))
        if not reads:
            return
        try:
            replies = await self.read_after([w for w, _ in reads], [a for _, a in reads])
        except BrokerUnavailable as e:
            log.warning("recovery after a lost subscription failed: %s", e)
            for watch, _ in reads:
                self._recovery_failed(watch)
            return
        for (watch, after), reply in zip(reads, replies, strict=True):
            if reply.epoch is None or (watch.epoch is not None and reply.epoch != watch.epoch):
                if watch.control:
                    self._recovery_failed(watch)
                else:
                    self.restart(watch, reply.epoch)
                continue
            watch.epoch = reply.epoch
            missing = contiguous(reply.entries, after, reply.head)
            if missing is None:
                self._recovery_failed(watch)
                continue
            for entry in missing:
                self._deliver(watch, entry.offset, reply.epoch, entry.route, entry.payload)
                if self.router.turn_wanted:  # writers take their turn in a long catch-up
                    await self.router.take_turn()
            watch.last = max(after, reply.head)

    def _recovery_failed(self, watch: Watch) -> None:
        self.lost(watch)
        if watch.control:
            # Start over from wherever the control stream is now.
            watch.epoch = None
            watch.floor = None
            self._refloor_control()

    @abc.abstractmethod
    def _refloor_control(self) -> None:
        """Note the control stream's epoch and head again (in the background)."""
