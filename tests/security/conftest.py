"""Fixtures of the security suite: a secure server using the keyset on disk (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventrouter.server import RouterServer
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.security.helpers import connect, secure_server


@pytest.fixture
async def server(keys_file: Path) -> AsyncIterator[RouterServer]:
    async with secure_server(keys_file) as s:
        yield s


@pytest.fixture
async def stub(server: RouterServer) -> AsyncIterator[pb_grpc.EventRouterServiceStub]:
    async with connect(server) as s:
        yield s
