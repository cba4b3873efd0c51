"""gRPC health checking and server reflection on a real server.

Health follows ``RouterServer.is_healthy()`` (checked every health_interval_s)
and turns NOT_SERVING for good during a graceful stop; ``liveness`` ignores
``is_healthy()`` and turns NOT_SERVING only then; reflection lists the
router, health and reflection services and resolves the router's methods.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (  # type: ignore[import-untyped]
    ProtoReflectionDescriptorDatabase,
)

from eventrouter.server import RouterServer
from eventrouter.server.handlers import SERVICE_NAME
from eventrouter.server.ops.runtime import LIVENESS_SERVICE
from tests.support.model import wait_until
from tests.support.servers import running_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
WATCH_TIMEOUT_S = 10.0


@pytest.fixture
async def server() -> AsyncIterator[RouterServer]:
    async with running_server(health_interval_s=0.02, metrics_listen="") as server:
        yield server


@pytest.fixture
async def health(server: RouterServer) -> AsyncIterator[health_pb2_grpc.HealthStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield health_pb2_grpc.HealthStub(channel)


async def check(health: health_pb2_grpc.HealthStub, service: str) -> int:
    response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    status: int = response.status
    return status


async def next_status(watch: grpc.aio.UnaryStreamCall) -> int:
    async with asyncio.timeout(WATCH_TIMEOUT_S):
        response = await watch.read()
    assert response is not grpc.aio.EOF
    status: int = response.status
    return status


async def test_serving_for_the_server_and_the_router(health: health_pb2_grpc.HealthStub) -> None:
    assert await check(health, "") == SERVING
    assert await check(health, SERVICE_NAME) == SERVING
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await check(health, "no.such.Service")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_reports_every_service_without_an_error_logged(
    server: RouterServer,
    health: health_pb2_grpc.HealthStub,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)  # every logger: grpc logs a failing servicer as ERROR
    # Reflection advertises Health with all its methods; List must answer.
    listed = await health.List(health_pb2.HealthListRequest(), timeout=5)
    assert {name: r.status for name, r in listed.statuses.items()} == {
        "": SERVING,
        SERVICE_NAME: SERVING,
        LIVENESS_SERVICE: SERVING,
    }
    monkeypatch.setattr(server, "is_healthy", lambda: False)

    async def listed_not_serving() -> bool:
        listed = await health.List(health_pb2.HealthListRequest(), timeout=5)
        statuses = {name: r.status for name, r in listed.statuses.items()}
        return statuses == {"": NOT_SERVING, SERVICE_NAME: NOT_SERVING, LIVENESS_SERVICE: SERVING}

    await wait_until(listed_not_serving, what="List to follow is_healthy()")
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_status_follows_is_healthy(
    server: RouterServer, health: health_pb2_grpc.HealthStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert await next_status(watch) == SERVING

    monkeypatch.setattr(server, "is_healthy", lambda: False)
    assert await next_status(watch) == NOT_SERVING
    assert await check(health, "") == NOT_SERVING
    # A broker outage takes the node out of rotation; liveness probes keep it running.
    assert await check(health, LIVENESS_SERVICE) == SERVING

    monkeypatch.setattr(server, "is_healthy", lambda: True)
    assert await next_status(watch) == SERVING
    assert await check(health, "") == SERVING
    watch.cancel()


async def test_a_failing_health_check_reports_not_serving(
    server: RouterServer, health: health_pb2_grpc.HealthStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> bool:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(server, "is_healthy", broken)

    async def not_serving() -> bool:
        status = await check(health, SERVICE_NAME)
        return bool(status == NOT_SERVING)

    await wait_until(not_serving, what="NOT_SERVING after is_healthy() raised")


async def test_not_serving_during_graceful_stop() -> None:
    async with (
        running_server(metrics_listen="") as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        watches = {
            name: health.Watch(health_pb2.HealthCheckRequest(service=name))
            for name in ("", SERVICE_NAME, LIVENESS_SERVICE)
        }
        for watch in watches.values():
            assert await next_status(watch) == SERVING
        # With a grace period the server waits for open calls (the watches)
        # while it drains: they see NOT_SERVING before the transport goes.
        stopping = asyncio.create_task(server.stop(grace_s=30))
        for watch in watches.values():
            assert await next_status(watch) == NOT_SERVING
        assert not stopping.done()
        # is_healthy() no longer matters once the stop has begun.
        assert server.is_healthy()
        for watch in watches.values():
            watch.cancel()
        async with asyncio.timeout(WATCH_TIMEOUT_S):
            await stopping


def _reflect(port: int) -> tuple[list[str], list[tuple[str, str, str, bool]]]:
    """Blocking reflection client (grpcio-reflection's is synchronous): run in a thread."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(database.get_services())
        pool = DescriptorPool(database)
        service = pool.FindServiceByName(SERVICE_NAME)
        methods = [
            (
                m.name,
                m.input_type.full_name,
                m.output_type.full_name,
                m.server_streaming,
            )
            for m in service.methods
        ]
        return services, methods


async def test_reflection_lists_services_and_resolves_methods(server: RouterServer) -> None:
    services, methods = await asyncio.to_thread(_reflect, server.port)
    assert services == sorted([SERVICE_NAME, HEALTH, REFLECTION])
    by_name = {
        name: (request, response, streaming) for name, request, response, streaming in methods
    }
    assert by_name["Subscribe"] == (
        "eventrouter.v1.SubscribeRequest",
        "eventrouter.v1.SubscribeResponse",
        True,
    )
    assert by_name["Emit"] == ("eventrouter.v1.EmitRequest", "eventrouter.v1.EmitResponse", False)
    assert {"EmitBatch", "GetConnections", "Disconnect"} <= set(by_name)
