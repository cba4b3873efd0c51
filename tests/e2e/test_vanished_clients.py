"""Clients that vanish while the server is writing to them leave no error in the log.

A subprocess opens many streams, reads their opened events and is killed
(SIGKILL: no goodbye on the transport) while large updates are being written
to all of them; every stream is unregistered and nothing is logged at ERROR.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys

import grpc
import pytest

from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.support.model import update_request, wait_until
from tests.support.servers import running_server

STREAMS = 20
SUBSCRIBER = r"""
import sys
import grpc
from eventrouter.v1 import router_service_pb2 as pb, router_service_pb2_grpc as pb_grpc
from eventrouter.v1 import routing_pb2 as rt

calls = []
for _ in range(int(sys.argv[2])):
    channel = grpc.insecure_channel(sys.argv[1])
    stub = pb_grpc.EventRouterServiceStub(channel)
    request = pb.SubscribeRequest(scope=rt.ConnectionScope(user=rt.UserScope()))
    call = stub.Subscribe(request, metadata=[("x-eventrouter-user-id", "vanishing")])
    next(call)
    calls.append(call)
print("open", flush=True)
for message in calls[0]:
    pass  # reads one stream slowly enough; the others are not read at all
"""


async def test_streams_killed_mid_write_are_removed_without_error_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with running_server() as server:
        address = f"127.0.0.1:{server.port}"
        proc = subprocess.Popen(  # noqa: ASYNC220 (started once, not waited on here)
            [sys.executable, "-c", SUBSCRIBER, address, str(STREAMS)],
            stdout=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            assert await asyncio.to_thread(proc.stdout.readline) == b"open\n"
            async with grpc.aio.insecure_channel(address) as channel:
                stub = pb_grpc.EventRouterServiceStub(channel)
                for i in range(20):
                    batch = [update_request("vanishing", f"v{i}-{j}", pad=50_000) for j in range(5)]
                    await stub.EmitBatch(pb.EmitBatchRequest(emits=batch))
                proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(proc.wait)
                await wait_until(
                    lambda: not server.router.registry.has_user("vanishing"),
                    within_s=60,
                    what="the vanished streams to be unregistered",
                )
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
