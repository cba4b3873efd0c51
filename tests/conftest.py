"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import grpc
import pytest

from eventrouter.server import RouterServer
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.support.servers import running_server

IN_CI = os.environ.get("CI") == "true"


def require_tool(available: bool, what: str) -> None:
    """Skip when ``what`` is missing on a user's machine; fail under CI, where it must exist."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true")
    pytest.skip(f"{what} is not available")


@pytest.fixture
async def router_server() -> AsyncIterator[RouterServer]:
    async with running_server() as server:
        yield server


@pytest.fixture
async def stub(router_server: RouterServer) -> AsyncIterator[pb_grpc.EventRouterServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router_server.port}") as channel:
        yield pb_grpc.EventRouterServiceStub(channel)
