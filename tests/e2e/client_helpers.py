"""Helpers for the client tests: servers on chosen ports, RPC counting, payloads, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest

from eventrouter.client._results import EmitResult
from eventrouter.server import RouterServer, ServerConfig
from eventrouter.v1 import events_pb2


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(
    port: int, timeout_s: float = 20.0, alive: Callable[[], None] | None = None
) -> None:
    """Return once 127.0.0.1:``port`` accepts connections; ``alive`` may fail first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


@contextlib.asynccontextmanager
async def server_on_port(port: int, **overrides: Any) -> AsyncIterator[RouterServer]:
    """A started ``RouterServer`` on 127.0.0.1:``port`` (to restart one where clients point)."""
    server = RouterServer(ServerConfig(listen=f"127.0.0.1:{port}", **overrides))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace_s=0)


def offset(result: EmitResult) -> int:
    """The stream offset an emitted update got (an update's result always has a position)."""
    assert result.position is not None, result
    return result.position.offset


def update(i: int, session_id: str = "s1", prefix: str = "upd") -> events_pb2.UpdatePayload:
    """A small valid update whose id is ``{prefix}-{i}``."""
    return events_pb2.UpdatePayload(
        id=f"{prefix}-{i}",
        seq=i,
        body=events_pb2.UpdateEvent(delete_session=events_pb2.DeleteSession(session_id=session_id)),
        created_at_ms=1_700_000_000_000 + i,
    )


def big_update(i: int, size: int = 256 * 1024) -> events_pb2.UpdatePayload:
    """A valid update of about ``size`` bytes (a new-message with a long content string)."""
    payload = update(i)
    payload.body.new_message.session_id = "s1"
    payload.body.new_message.message.id = f"msg-{i}"
    payload.body.new_message.message.content.string_value = "x" * size
    return payload


def ephemeral(machine_id: str = "m1", online: bool = True) -> events_pb2.EphemeralPayload:
    return events_pb2.EphemeralPayload(
        machine_status=events_pb2.MachineStatus(
            machine_id=machine_id, online=online, timestamp_ms=1_700_000_000_000
        )
    )


async def wait_until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.005)


class RpcCounter(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Counts unary calls by method name and by final status code."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.codes: Counter[Any] = Counter()

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        method = client_call_details.method
        name = method.decode() if isinstance(method, bytes) else method
        self.calls[name.rsplit("/", 1)[-1]] += 1
        call = await continuation(client_call_details, request)
        self.codes[await call.code()] += 1
        return call

    def count(self, *methods: str) -> int:
        return sum(self.calls[m] for m in methods)


class ServerThread:
    """A ``RouterServer`` on its own event loop in a background thread (for blocking clients)."""

    def __init__(self, port: int | None = None, **overrides: Any) -> None:
        self.port = port or 0
        self.overrides = overrides
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.server: RouterServer | None = None

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> ServerThread:
        self._thread.start()

        async def start() -> RouterServer:
            config = ServerConfig(listen=f"127.0.0.1:{self.port}", **self.overrides)
            server = RouterServer(config)
            await server.start()
            return server

        self.server = self.run(start())
        self.port = self.server.port
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.run(self.server.stop(grace_s=0))
            self.server = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def connection_count(self, user_id: str) -> int:
        assert self.server is not None

        async def count() -> int:
            assert self.server is not None
            return len(self.server.router.get_connections(user_id))

        result: int = self.run(count())
        return result


@contextlib.contextmanager
def server_thread(port: int | None = None, **overrides: Any) -> Iterator[ServerThread]:
    thread = ServerThread(port, **overrides)
    try:
        yield thread.start()
    finally:
        thread.stop()


def wait_until_sync(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """``wait_until`` for blocking tests."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        time.sleep(0.005)


class BlockingRpcCounter(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """``RpcCounter`` for grpc's blocking channels (thread-safe)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.codes: Counter[Any] = Counter()
        self._lock = threading.Lock()

    def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        outcome = continuation(client_call_details, request)
        code = outcome.code()
        with self._lock:
            self.calls[client_call_details.method.rsplit("/", 1)[-1]] += 1
            self.codes[code] += 1
        return outcome
