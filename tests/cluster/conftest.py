"""Backends for the multi-node tests: a fresh Redis, or a fresh 3-shard Redis Cluster, per test.

Fresh, because these tests kill Redis; each backend can crash and restart
the Redis process that holds a given user's keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.support.redis import (
    REDIS_CLI,
    REDIS_SERVER,
    RedisClusterProcesses,
    RedisProcess,
    command,
)


class Backend:
    """One Redis or one Redis Cluster, with a way to crash what holds a user's keys."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.single: RedisProcess | None = None
        self.cluster: RedisClusterProcesses | None = None
        if kind == "redis":
            self.single = RedisProcess(tmp / "redis")
        else:
            self.cluster = RedisClusterProcesses(tmp / "cluster")
        self.crashed: RedisProcess | None = None

    @property
    def url(self) -> str:
        if self.single is not None:
            return self.single.url
        assert self.cluster is not None
        return self.cluster.url

    def start(self) -> None:
        (self.single or self.cluster).start()  # type: ignore[union-attr]

    def stop(self) -> None:
        (self.single or self.cluster).stop()  # type: ignore[union-attr]

    def owner_of(self, user: str) -> RedisProcess:
        """The Redis process holding ``user``'s keys (all of them: one hash tag)."""
        if self.single is not None:
            return self.single
        assert self.cluster is not None
        first = self.cluster.nodes[0]
        slot = int(command(first.port, "CLUSTER", "KEYSLOT", "{" + user + "}"))
        for line in command(first.port, "CLUSTER", "NODES").splitlines():
            parts = line.split()
            port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
            for ranges in parts[8:]:
                low, _, high = ranges.partition("-")
                if int(low) <= slot <= int(high or low):
                    return next(n for n in self.cluster.nodes if n.port == port)
        raise AssertionError(f"no node owns slot {slot}")

    def crash_owner_of(self, user: str) -> None:
        self.crashed = self.owner_of(user)
        self.crashed.kill()

    def restart_crashed(self) -> None:
        assert self.crashed is not None
        self.crashed.start()
        if self.cluster is not None:
            self.cluster.wait_ok()


@pytest.fixture(params=["redis", "redis-cluster"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    require_tool(REDIS_SERVER is not None and REDIS_CLI is not None, "redis-server and redis-cli")
    redis = Backend(request.param, tmp_path)
    try:
        redis.start()
        yield redis
    finally:
        redis.stop()
