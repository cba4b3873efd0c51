"""The gRPC health service follows the broker: NOT_SERVING while Redis is down.

A real node (in this process) on a real Redis that the test kills and
restarts; the health status is read through the standard health service, as
a load balancer would.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from eventrouter.v1 import events_pb2
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.conftest import require_tool
from tests.support.redis import REDIS_CLI, REDIS_SERVER, redis_server
from tests.support.servers import running_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DEADLINE_S = 15.0


async def wait_status(health: health_pb2_grpc.HealthStub, wanted: int) -> None:
    deadline = time.monotonic() + DEADLINE_S
    last = None
    while time.monotonic() < deadline:
        response = await health.Check(
            health_pb2.HealthCheckRequest(service="eventrouter.v1.EventRouterService"), timeout=5
        )
        last = response.status
        if last == wanted:
            return
        await asyncio.sleep(0.05)  # polling interval of a bounded wait, not a wait in itself
    raise AssertionError(f"health stayed {last}, wanted {wanted}")


def update(i: int) -> pb.EmitRequest:
    return pb.EmitRequest(
        user_id="u1",
        update=events_pb2.UpdatePayload(
            id=f"h-{i}",
            body=events_pb2.UpdateEvent(delete_session=events_pb2.DeleteSession(session_id="s")),
        ),
    )


async def test_health_turns_not_serving_while_redis_is_down_and_back() -> None:
    require_tool(REDIS_SERVER is not None and REDIS_CLI is not None, "redis-server and redis-cli")
    with redis_server() as redis:
        async with (
            running_server(broker=redis.url + "?timeout=0.5", health_interval_s=0.1) as node,
            grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as channel,
        ):
            health = health_pb2_grpc.HealthStub(channel)
            router = pb_grpc.EventRouterServiceStub(channel)
            await wait_status(health, SERVING)
            assert (await router.Emit(update(1))).reached == 0

            redis.kill()
            await wait_status(health, NOT_SERVING)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await router.Emit(update(2), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

            redis.restart()
            await wait_status(health, SERVING)
            assert not (await router.Emit(update(3))).duplicate
