"""The Redis broker: many router nodes share one Redis (>= 7.0) or one Redis Cluster.

The path of an update, as in centrifuge's ``broker_redis.go``:

1. ``Emit`` runs one Lua script (redis_scripts.EMIT) on the user's slot: it
   checks the idempotency key, numbers the update (INCR), appends it to the
   user's log (a Stream, entry id = offset) and SPUBLISHes it on the user's
   channel.  An ``EmitBatch`` is one script call per user (that user's
   events, in order, in one published message), all of them pipelined in
   one round trip.  The script is atomic and Redis keeps one publish order
   per channel, so every node sees a user's updates in offset order.  The
   emit is acknowledged only after the script returned.
2. Each node holds one subscriber connection per Redis primary
   (redis_subscriber), subscribed to the channel of every user with a
   connection on this node.  A message is walked in place, each update
   encoded once into a frame, and consecutive updates with one route are
   handed to ``EventRouter.deliver_update_run`` (one step per queue), as the
   memory broker does with a batch's runs.
3. A subscriber that lost its connection recovers every missed update from
   the log before delivering live ones again; where it cannot (history
   trimmed, expired or lost), it closes the affected streams with
   UNAVAILABLE so their clients resume and learn it.  Never a silent hole.

``reached`` (EmitResponse): the user's connections, on every live node, that
the filter selected according to presence when the script ran; delivery to
them happens after the reply, on their nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

from eventrouter.server.broker.base import (
    Broker,
    BrokerUnavailable,
    ConnectionRecord,
    EmitItem,
)
from eventrouter.server.broker.redis_client import Call, RedisCalls
from eventrouter.server.broker.redis_cluster import ClusterState
from eventrouter.server.broker.redis_config import RedisSettings
from eventrouter.server.broker.redis_presence import Presence
from eventrouter.server.broker.redis_replay import ReplayShares
from eventrouter.server.broker.redis_scripts import (
    BATCH,
    CONTROL_TAG,
    EMIT,
    OPEN,
    READ,
    StreamKeys,
    emit_call,
    parse_open,
    stream_keys,
    user_tag,
)
from eventrouter.server.broker.redis_subscriber import Subscriber, Subscription
from eventrouter.server.broker.redis_watch import (
    CONTROL_ROUTE,
    Reply,
    Watch,
    WatchDelivery,
    decode_control,
    encode_control,
    parse_entries,
)
from eventrouter.server.broker.stopping import cancel_all
from eventrouter.server.core.connections import ClientConnection
from eventrouter.server.core.filters import RecipientFilter
from eventrouter.server.core.history import new_epoch
from eventrouter.server.core.router import EmitResult, EventRouter, OpenResult, ResumeStatus
from eventrouter.v1 import events_pb2
from eventrouter.v1 import router_service_pb2 as pb

log = logging.getLogger("eventrouter.server.broker.redis")

_CONTROL_MAX_UPDATES = 1000


class RedisBroker(ClusterState, WatchDelivery, Broker):
    """A ``Broker`` over Redis: see the module docstring for the guarantees."""

    def __init__(self, router: EventRouter, settings: RedisSettings) -> None:
        Broker.__init__(self, router)
        WatchDelivery.__init__(self, router, Watch("", StreamKeys(settings.prefix, CONTROL_TAG)))
        self.settings = settings
        limits = router.limits
        self._max_updates = limits.history.max_updates
        self._max_age_ms = int(limits.history.max_age_s * 1000)
        self._presence_ttl_ms = int(settings.presence_ttl_s * 1000)
        # Keys of a user with connections are refreshed with presence, so they
        # must outlive a presence period even under a tiny history age.
        self._history_ttl_ms = max(self._max_age_ms, self._presence_ttl_ms, 1000)
        self._window_ms = int(limits.idempotency_window_s * 1000)
        self._redis: RedisCalls | None = None
        self._subscriber: Subscriber | None = None
        self._presence: Presence | None = None
        self._watches: dict[str, Watch] = {}
        self.replays = ReplayShares(router.registry)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []

    @property
    def redis(self) -> RedisCalls:
        assert self._redis is not None, "RedisBroker.start() was not called"
        return self._redis

    @property
    def subscriber(self) -> Subscriber:
        assert self._subscriber is not None, "RedisBroker.start() was not called"
        return self._subscriber

    @property
    def presence(self) -> Presence:
        assert self._presence is not None, "RedisBroker.start() was not called"
        return self._presence

    # -- lifecycle

    async def start(self) -> None:
        s = self.settings
        redis = self._redis = RedisCalls(s)
        self._presence = Presence(
            redis, self.router.node_id, self._presence_ttl_ms, self._history_ttl_ms
        )
        self._subscriber = Subscriber(
            self,
            self._connect,
            redis.placement,
            redis.refresh_topology if s.cluster else None,
            timeout_s=s.timeout_s,
            ping_interval_s=s.health_interval_s,
        )
        await redis.ping()
        self.by_channel[self.control.keys.channel] = self.control
        control = asyncio.create_task(self._control_setup(), name="control-setup")
        self._loops = [
            control,
            asyncio.create_task(self._health_loop()),
            asyncio.create_task(self._presence_loop()),
            asyncio.create_task(self._announce_loop()),
        ]
        # Serve even while Redis is away (health says NOT_SERVING meanwhile).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(s.timeout_s * 2):
                await asyncio.shield(control)
        if not redis.reachable:
            log.warning("Redis at %s is unreachable; retrying in the background", s.url)

    async def _connect(self, address: tuple[str, int]) -> Any:
        # Looked up at call time, so a test can hold reconnections back.
        return await self.redis.connect(address)

    async def close(self) -> None:
        pending = list(self._tasks)
        if pending:
            await asyncio.wait(pending, timeout=self.settings.timeout_s)
        await cancel_all([*self._loops, *self._tasks], self.settings.timeout_s)
        if self._subscriber is not None:
            await self._subscriber.close()
        if self._redis is not None:
            await self._redis.close()

    def healthy(self) -> bool:
        return (
            self._redis is not None
            and self._redis.reachable
            and self._subscriber is not None
            and self._subscriber.connected
            and self.revocations_loaded
        )

    async def _health_loop(self) -> None:
        # As start() found it (its subscriptions may still be settling).
        reported = self.redis.reachable
        while True:
            await asyncio.sleep(self.settings.health_interval_s)
            await self.redis.ping()
            healthy = self.healthy()
            if healthy != reported:
                reported = healthy
                if healthy:
                    log.info("Redis broker reachable again")
                else:
                    log.warning("Redis broker unreachable: emits and opens fail with UNAVAILABLE")

    async def _control_setup(self) -> None:
        """Subscribe to the control channel and note where its stream stands."""
        failures = 0
        while True:
            try:
                await self.subscriber.subscribe(self.control.keys.channel)
                epoch, head, _, _ = await self._open_script(self.control.keys, "", "", -1, 0)
                control = self.control
                if control.epoch is None:
                    control.epoch = epoch
                if control.last is None and control.epoch == epoch:
                    control.floor = head
                await self.load_revocations()
                return
            except Exception as e:
                failures += 1
                log.debug("control channel setup failed: %r", e)
                await asyncio.sleep(self.subscriber.backoff(failures))

    def _refloor_control(self) -> None:
        if not any(t.get_name() == "control-setup" for t in self._loops if not t.done()):
            self._loops.append(asyncio.create_task(self._control_setup(), name="control-setup"))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- emitting

    async def emit_update(
        self,
        user_id: str,
        payload: events_pb2.UpdatePayload,
        recipient_filter: RecipientFilter,
        skip_connection_id: str | None,
    ) -> EmitResult:
        item = EmitItem(user_id, payload, recipient_filter, skip_connection_id)
        return (await self.emit_many([item]))[0]

    async def emit_ephemeral(
        self,
        user_id: str,
        payload: events_pb2.EphemeralPayload,
        recipient_filter: RecipientFilter,
        skip_connection_id: str | None,
        idempotency_key: str | None,
    ) -> EmitResult:
        item = EmitItem(user_id, payload, recipient_filter, skip_connection_id, idempotency_key)
        return (await self.emit_many([item]))[0]

    async def emit_many(self, items: Sequence[EmitItem]) -> list[EmitResult]:
        """One script call per user (its items in order, atomically), pipelined."""
        by_user: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            by_user.setdefault(item.user_id, []).append(i)
        prefix, epoch = self.settings.prefix, new_epoch()
        calls = [
            emit_call(
                stream_keys(prefix, user),
                [items[i] for i in idx],
                self._max_updates,
                self._history_ttl_ms,
                self._window_ms,
                epoch,
            )
            for user, idx in by_user.items()
        ]
        replies = await self.redis.eval_many(EMIT, calls)
        results: list[EmitResult | None] = [None] * len(items)
        for idx, reply in zip(by_user.values(), replies, strict=True):
            for i, raw in zip(idx, reply, strict=True):
                dup, reached, offset, epoch = bytes(raw).decode().split("\n")
                results[i] = EmitResult(int(reached), dup == "1", int(offset), epoch)
                if dup == "1":
                    self.router.stats.duplicates += 1
        return [r for r in results if r is not None]

    # -- connections

    async def open(
        self, connection: ClientConnection, resume_from: tuple[int, str] | None
    ) -> OpenResult:
        user = connection.user_id
        self.router.limits.ids.check(user, "user_id")
        watch = self._watch(user)
        watch.opening += 1
        registered = False
        try:
            await self.admit(connection)
            sub = await self._subscribe(watch)
            generation = sub.generation
            # Subscribed first, registered second, position read third: every
            # update numbered after the read is published after the
            # subscription was confirmed, so it reaches this connection live.
            # Hence the head read *after* registration is a position without a
            # gap, and live copies of updates up to it (they may arrive while
            # we await) are dropped by push_replay(through_offset=head).
            # Ephemerals wait for the script's open mark (on_message): those
            # arriving before it were emitted before the connection opened.
            connection.opening = True
            self.router.register(connection)
            registered = True
            seen = watch.delivered
            value = self.presence.value(connection)
            field, ttl = "c:" + connection.connection_id, self._history_ttl_ms
            # Resumes share what they read (redis_replay).
            async with self.replays.reading(user, resume_from) as read_after:
                epoch, head, now_ms, raw = await self._open_script(
                    watch.keys, field, value, read_after, ttl
                )
                if not self.subscriber.current(sub, generation):
                    raise BrokerUnavailable("the Redis subscription was interrupted; retry")
                if watch.epoch is None:
                    watch.epoch = epoch
                elif watch.epoch != epoch:
                    if watch.delivered != seen:
                        raise BrokerUnavailable("the user's history was reset while opening; retry")
                    self.restart(watch, epoch)
                status, failure, replay = self.replays.plan(
                    user, resume_from, read_after, epoch, head, now_ms, raw, self._limits()
                )
                assert connection.queue is not None
                if resume_from is not None:
                    self.replays.follow(connection)
                replayed = self.router.queue_replay(connection, replay)
            connection.queue.push_replay((), through_offset=head)
            watch.positions[connection.connection_id] = (head, epoch)
            self.router.count_resume(status)
            # As the memory broker: a resumed stream reports where the client
            # asked; the replayed updates move it forward as they arrive.
            position = resume_from[0] if resume_from and status is ResumeStatus.RESUMED else head
            return OpenResult(status, failure, replayed, position, epoch)
        except BaseException:
            if registered:
                self.router.remove_connection(user, connection)
                watch.positions.pop(connection.connection_id, None)
            self._spawn(self.presence.forget([(user, connection.connection_id)]))
            raise
        finally:
            watch.opening -= 1
            self._release(watch)
            self.replays.settle(user)

    def _limits(self) -> tuple[int, int]:
        return self._max_updates, self._max_age_ms

    async def _open_script(
        self, keys: StreamKeys, field: str, value: str, after: int, ttl_ms: int
    ) -> tuple[str, int, int, list[Any]]:
        reply = await self.redis.eval(
            OPEN,
            [keys.epoch, keys.head, keys.log, keys.conns, keys.channel.decode()],
            [
                new_epoch(),
                ttl_ms,
                field,
                value,
                "n:" + self.router.node_id,
                self._presence_ttl_ms,
                after,
            ],
        )
        epoch, head, now_ms, raw = reply
        return bytes(epoch).decode(), int(head), int(now_ms), list(raw)

    async def _subscribe(self, watch: Watch) -> Subscription:
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                return await self.subscriber.subscribe(watch.keys.channel)
        except TimeoutError:
            raise BrokerUnavailable("Redis subscription not confirmed in time") from None
        except Exception as e:  # e.g. no cluster topology yet (SlotNotCoveredError)
            raise self.redis.unavailable(e) from e

    def closed(self, connection: ClientConnection) -> None:
        watch = self._watches.get(connection.user_id)
        if watch is not None:
            watch.positions.pop(connection.connection_id, None)
            self._release(watch)
        self.replays.settle(connection.user_id)
        self._spawn(self.presence.forget([(connection.user_id, connection.connection_id)]))

    def _watch(self, user: str) -> Watch:
        watch = self._watches.get(user)
        if watch is None:
            watch = Watch(user, StreamKeys(self.settings.prefix, user_tag(user)))
            self._watches[user] = watch
            self.by_channel[watch.keys.channel] = watch
        return watch

    def _release(self, watch: Watch) -> None:
        """Stop watching a user this node no longer holds (unsubscribing is scheduled)."""
        if watch.opening or self.router.registry.has_user(watch.user):
            return
        if self._watches.get(watch.user) is watch:
            del self._watches[watch.user]
            del self.by_channel[watch.keys.channel]
            self.subscriber.unsubscribe(watch.keys.channel)

    # -- presence

    async def connections(self, user_id: str) -> list[ConnectionRecord]:
        return await self.presence.connections(user_id)

    async def _presence_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.presence_refresh_s)
            try:
                await self.presence.refresh(list(self._watches.values()), self.router.registry)
            except BrokerUnavailable as e:
                log.debug("presence refresh failed: %s", e)

    # -- cluster-wide Disconnect

    async def broadcast_disconnect(self, request: pb.DisconnectRequest) -> None:
        keys = self.control.keys
        payload = encode_control(self.router.node_id, request)
        await self.redis.eval(
            EMIT,
            [keys.epoch, keys.head, keys.log, keys.conns, keys.channel.decode()],
            [new_epoch(), _CONTROL_MAX_UPDATES, 0, 0, 1, "u", 0, CONTROL_ROUTE, payload],
        )

    def apply_control(self, payload: bytes) -> None:
        origin, request = decode_control(payload)
        if origin == self.router.node_id or self.disconnect_locally is None:
            return
        try:
            ended = self.disconnect_locally(request)
        except Exception:
            log.exception("applying a Disconnect from node %s failed", origin)
            return
        log.info("Disconnect from node %s ended %d streams here", origin, ended)

    # -- reading the log (WatchDelivery needs these)

    async def read_after(self, watches: Sequence[Watch], after: Sequence[int]) -> list[Reply]:
        calls: list[Call] = [
            ([w.keys.epoch, w.keys.head, w.keys.log], [a])
            for w, a in zip(watches, after, strict=True)
        ]
        replies = await self.redis.eval_many(READ, calls)
        out = []
        for reply in replies:
            epoch = bytes(reply[0]).decode() or None
            out.append(Reply(epoch, int(reply[1]), parse_entries(reply[3])))
        return out

    def on_message(self, channel: bytes, data: bytes) -> Any:
        watch = self.by_channel.get(channel)
        if watch is None:
            return None
        try:
            if data[0] == BATCH:
                pending = self.on_batch(watch, data)
            else:
                opened = self.router.registry.get(parse_open(data).connection_id)
                if opened is not None:
                    opened.opening = False
                return None
        except (ValueError, IndexError):
            log.error("malformed message on %r (a node of another release?)", channel)
            return None
        if pending is None and self.router.turn_wanted:
            # Some queue filled to half: give its writer a turn before the next
            # message of a burst (the subscriber reads buffered replies without
            # yielding otherwise).  A yield, never a wait: this reader serves
            # every user of the node.
            return self.router.take_turn()
        return pending

    def __repr__(self) -> str:
        return f"RedisBroker({self.settings.url!r}, node={self.router.node_id!r})"
