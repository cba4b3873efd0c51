"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from eventrouter.server import RouterServer
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.security.helpers import Keys
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


@pytest.fixture(scope="module")
def keys() -> Keys:
    """Signing keys (HS256, Ed25519, ES256) and the tokens minted with them, per module."""
    return Keys()


@pytest.fixture
def keys_file(keys: Keys, tmp_path: Path) -> Path:
    """``keys`` as the JWKS file (mode 0600) a secure server loads (``secure_server``)."""
    return keys.write(tmp_path / "keys" / "signing-keys.json")
