"""Router nodes as real subprocesses sharing one Redis (or Redis Cluster), and a client for them.

Each node is ``python -m eventrouter.server --insecure --broker <url>`` on a
free loopback port, logging to a file the tests read; it is stopped (or
SIGKILLed, for the crash tests) by PID.  The client speaks to the nodes with
the bare generated stubs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from eventrouter.v1 import events_pb2 as ev
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.support.redis import free_port
from tests.support.servers import RawSubscriber, open_raw_subscriber, user_scope

START_DEADLINE_S = 20.0
READ_DEADLINE_S = 10.0
# Short periods so presence and health settle quickly (seconds).
BROKER_OPTIONS = "timeout=1&health_interval=0.2&presence_refresh=0.5&presence_ttl=2"


class NodeProcess:
    """One eventrouter node; ``kill()`` is a crash (SIGKILL), ``stop()`` a SIGTERM."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        broker_url: str,
        *extra: str,
        keys_file: Path | None = None,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = workdir / f"{name}.log"
        sep = "&" if "?" in broker_url else "?"
        self.args = [
            sys.executable,
            "-m",
            "eventrouter.server",
            "--listen",
            f"127.0.0.1:{self.port}",
            *(["--keys-file", str(keys_file)] if keys_file is not None else ["--insecure"]),
            "--broker",
            f"{broker_url}{sep}{BROKER_OPTIONS}",
            "--node-id",
            name,
            "--metrics-listen",
            "",
            "--shutdown-grace-s",
            "0",
            *extra,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTROUTER_")}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=env
            )

    async def wait_ready(self) -> None:
        end = time.monotonic() + START_DEADLINE_S
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"node {self.name} exited:\n{self.log()}")
            async with grpc.aio.insecure_channel(self.address) as channel:
                try:
                    await asyncio.wait_for(channel.channel_ready(), timeout=0.5)
                    return
                except TimeoutError:
                    pass
            if time.monotonic() > end:
                raise AssertionError(f"node {self.name} not ready:\n{self.log()}")

    def log(self, tail: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-tail:]
        return ""

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextlib.asynccontextmanager
async def running_nodes(
    workdir: Path, broker_url: str, count: int = 3
) -> AsyncIterator[list[NodeProcess]]:
    nodes = [NodeProcess(workdir, f"node{i}", broker_url) for i in range(count)]
    try:
        for node in nodes:
            node.spawn()
        for node in nodes:
            await node.wait_ready()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def update_request(user: str, event_id: str) -> pb.EmitRequest:
    return pb.EmitRequest(
        user_id=user,
        update=ev.UpdatePayload(
            id=event_id,
            seq=1,
            body=ev.UpdateEvent(new_feed_post=ev.NewFeedPost(id=event_id, cursor="c")),
            created_at_ms=1,
        ),
    )


@dataclass
class Stream:
    """A Subscribe call and the updates it delivered: (id, offset, epoch)."""

    raw: RawSubscriber
    updates: list[tuple[str, int, str]] = field(default_factory=list)
    error: grpc.aio.AioRpcError | None = None

    @property
    def ids(self) -> list[str]:
        return [u[0] for u in self.updates]

    async def read_until(self, count: int) -> None:
        """Read until ``count`` updates arrived in total (fails past the deadline)."""
        async with asyncio.timeout(READ_DEADLINE_S):
            while len(self.updates) < count:
                await self._read_one()

    async def read_until_error(self) -> grpc.aio.AioRpcError:
        async with asyncio.timeout(READ_DEADLINE_S):
            while self.error is None:
                await self._read_one()
        return self.error

    async def _read_one(self) -> None:
        try:
            events = await self.raw.next_events()
        except grpc.aio.AioRpcError as e:
            self.error = e
            raise
        for event in events:
            if event.WhichOneof("event") == "update":
                u = event.update
                self.updates.append((u.payload.id, u.position.offset, u.position.epoch))


class Client:
    """Stubs for every node, on channels closed by ``close()``."""

    def __init__(self, nodes: list[NodeProcess]) -> None:
        self.channels = [grpc.aio.insecure_channel(n.address) for n in nodes]
        self.stubs = [pb_grpc.EventRouterServiceStub(c) for c in self.channels]

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()

    async def subscribe(
        self, node: int, user: str, resume_from: pb.StreamPosition | None = None
    ) -> Stream:
        return Stream(await open_raw_subscriber(self.stubs[node], user, user_scope(), resume_from))

    async def emit(self, node: int, user: str, event_id: str) -> pb.EmitResponse:
        response: pb.EmitResponse = await self.stubs[node].Emit(
            update_request(user, event_id), timeout=READ_DEADLINE_S
        )
        return response

    async def connections(self, node: int, user: str) -> list[pb.ConnectionInfo]:
        response = await self.stubs[node].GetConnections(
            pb.GetConnectionsRequest(user_id=user), timeout=READ_DEADLINE_S
        )
        return list(response.connections)


@contextlib.asynccontextmanager
async def client_for(nodes: list[NodeProcess]) -> AsyncIterator[Client]:
    client = Client(nodes)
    try:
        yield client
    finally:
        await client.close()


async def log_shows(node: NodeProcess, text: str) -> None:
    """Poll the node's log for ``text`` (what it reports about its broker)."""
    end = time.monotonic() + READ_DEADLINE_S
    while text not in node.log(tail=1 << 30):
        if time.monotonic() > end:
            raise AssertionError(f"{node.name} never logged {text!r}:\n{node.log()}")
        await asyncio.sleep(0.05)
