"""One factory per broker, so one suite runs against each: memory, Redis, Redis Cluster.

The Redis servers are started once per session (real ``redis-server``
processes on free ports); every test gets its own key prefix, so tests never
see each other's keys.  Tests that kill Redis start their own
(tests/brokers/test_redis_faults.py, tests/cluster).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest

from eventrouter.server.broker.base import Broker
from eventrouter.server.broker.memory import MemoryBroker
from eventrouter.server.broker.redis import RedisBroker
from eventrouter.server.broker.redis_config import parse_broker_url
from eventrouter.server.core.history import HistoryLimits
from eventrouter.server.core.queue import QueueLimits
from eventrouter.server.core.router import EventRouter, RouterLimits
from tests.brokers.harness import Node
from tests.conftest import require_tool
from tests.support.redis import (
    REDIS_CLI,
    REDIS_SERVER,
    RedisClusterProcesses,
    RedisProcess,
    redis_cluster,
    redis_server,
)

# Short intervals so presence and health settle quickly in tests.
TEST_OPTIONS = "timeout=1&health_interval=0.2&presence_refresh=0.5&presence_ttl=2"


@pytest.fixture(scope="session")
def redis_single() -> Iterator[RedisProcess]:
    require_tool(REDIS_SERVER is not None, "redis-server")
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster_procs() -> Iterator[RedisClusterProcesses]:
    require_tool(REDIS_SERVER is not None and REDIS_CLI is not None, "redis-server and redis-cli")
    with redis_cluster() as cluster:
        yield cluster


@dataclass(frozen=True)
class Backend:
    kind: str
    url: str = ""


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "redis":
        return Backend("redis", request.getfixturevalue("redis_single").url)
    if request.param == "redis-cluster":
        return Backend("redis-cluster", request.getfixturevalue("redis_cluster_procs").url)
    return Backend("memory")


MakeNodes = Callable[..., Awaitable[list[Node]]]


def make_broker(router: EventRouter, url: str, prefix: str, options: str = TEST_OPTIONS) -> Broker:
    settings = parse_broker_url(f"{url}?prefix={prefix}&{options}")
    assert settings is not None
    return RedisBroker(router, settings)


@pytest.fixture
async def nodes(backend: Backend) -> AsyncIterator[MakeNodes]:
    """``await nodes(n, history=..., window=..., queue=...)``: n nodes sharing one backend.

    The memory broker is one node by nature: it returns that node n times, so
    every test still runs against it (cross-node cases degenerate to one node).
    """
    prefix = "t" + secrets.token_hex(4)
    started: list[Broker] = []

    async def make(
        count: int = 1,
        history: HistoryLimits | None = None,
        window: float = 300.0,
        queue: QueueLimits | None = None,
    ) -> list[Node]:
        limits = RouterLimits(
            queue=queue or QueueLimits(),
            history=history or HistoryLimits(),
            idempotency_window_s=window,
        )
        if backend.kind == "memory":
            broker: Broker = MemoryBroker(EventRouter(limits, node_id="n0"))
            await broker.start()
            started.append(broker)
            return [Node(broker)] * count
        made = []
        for _ in range(count):
            router = EventRouter(limits, node_id=f"n{len(started)}")
            broker = make_broker(router, backend.url, prefix)
            await broker.start()
            started.append(broker)
            made.append(Node(broker))
        return made

    try:
        yield make
    finally:
        for broker in started:
            await broker.close()
