"""The live status page in a real headless chromium, while the test emits.

``status_page.mjs`` (playwright-core driving Debian's chromium) loads the page,
reads its numbers from the DOM, waits until they have moved, reads them again
and saves a screenshot to tests/ops/artifacts/status-page.png.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from eventrouter.server import RouterServer
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.ops._support import http_get
from tests.support.browser import require_browser
from tests.support.model import (
    USER,
    Filter,
    StreamReader,
    ephemeral_request,
    machine,
    session,
    subscribe,
    update_request,
)
from tests.support.servers import running_server

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("status_page.mjs")
ARTIFACTS = Path(__file__).with_name("artifacts")
BROWSER_TIMEOUT_S = 60.0
USER_ID = "alice-7c41"


@pytest.fixture
async def server() -> AsyncIterator[RouterServer]:
    async with running_server(
        metrics_listen="127.0.0.1:0",
        hash_user_ids=True,
        # Room for the lazy daemon's backlog to show on the page as queue depth.
        queue_max_bytes=64 * 1024 * 1024,
    ) as server:
        yield server


async def _drain(reader: StreamReader) -> None:
    with contextlib.suppress(grpc.aio.AioRpcError, EOFError, asyncio.CancelledError):
        while True:
            await reader.next_event(3600)


async def _emit_forever(stub: pb_grpc.EventRouterServiceStub) -> None:
    """Steady traffic: updates for everyone, ephemerals, big ones for a daemon that never reads."""
    for n in range(10**9):
        await stub.Emit(update_request(USER_ID, f"u-{n}"))
        await stub.Emit(ephemeral_request(USER_ID, f"e-{n}", Filter("interested_in_session", "s1")))
        if n % 4 == 0:
            await stub.Emit(
                update_request(USER_ID, f"big-{n}", Filter("machine_only", "lazy"), pad=262144)
            )
        # Pacing, not waiting: keeps the rate realistic and the browser responsive.
        await asyncio.sleep(0.005)


async def test_status_json_reports_the_node(server: RouterServer) -> None:
    port = server.ops.metrics_port
    assert port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.EventRouterServiceStub(channel)
        reader = await subscribe(stub, USER_ID, session("s1"))
        await stub.Emit(update_request(USER_ID, "x"))
        await reader.read_until("x")
        status = (await http_get(port, "/status.json")).json()
        reader.cancel()
    assert status["node_id"] == server.router.node_id
    assert status["nodes"] == [
        {"id": server.router.node_id, "self": True, "healthy": True, "streams": 1}
    ]
    assert status["open_streams"] == {"user": 0, "session": 1, "machine": 0, "total": 1}
    assert status["totals"]["updates_emitted"] == 1
    assert status["totals"]["deliveries"] == 1
    [consumer] = status["slowest_consumers"]
    assert consumer["connection_id"] == reader.connection_id
    assert consumer["scope"] == "session:s1"
    assert re.fullmatch(r"u:[0-9a-f]{16}", consumer["user_id"])  # --hash-user-ids
    assert USER_ID not in json.dumps(status)

    page = await http_get(port, "/")
    assert page.status == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'sha256-" in page.headers["content-security-policy"]
    # No external asset: nothing is loaded from anywhere but this page and /status.json.
    assert not re.search(rb"(src|href)=\"(https?:)?//", page.body)


async def test_live_page_in_a_real_browser(server: RouterServer) -> None:
    node = require_browser()
    port = server.ops.metrics_port
    assert port
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "status-page.png"
    screenshot.unlink(missing_ok=True)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.EventRouterServiceStub(channel)
        readers = [
            await subscribe(stub, USER_ID, scope)
            for scope in (USER, session("s1"), session("s2"), machine("m1"))
        ]
        lazy = await subscribe(stub, USER_ID, machine("lazy"))  # never read
        tasks = [asyncio.create_task(_drain(r)) for r in readers]
        emitter = asyncio.create_task(_emit_forever(stub))
        try:
            browser = await asyncio.create_subprocess_exec(
                node,
                str(SCRIPT),
                f"http://127.0.0.1:{port}/",
                str(screenshot),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=ROOT,
            )
            try:
                async with asyncio.timeout(BROWSER_TIMEOUT_S):
                    out, err = await browser.communicate()
            finally:
                if browser.returncode is None:
                    browser.kill()
                    await browser.wait()
        finally:
            emitter.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(emitter, *tasks, return_exceptions=True)
            lazy.cancel()
            for reader in readers:
                reader.cancel()
    assert browser.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    first, second = result["first"], result["second"]
    assert result["errors"] == []
    assert first["nodeId"] == second["nodeId"] == server.router.node_id
    assert first["health"] == "SERVING"
    # The numbers moved between the two readings.
    assert second["refreshes"] > first["refreshes"]
    assert second["updates"] > first["updates"] > 0
    assert second["deliveries"] > first["deliveries"]
    assert second["eventsPerSecond"] > 0
    # Five streams by scope: 1 user, 2 session, 2 machine (the lazy daemon until it is
    # closed as too slow, which the page may already show).
    assert (second["streamsUser"], second["streamsSession"]) == (1, 2)
    assert second["streamsMachine"] in (1, 2)
    assert second["slowest"], "the slowest-consumers table is empty"
    assert all(USER_ID not in cell for row in second["slowest"] for cell in row)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
