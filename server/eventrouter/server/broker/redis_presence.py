"""Cluster-wide presence: which connections each node holds, for GetConnections.

Per user, one hash (``<prefix>:{<user>}:conns``) holds ``c:<connection>`` ->
``node\\nscope\\nopened ms`` and ``n:<node>`` -> the Redis time until which that
node's entries count.  A node writes its entry when a stream opens, deletes
it when the stream ends, and every ``presence_refresh`` seconds re-announces
its connections and pushes its ``n:`` deadline ``presence_ttl`` ahead.  A
node that dies (SIGKILL, partition) stops doing so: its entries stop
counting after ``presence_ttl`` and are removed by the next reader.

The refresh only writes; removals are HDELs retried until they succeed, and
a connection that closed while a refresh was in flight is removed again
after it, so a refresh cannot hide a new stream nor revive an ended one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from eventrouter.server.broker.base import BrokerUnavailable, ConnectionRecord, scope_label
from eventrouter.server.broker.redis_client import Call, RedisCalls
from eventrouter.server.broker.redis_scripts import PRESENCE, REFRESH, StreamKeys, user_tag
from eventrouter.server.broker.redis_watch import Watch
from eventrouter.server.core.connections import ClientConnection
from eventrouter.server.core.registry import ConnectionRegistry

log = logging.getLogger("eventrouter.server.broker.redis")

_CHUNK = 500


class Presence:
    def __init__(
        self, calls: RedisCalls, node_id: str, presence_ttl_ms: int, history_ttl_ms: int
    ) -> None:
        self.calls = calls
        self.node_id = node_id
        self.ttl_ms = presence_ttl_ms
        self.history_ttl_ms = history_ttl_ms
        # connection id -> user: entries whose removal failed (retried with each refresh).
        self._unforgotten: dict[str, str] = {}

    def value(self, connection: ClientConnection) -> str:
        return f"{self.node_id}\n{scope_label(connection)}\n{connection.opened_at_ms}"

    def _conns_key(self, user_id: str) -> str:
        return StreamKeys(self.calls.settings.prefix, user_tag(user_id)).conns

    async def connections(self, user_id: str) -> list[ConnectionRecord]:
        raw = await self.calls.eval(PRESENCE, [self._conns_key(user_id)], [])
        records = []
        for field, value in zip(raw[::2], raw[1::2], strict=True):
            node, scope, opened = bytes(value).decode().split("\n")
            connection_id = bytes(field).decode()[2:]
            records.append(ConnectionRecord(connection_id, user_id, scope, int(opened), node))
        records.sort(key=lambda r: (r.opened_at_ms, r.connection_id))
        return records

    async def forget(self, entries: Sequence[tuple[str, str]]) -> None:
        """Remove (user, connection id) entries; what fails is retried by ``refresh``."""
        try:
            await self.calls.hdel_many([(self._conns_key(u), "c:" + c) for u, c in entries])
        except BrokerUnavailable as e:
            log.debug("presence removal failed: %s", e)
            for user, connection_id in entries:
                self._unforgotten[connection_id] = user
            return
        for _, connection_id in entries:
            self._unforgotten.pop(connection_id, None)

    async def refresh(self, watches: Iterable[Watch], registry: ConnectionRegistry) -> None:
        """Re-announce this node's connections (and keep their users' streams alive)."""
        calls: list[Call] = []
        announced: list[tuple[str, str]] = []
        for watch in watches:
            args: list[Any] = [self.node_id, self.ttl_ms, self.history_ttl_ms]
            for connection in registry.of_user(watch.user):
                args += ["c:" + connection.connection_id, self.value(connection)]
                announced.append((watch.user, connection.connection_id))
            calls.append(([watch.keys.conns, watch.keys.epoch, watch.keys.head], args))
        for start in range(0, len(calls), _CHUNK):
            await self.calls.eval_many(REFRESH, calls[start : start + _CHUNK])
        # A connection that closed while this refresh was in flight may have been
        # announced after its removal: remove it again, with earlier failures.
        stale = [(u, c) for u, c in announced if registry.get(c) is None]
        stale += [(u, c) for c, u in self._unforgotten.items()]
        if stale:
            await self.forget(stale)
