"""Emits in flight when a node is told to stop end well, or as something a client retries.

The drain lets in-flight emits finish (none of them waits on a connection),
and a router that ends a call it did not finish says CANCELLED, which the
client library retries for calls that are safe to repeat (updates dedupe by
id), like UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
from pathlib import Path

import grpc

from eventrouter.client import (
    EventRouterClient,
    EventRouterError,
    RetryPolicy,
    UnavailableError,
    build_delete_session_update,
)
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.e2e.test_delivery import server_process, wait_ready
from tests.support.model import USER, free_port, subscribe, wait_until


def test_cancelled_is_retried_like_unavailable_and_only_when_safe() -> None:
    policy = RetryPolicy(max_attempts=3)
    for code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        assert policy.next_delay(code, 1, safe=True) is not None
        assert policy.next_delay(code, 1, safe=False) is None
        assert policy.next_delay(code, 3, safe=True) is None
    assert policy.next_delay(grpc.StatusCode.INTERNAL, 1, safe=True) is None


async def test_emits_in_flight_during_sigterm_never_end_cancelled() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.EventRouterServiceStub(channel)
            with server_process(port, log) as proc:
                await wait_ready(stub, proc, log)
                # A stalled subscriber of the user: before, emits waited on it.
                stalled = await subscribe(stub, "tess", USER)
                outcomes: list[str] = []
                async with EventRouterClient(
                    f"127.0.0.1:{port}", retry=RetryPolicy(max_attempts=1), user_id="svc"
                ) as client:

                    async def emit(i: int) -> None:
                        payload = build_delete_session_update(f"s{i}", i, f"u{i}", now_ms=1)
                        try:
                            await client.emit_update("tess", payload)
                            outcomes.append("ok")
                        except UnavailableError:
                            outcomes.append("unavailable")
                        except EventRouterError as e:
                            outcomes.append(e.code.name)

                    tasks = [asyncio.create_task(emit(i)) for i in range(2_000)]
                    await wait_until(lambda: len(outcomes) >= 100, what="emits to flow")
                    proc.send_signal(signal.SIGTERM)
                    await asyncio.gather(*tasks)
                stalled.cancel()
                await wait_until(lambda: proc.poll() is not None, within_s=30)
        assert set(outcomes) <= {"ok", "unavailable"}, sorted(set(outcomes))
        assert outcomes.count("ok") >= 100
