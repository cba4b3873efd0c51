"""Sharded pub/sub for the Redis broker: one subscriber connection per Redis primary.

Why not redis-py's ``PubSub``: it reconnects and re-subscribes by itself,
silently, and the broker must know when its subscription was interrupted,
because messages published meanwhile are lost and have to be recovered from
the log before live delivery goes on.  (redis-py 8's async ``ClusterPubSub``
does support SSUBSCRIBE, but polls one node after the other with a timeout
and hides reconnects the same way.)  So each shard here is one plain
connection in RESP2 subscribed mode that this module reads itself:

* ``subscribe(channel)`` returns once Redis confirmed the SSUBSCRIBE: from
  then on every message published on the channel reaches ``on_message``.
  Confirmations are matched to commands in order, so a quick
  subscribe/unsubscribe/subscribe of one channel cannot be confused.
* When a connection breaks (or stops answering pings), every channel on it
  is marked ``recover``: after the next SSUBSCRIBE is confirmed, the handler's
  ``on_recover`` runs *in the reader*, before any message that arrived after
  the confirmation is delivered, so nothing is missed and nothing reordered.
* Channels only become active again after that recovery; a caller that
  subscribed before the interruption sees a new ``generation``.
* In a Redis Cluster, a channel lives on the primary owning its slot; after a
  failure (or a slot moving away, which Redis reports as an unsolicited
  SUNSUBSCRIBE) the topology is refreshed and channels are re-placed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from eventrouter.server.broker.stopping import cancel_all

log = logging.getLogger("eventrouter.server.broker.redis")

Address = tuple[str, int]


class SubscriptionLost(Exception):
    """The shard's connection can no longer be trusted to carry every message."""


class SubscriptionHandler(Protocol):
    def on_message(self, channel: bytes, data: bytes) -> Awaitable[None] | None:
        """One published message, in publish order per channel."""

    async def on_recover(self, channels: list[bytes]) -> None:
        """Deliver what these channels missed while unsubscribed (must not raise)."""


class Connection(Protocol):
    """The part of redis-py's asyncio ``Connection`` used here."""

    async def send_command(self, *args: Any, **kwargs: Any) -> None: ...

    async def read_response(self, disable_decoding: bool = ...) -> Any: ...

    async def disconnect(self, nowait: bool = ...) -> None: ...


class Subscription:
    """One channel this node wants; ``active`` once messages flow to the handler."""

    __slots__ = ("active", "channel", "generation", "recover", "sent_on", "shard")

    def __init__(self, channel: bytes, shard: _Shard) -> None:
        self.channel = channel
        self.shard = shard
        self.active = asyncio.Event()
        # Bumped every time the channel becomes active on a new connection.
        self.generation = 0
        # It was active before: messages may have been missed since.
        self.recover = False
        # The connection the SSUBSCRIBE went out on (never twice on one).
        self.sent_on: object | None = None


