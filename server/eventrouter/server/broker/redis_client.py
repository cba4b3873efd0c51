"""Calling Redis for the broker: scripts with a deadline, and what failure means.

Every call is bounded by the broker's ``timeout``; any Redis error, refused
connection or timeout becomes ``BrokerUnavailable`` (gRPC UNAVAILABLE), so a
caller is never told something happened that may not have.  redis-py's own
retries are off: a script retried after its reply was lost could run twice.
Scripts are called by SHA; after a Redis restart (NOSCRIPT) they are loaded
again and the call, which did not run, is made once more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from eventrouter.server.broker.base import BrokerUnavailable
from eventrouter.server.broker.redis_config import RedisSettings
from eventrouter.server.broker.redis_scripts import script_sha
from eventrouter.server.broker.redis_subscriber import Address, Connection

log = logging.getLogger("eventrouter.server.broker.redis")

Call = tuple[list[str], list[Any]]


class RedisCalls:
    """The command client (single Redis or Cluster) and the subscriber's connections."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        common: dict[str, Any] = {
            "socket_timeout": settings.timeout_s,
            "socket_connect_timeout": settings.timeout_s,
            # No automatic retries: a retried script could run twice.  The
            # asyncio Retry class: redis-py 8 warns about (and converts) the
            # synchronous one, and 6+ retries by default when given none.
            "retry": Retry(NoBackoff(), 0),
            # RESP2 everywhere (redis-py 8 defaults to RESP3): plain arrays, and
            # pub/sub messages are replies the subscriber reads itself.
            "protocol": 2,
        }
        self.client: Any = (
            RedisCluster.from_url(settings.url, **common)
            if settings.cluster
            else Redis.from_url(settings.url, **common)
        )
        pool = ConnectionPool.from_url(settings.url)
        self._conn_class: Any = pool.connection_class
        # Subscriber connections: same address, credentials and TLS, but reads block.
        self._conn_kwargs = {**pool.connection_kwargs, **common, "socket_timeout": None}
        # False after a failed call, until the next successful ping.
        self.reachable = False

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except Exception as e:
            log.debug("closing the Redis client: %r", e)

    # -- what the subscriber needs --------------------------------------------

    async def connect(self, address: Address) -> Connection:
        conn: Any = self._conn_class(
            **{**self._conn_kwargs, "host": address[0], "port": address[1]}
        )
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                await conn.connect()
        except BaseException:
            # Connected, then refused (e.g. LOADING while Redis reads its AOF):
            # close the socket rather than leave it to the garbage collector.
            await conn.disconnect(nowait=True)
            raise
        result: Connection = conn
        return result

    def placement(self, channel: bytes) -> Address:
        """The primary a channel lives on (raises while the cluster topology is unknown)."""
        if not self.settings.cluster:
            return self.settings.address
        node = self.client.get_node_from_key(channel)
        return str(node.host), int(node.port)

    async def refresh_topology(self) -> None:
        async with asyncio.timeout(self.settings.timeout_s * 2):
            await self.client.nodes_manager.initialize()

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                if self.settings.cluster:
                    await self.client.ping(target_nodes=RedisCluster.PRIMARIES)
                else:
                    await self.client.ping()
        except Exception as e:
            log.debug("Redis ping failed: %r", e)
            self.reachable = False
            return False
        self.reachable = True
        return True

    # -- scripts ----------------------------------------------------------------

    async def eval(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                try:
                    return await self._evalsha(script, keys, args)
                except NoScriptError:
                    await self.client.script_load(script)
                    return await self._evalsha(script, keys, args)
        except (RedisError, OSError, TimeoutError) as e:
            raise self.unavailable(e) from e

    async def _evalsha(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        sha = script_sha(script)
        return await self.client.execute_command("EVALSHA", sha, len(keys), *keys, *args)

    async def eval_many(self, script: str, calls: Sequence[Call]) -> list[Any]:
        """Pipeline independent script calls (each on its own user); one reply each.

        If the pipeline fails as a whole, some calls may have run: the caller
        gets BrokerUnavailable and retries (updates are idempotent by id).
        """
        if not calls:
            return []
        if len(calls) == 1:
            return [await self.eval(script, *calls[0])]
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                results = await self._pipeline(script, calls)
                missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
                if missing:
                    # NOSCRIPT: that call did not run; each call is one whole user, so
                    # running it again now cannot reorder anything.
                    await self.client.script_load(script)
                    again = await self._pipeline(script, [calls[i] for i in missing])
                    for i, r in zip(missing, again, strict=True):
                        results[i] = r
        except (RedisError, OSError, TimeoutError) as e:
            raise self.unavailable(e) from e
        for r in results:
            if isinstance(r, Exception):
                raise self.unavailable(r) from r
        return results

    async def _pipeline(self, script: str, calls: Sequence[Call]) -> list[Any]:
        if not self.settings.cluster:
            return await self._send_all(pack_evalsha(script_sha(script), calls), len(calls))
        pipe = self.client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.execute_command("EVALSHA", script_sha(script), len(keys), *keys, *args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    async def _send_all(self, packed: bytes, count: int) -> list[Any]:
        """One connection of the pool: send ``count`` packed commands, read their replies.

        What redis-py's pipeline does, without its per-argument encoding (a
        profile of the cluster path showed it): an error reply is returned in
        its place; anything else going wrong drops the connection, whose
        unread replies must never reach its next user.
        """
        pool = self.client.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(packed, check_health=False)
            results: list[Any] = []
            for _ in range(count):
                try:
                    results.append(await conn.read_response())
                except ResponseError as e:
                    results.append(e)
            return results
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        finally:
            await pool.release(conn)

    async def hdel_many(self, fields: Sequence[tuple[str, str]]) -> None:
        """HDEL (key, field) pairs, pipelined; raises BrokerUnavailable."""
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                pipe = self.client.pipeline(transaction=False)
                for key, field in fields:
                    pipe.hdel(key, field)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as e:
            raise self.unavailable(e) from e

    def unavailable(self, error: BaseException) -> BrokerUnavailable:
        if isinstance(error, ResponseError) and not isinstance(error, NoScriptError):
            log.error("Redis refused a broker script: %s", error)
        else:
            self.reachable = False
        text = str(error)
        return BrokerUnavailable(f"Redis: {text}" if text else f"Redis: {type(error).__name__}")


def _bulk(value: Any) -> bytes:
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str):
        data = value.encode()
    elif isinstance(value, int):
        data = b"%d" % value
    else:
        raise TypeError(f"a script argument must be bytes, str or int, not {type(value)}")
    return b"$%d\r\n%s\r\n" % (len(data), data)


def pack_evalsha(sha: str, calls: Sequence[Call]) -> bytes:
    """``EVALSHA sha <keys> <args>`` per call, in RESP, in one buffer (str, bytes or int args)."""
    head = _bulk(b"EVALSHA") + _bulk(sha)
    out = []
    for keys, args in calls:
        out.append(b"*%d\r\n%s%s" % (3 + len(keys) + len(args), head, _bulk(len(keys))))
        out.extend(map(_bulk, keys))
        out.extend(map(_bulk, args))
    return b"".join(out)
