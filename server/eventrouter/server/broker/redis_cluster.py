"""What the Redis broker holds for the whole cluster besides events.

``ClusterState`` is a part of ``RedisBroker``: the stream and emit rate
limits counted across nodes (redis_limits), revocations kept for nodes that
start later and the directory of live nodes (redis_revocations).

When Redis cannot be reached nothing is admitted unchecked: a Subscribe
whose stream cannot be counted and an emit whose rate cannot be charged fail
with UNAVAILABLE (BrokerUnavailable), as every call needing Redis does; a
Disconnect whose revocation cannot be stored answers UNAVAILABLE too (its
streams ended already; it is safe to retry).  A node opens no stream before
it has read the revocations, and its health stays NOT_SERVING until then.
"""

from __future__ import annotations

import abc
import asyncio
import logging

from eventrouter.server.broker.base import Broker, BrokerUnavailable, LimitReached, NodeRecord
from eventrouter.server.broker.redis_client import RedisCalls
from eventrouter.server.broker.redis_config import RedisSettings
from eventrouter.server.broker.redis_limits import ADMIT, RATE, rate_args, rate_key
from eventrouter.server.broker.redis_presence import Presence
from eventrouter.server.broker.redis_revocations import LOAD, NODES, STORE, control_key
from eventrouter.server.broker.redis_scripts import StreamKeys, user_tag
from eventrouter.server.core.connections import ClientConnection

log = logging.getLogger("eventrouter.server.broker.redis")


class ClusterState(Broker):
    """Limits, revocations and live nodes kept in Redis (a base of ``RedisBroker``)."""

    settings: RedisSettings
    # True once this node read the revocations kept in Redis (it opens no stream before).
    revocations_loaded = False
    _nodes: list[NodeRecord] | None = None

    @property
    @abc.abstractmethod
    def redis(self) -> RedisCalls: ...

    @property
    @abc.abstractmethod
    def presence(self) -> Presence: ...

    async def admit(self, connection: ClientConnection) -> None:
        """Count the user's streams on every live node and add this one, or refuse it."""
        if not self.revocations_loaded:
            raise BrokerUnavailable("revocations not read from Redis yet; retry")
        maximum = self.security_limits.max_streams_per_user
        keys = StreamKeys(self.settings.prefix, user_tag(connection.user_id))
        added = await self.redis.eval(
            ADMIT,
            [keys.conns],
            [
                "c:" + connection.connection_id,
                self.presence.value(connection),
                self.router.node_id,
                self.presence.ttl_ms,
                maximum,
            ],
        )
        if not added:
            raise LimitReached(f"user already holds {maximum} streams (the maximum)")

    async def allow_emits(self, service: str, cost: int) -> bool:
        limits = self.security_limits
        taken = await self.redis.eval(
            RATE,
            [rate_key(self.settings.prefix, service)],
            rate_args(limits.emit_rate_per_service, limits.emit_burst_per_service, cost),
        )
        return bool(taken)

    async def store_revocation(self, token_id: str, until: float) -> None:
        key = control_key(self.settings.prefix, "revoked")
        await self.redis.eval(STORE, [key], [token_id, int(until * 1000)])

    async def load_revocations(self) -> None:
        """Apply every revocation kept in Redis (call once subscribed to the control channel)."""
        raw = await self.redis.eval(LOAD, [control_key(self.settings.prefix, "revoked")], [])
        for token_id, until_ms in zip(raw[::2], raw[1::2], strict=True):
            if self.revoke_locally is not None:
                self.revoke_locally(bytes(token_id).decode(), float(until_ms) / 1000)
        if not self.revocations_loaded:
            log.info("read %d revocations kept in Redis", len(raw) // 2)
        self.revocations_loaded = True

    def live_nodes(self) -> list[NodeRecord]:
        return list(self._nodes or [])

    async def announce(self) -> list[NodeRecord]:
        """Renew this node's lease in the node directory; returns the live nodes."""
        raw = await self.redis.eval(
            NODES,
            [control_key(self.settings.prefix, "nodes")],
            [self.router.node_id, self.presence.ttl_ms, len(self.router.registry)],
        )
        nodes = [
            NodeRecord(bytes(node).decode(), int(streams))
            for node, streams in zip(raw[::2], raw[1::2], strict=True)
        ]
        nodes.sort(key=lambda n: n.node_id)
        self._nodes = nodes
        return nodes

    async def _announce_loop(self) -> None:
        while True:
            try:
                await self.announce()
            except BrokerUnavailable as e:
                log.debug("node announcement failed: %s", e)
            await asyncio.sleep(self.settings.presence_refresh_s)
