"""Driving a broker the way the gRPC service does, without sockets.

A ``Node`` is one router node (an ``EventRouter`` and its broker); an
``Inbox`` reads what a connection's queue received, parsed with the
generated ``SubscribeResponse``.  Waiting is always on a condition (the
queue's own wake-up) with a deadline, never a sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from eventrouter.server.broker.base import Broker
from eventrouter.server.core.connections import (
    ClientConnection,
    MachineScopedConnection,
    SessionScopedConnection,
    UserScopedConnection,
)
from eventrouter.server.core.filters import ALL_CONNECTIONS, RecipientFilter
from eventrouter.server.core.router import EmitResult, EventRouter, OpenResult
from eventrouter.v1 import events_pb2 as ev
from eventrouter.v1 import router_service_pb2 as pb

DEADLINE_S = 10.0


def update_payload(event_id: str) -> ev.UpdatePayload:
    return ev.UpdatePayload(
        id=event_id,
        seq=1,
        body=ev.UpdateEvent(new_feed_post=ev.NewFeedPost(id=event_id, cursor="c")),
        created_at_ms=1,
    )


def ephemeral_payload(tag: str) -> ev.EphemeralPayload:
    return ev.EphemeralPayload(
        activity=ev.SessionActivity(session_id=tag, active=True, active_at_ms=1)
    )


def connection(user: str, scope: str = "user") -> ClientConnection:
    """``user``, ``session:<id>`` or ``machine:<id>``."""
    kind, _, ident = scope.partition(":")
    if kind == "session":
        return SessionScopedConnection(user, session_id=ident)
    if kind == "machine":
        return MachineScopedConnection(user, machine_id=ident)
    return UserScopedConnection(user)


@dataclass(frozen=True, slots=True)
class Got:
    """One delivered event: ("update", id, offset, epoch) or ("ephemeral", tag, 0, "")."""

    kind: str
    ident: str
    offset: int = 0
    epoch: str = ""


@dataclass
class Inbox:
    conn: ClientConnection
    opened: OpenResult
    got: list[Got] = field(default_factory=list)

    def poll(self) -> list[Got]:
        queue = self.conn.queue
        assert queue is not None
        frames: list[bytes] = []
        while queue.has_pending():
            frames.extend(queue.drain())
        for event in pb.SubscribeResponse.FromString(b"".join(frames)).events:
            kind = event.WhichOneof("event")
            if kind == "update":
                u = event.update
                self.got.append(Got("update", u.payload.id, u.position.offset, u.position.epoch))
            elif kind == "ephemeral":
                self.got.append(Got("ephemeral", event.ephemeral.activity.session_id))
        return self.got

    @property
    def updates(self) -> list[str]:
        return [g.ident for g in self.poll() if g.kind == "update"]

    @property
    def ephemerals(self) -> list[str]:
        return [g.ident for g in self.poll() if g.kind == "ephemeral"]

    @property
    def closed(self) -> bool:
        queue = self.conn.queue
        return queue is not None and queue.closure is not None

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait on the queue until ``condition()`` holds after polling; fail past the deadline."""
        queue = self.conn.queue
        assert queue is not None
        end = time.monotonic() + DEADLINE_S
        while True:
            self.poll()
            if condition():
                return
            remaining = end - time.monotonic()
            if remaining <= 0 or (queue.closure is not None and not queue.has_pending()):
                raise AssertionError(
                    f"{what}: not reached (closed={queue.closure}); got {self.got}"
                )
            try:
                async with asyncio.timeout(remaining):
                    await queue.wait()
            except TimeoutError:
                continue

    async def has_update(self, ident: str) -> None:
        await self.until(lambda: ident in self.updates, f"update {ident!r}")

    async def has_ephemeral(self, tag: str) -> None:
        await self.until(lambda: tag in self.ephemerals, f"ephemeral {tag!r}")


class Node:
    """One router node: its ``EventRouter`` and broker, used as the service uses them."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.router: EventRouter = broker.router

    async def open(
        self, user: str, scope: str = "user", resume_from: tuple[int, str] | None = None
    ) -> Inbox:
        conn = connection(user, scope)
        opened = await self.broker.open(conn, resume_from)
        return Inbox(conn, opened)

    def close(self, inbox: Inbox) -> None:
        """What the service does when a stream ends."""
        self.router.remove_connection(inbox.conn.user_id, inbox.conn)
        self.broker.closed(inbox.conn)

    async def update(
        self,
        user: str,
        event_id: str,
        target: RecipientFilter = ALL_CONNECTIONS,
        skip: str | None = None,
    ) -> EmitResult:
        return await self.broker.emit_update(user, update_payload(event_id), target, skip)

    async def ephemeral(
        self,
        user: str,
        tag: str,
        target: RecipientFilter = ALL_CONNECTIONS,
        skip: str | None = None,
        key: str | None = None,
    ) -> EmitResult:
        return await self.broker.emit_ephemeral(user, ephemeral_payload(tag), target, skip, key)


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, deadline_s: float = DEADLINE_S
) -> None:
    """Poll an async condition (for state with no wake-up to wait on, e.g. presence in Redis)."""
    end = time.monotonic() + deadline_s
    while not await check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