class _Shard:
    """One subscriber connection to one Redis primary, and the channels placed on it."""

    def __init__(self, owner: Subscriber, address: Address) -> None:
        self.owner = owner
        self.address = address
        self.subs: dict[bytes, Subscription] = {}
        self.live = False
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()
        self._outbox: deque[tuple[bytes, Subscription | bytes]] = deque()
        # Per channel, in send order: (subscription, it needs recovery).
        self._pending: dict[bytes, deque[tuple[Subscription, bool]]] = {}
        self._awaiting_recovery = 0
        self._unsubscribing: dict[bytes, int] = {}
        self._recovering: set[bytes] = set()
        self._buffer: list[tuple[bytes, bytes]] = []
        self._last_rx = 0.0
        self._busy = False
        self.task = asyncio.create_task(self._run(), name=f"redis-subscriber-{address}")

    # -- commands --------------------------------------------------------
    #
    # Subscribe and unsubscribe intents are queued synchronously, in the order
    # they were made, and sent in that order by whoever flushes first: a
    # SUNSUBSCRIBE scheduled by a closing stream can never overtake the
    # SSUBSCRIBE of a stream of the same user opened right after it.

    def enqueue_subscribe(self, sub: Subscription) -> None:
        if self._conn is not None:
            self._outbox.append((b"SSUBSCRIBE", sub))

    def enqueue_unsubscribe(self, channel: bytes) -> None:
        if self._conn is not None:
            self._outbox.append((b"SUNSUBSCRIBE", channel))

    async def flush(self) -> None:
        conn = self._conn
        if conn is None:
            return
        async with self._lock:
            try:
                while self._outbox and conn is self._conn:
                    command, item = self._outbox.popleft()
                    if isinstance(item, Subscription):
                        channel = item.channel
                        if self.subs.get(channel) is not item or item.sent_on is conn:
                            continue
                        item.sent_on = conn
                        self._pending.setdefault(channel, deque()).append((item, item.recover))
                        if item.recover:
                            self._awaiting_recovery += 1
                    else:
                        channel = item
                        self._unsubscribing[channel] = self._unsubscribing.get(channel, 0) + 1
                    await conn.send_command(command.decode(), channel)
            except Exception as e:  # the read loop notices the broken connection
                log.debug("sending to %s failed: %r", self.address, e)
                await conn.disconnect(nowait=True)

    # -- connection lifecycle ----------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                conn = await self.owner.connect(self.address)
            except Exception as e:
                failures += 1
                log.debug("subscriber connect to %s failed: %r", self.address, e)
                await self.owner.shard_failed(self)
                await asyncio.sleep(self.owner.backoff(failures))
                continue
            failures = 0
            try:
                await self._session(conn)
            except (SubscriptionLost, OSError, ConnectionError) as e:
                log.warning("subscription to %s lost: %s", self.address, e)
            except Exception as e:
                # redis-py raises its own ConnectionError/TimeoutError (RedisError).
                log.warning("subscription to %s lost: %r", self.address, e)
            finally:
                self._end_session()
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
            await self.owner.shard_failed(self)
            await asyncio.sleep(self.owner.backoff(1))

    async def _session(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        self._conn = conn
        self._last_rx = loop.time()
        self.live = True
        self._outbox.clear()
        for sub in self.subs.values():
            self.enqueue_subscribe(sub)
        await self.flush()
        reader = asyncio.create_task(self._read_loop(conn))
        pinger = asyncio.create_task(self._ping_loop(conn))
        try:
            done, _ = await asyncio.wait({reader, pinger}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            raise SubscriptionLost("subscriber stopped")
        finally:
            for task in (reader, pinger):
                task.cancel()
            # Closing the connection first wakes a read with EOF even if it let
            # its cancellation go (see stopping.cancel_all), then they end.
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            await cancel_all((reader, pinger), self.owner.timeout_s)

    def _end_session(self) -> None:
        self._conn = None
        self._outbox.clear()
        self.live = False
        self._pending.clear()
        self._awaiting_recovery = 0
        self._unsubscribing.clear()
        self._recovering.clear()
        self._buffer.clear()
        for sub in self.subs.values():
            if sub.active.is_set() or sub.recover:
                sub.active.clear()
                sub.recover = True

    async def _ping_loop(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        interval = self.owner.ping_interval_s
        while True:
            await asyncio.sleep(interval)
            if not self._busy and loop.time() - self._last_rx > 2 * interval + self.owner.timeout_s:
                raise SubscriptionLost("Redis stopped answering pings")
            async with self._lock:
                async with asyncio.timeout(self.owner.timeout_s):
                    await conn.send_command("PING")

    # -- reading -----------------------------------------------------------

    async def _read_loop(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        handler = self.owner.handler
        unyielding = 0
        while True:
            reply = await conn.read_response()
            self._last_rx = loop.time()
            # Buffered replies are returned without yielding: in a burst, let the
            # stream writers (and everything else) run now and then.
            unyielding += 1
            if unyielding >= 64:
                unyielding = 0
                await asyncio.sleep(0)
            if not isinstance(reply, list) or len(reply) < 2:
                continue
            kind, channel = reply[0], reply[1]
            if kind == b"smessage":
                if channel in self._recovering:
                    self._buffer.append((channel, reply[2]))
                    continue
                pending = handler.on_message(channel, reply[2])
                if pending is not None:
                    await self._busy_await(pending)
            elif kind == b"ssubscribe":
                await self._confirmed(channel)
            elif kind == b"sunsubscribe":
                outstanding = self._unsubscribing.pop(channel, 0)
                if outstanding > 1:
                    self._unsubscribing[channel] = outstanding - 1
                if outstanding:
                    continue
                if channel in self.subs:
                    # Redis dropped it: its slot moved to another primary.
                    raise SubscriptionLost(f"Redis unsubscribed {channel!r} (slot moved?)")

    async def _confirmed(self, channel: bytes) -> None:
        queue = self._pending.get(channel)
        if not queue:
            return
        sub, needs_recovery = queue.popleft()
        if not queue:
            del self._pending[channel]
        if needs_recovery:
            self._awaiting_recovery -= 1
        if self.subs.get(channel) is sub:
            if sub.recover:
                self._recovering.add(channel)
            else:
                _activate(sub)
        if self._recovering and self._awaiting_recovery == 0:
            await self._recover()

    async def _recover(self) -> None:
        channels = sorted(self._recovering)
        await self._busy_await(self.owner.handler.on_recover(channels))
        buffered, self._buffer = self._buffer, []
        self._recovering.clear()
        handler = self.owner.handler
        for channel, data in buffered:
            pending = handler.on_message(channel, data)
            if pending is not None:
                await self._busy_await(pending)
        for channel in channels:
            sub = self.subs.get(channel)
            if sub is not None and sub.recover:
                sub.recover = False
                _activate(sub)

    async def _busy_await(self, pending: Awaitable[None]) -> None:
        self._busy = True
        try:
            await pending
        finally:
            self._busy = False
            self._last_rx = asyncio.get_running_loop().time()


def _activate(sub: Subscription) -> None:
    sub.generation += 1
    sub.active.set()


class Subscriber:
    """The node's subscriptions, placed on shards (one in single-Redis mode)."""

    def __init__(
        self,
        handler: SubscriptionHandler,
        connect: Callable[[Address], Awaitable[Connection]],
        placement: Callable[[bytes], Address],
        refresh_topology: Callable[[], Awaitable[None]] | None = None,
        *,
        timeout_s: float = 1.0,
        ping_interval_s: float = 1.0,
    ) -> None:
        self.handler = handler
        self.connect = connect
        self._placement = placement
        self._refresh_topology = refresh_topology
        self.timeout_s = timeout_s
        self.ping_interval_s = ping_interval_s
        self._shards: dict[Address, _Shard] = {}
        self._subs: dict[bytes, Subscription] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def connected(self) -> bool:
        """Every shard holding a channel has a working connection."""
        return all(shard.live for shard in self._shards.values() if shard.subs)

    def backoff(self, failures: int) -> float:
        base: float = min(1.0, 0.05 * 2.0 ** min(failures, 10))
        return base * (0.5 + random.random() / 2)

    async def subscribe(self, channel: bytes) -> Subscription:
        """Return once messages on ``channel`` reach the handler (the caller bounds the wait)."""
        sub = self._subs.get(channel)
        if sub is None:
            shard = self._shard(self._placement(channel))
            sub = self._subs[channel] = shard.subs[channel] = Subscription(channel, shard)
            shard.enqueue_subscribe(sub)
            await shard.flush()
        await sub.active.wait()
        return sub

    def current(self, sub: Subscription, generation: int) -> bool:
        """True while ``sub`` has stayed active since it had ``generation``."""
        return (
            self._subs.get(sub.channel) is sub
            and sub.active.is_set()
            and sub.generation == generation
        )

    def unsubscribe(self, channel: bytes) -> None:
        sub = self._subs.pop(channel, None)
        if sub is None:
            return
        shard = sub.shard
        shard.subs.pop(channel, None)
        sub.active.clear()
        if shard.live:
            shard.enqueue_unsubscribe(channel)
            self._spawn(shard.flush())

    async def shard_failed(self, shard: _Shard) -> None:
        """A shard lost its connection: in a cluster, re-place its channels."""
        if self._refresh_topology is None or not shard.subs:
            return
        try:
            await self._refresh_topology()
        except Exception as e:
            log.debug("cluster topology refresh failed: %r", e)
            return
        for channel, sub in list(shard.subs.items()):
            try:
                address = self._placement(channel)
            except Exception:
                continue
            if address == shard.address:
                continue
            del shard.subs[channel]
            target = self._shard(address)
            target.subs[channel] = sub
            sub.shard = target
            sub.active.clear()
            sub.recover = True
            target.enqueue_subscribe(sub)
            self._spawn(target.flush())

    def _shard(self, address: Address) -> _Shard:
        shard = self._shards.get(address)
        if shard is None:
            shard = self._shards[address] = _Shard(self, address)
        return shard

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        tasks = [shard.task for shard in self._shards.values()] + list(self._tasks)
        await cancel_all(tasks, self.timeout_s)
        self._shards.clear()
        self._subs.clear()
