"""``eventrouter serve --workers N``: N processes on one port, each a node of the cluster.

A real ``eventrouter serve --workers 2`` against a private ``redis-server``:

* many streams opened on its one port land on both workers (the node id
  each stream's ``opened`` names); updates and ephemerals emitted through
  the same port (gRPC and the web listener) reach exactly the streams the
  routing rule selects, in per-user order;
* SIGTERM drains both workers and the parent exits 0;
* a worker killed by its PID (logged by the parent) is restarted, and the
  Python client's subscriptions it held resume with no gap and no duplicate;
* without a shared broker, ``--workers 2`` (and ``auto`` on a machine of
  several cores) refuses to start, naming ``--broker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.json_format import MessageToDict

from eventrouter.client import (
    Backoff,
    EventRouterClient,
    ReconnectPolicy,
    Subscription,
    UpdateReceived,
    user_scope,
)
from eventrouter.server.config.checks import cpu_cores
from eventrouter.server.ops.workers import restart_delay
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.cluster.nodes import BROKER_OPTIONS
from tests.conftest import require_tool
from tests.support.model import (
    MATRIX_FILTERS,
    MATRIX_SCOPES,
    Filter,
    RoutingModel,
    StreamReader,
    ephemeral_request,
    subscribe,
    update_request,
    wait_until,
)
from tests.support.redis import REDIS_SERVER, RedisProcess, redis_server
from tests.support.web import connect_call

pytestmark = pytest.mark.slow

START_DEADLINE_S = 30.0
STOP_DEADLINE_S = 20.0
# Each channel its own TCP connection: grpc would otherwise share one
# connection among the channels of a process, and all of them would land on
# one worker.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
LISTENING = re.compile(
    r"eventrouter listening on 127\.0\.0\.1:(\d+) \((\d+) workers: nodes ([^;]+); event loop"
)
SERVING = re.compile(r"worker (\d+) serving \(pid (\d+), node (\S+),")
WEB = re.compile(r"web listener \(Connect, gRPC-Web\) on 127\.0\.0\.1:(\d+)")


@pytest.fixture
def redis() -> Iterator[RedisProcess]:
    require_tool(REDIS_SERVER is not None, "redis-server")
    with redis_server() as server:
        yield server


def server_env() -> dict[str, str]:
    """This environment without settings of its own (EVENTROUTER_*)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EVENTROUTER_")}


class Workers:
    """``eventrouter serve --workers ...`` as a subprocess logging to a file."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.log_path = tmp_path / "workers.log"
        self.args = [sys.executable, "-m", "eventrouter.server", "--insecure"]
        self.args += ["--listen", "127.0.0.1:0", "--metrics-listen", ""]
        self.args += ["--shutdown-grace-s", "0", "--log-level", "info", *args]
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.count = 0

    def spawn(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=server_env()
            )

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def serving(self) -> dict[int, list[tuple[int, str]]]:
        """Worker index -> (pid, node id) of each of its starts, in order."""
        found: dict[int, list[tuple[int, str]]] = {}
        for index, pid, node in SERVING.findall(self.log()):
            found.setdefault(int(index), []).append((int(pid), node))
        return found

    def nodes(self) -> set[str]:
        """The node ids of the workers serving now (each worker's latest start)."""
        return {starts[-1][1] for starts in self.serving().values()}

    async def wait_listening(self) -> None:
        def listening() -> bool:
            assert self.process is not None
            found = LISTENING.search(self.log())
            if found is None and self.process.poll() is not None:
                raise AssertionError(f"exited {self.process.returncode}:\n{self.log()}")
            if found is not None:
                self.port, self.count = int(found.group(1)), int(found.group(2))
            return found is not None

        await wait_until(listening, START_DEADLINE_S, "the listening line")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def exit_code(self) -> int:
        assert self.process is not None
        process = self.process
        try:
            await wait_until(lambda: process.poll() is not None, STOP_DEADLINE_S, "the exit")
        except AssertionError:
            left = [pid for starts in self.serving().values() for pid, _ in starts]
            left = [pid for pid in left if _is_worker(pid)]
            raise AssertionError(f"still running, workers {left}:\n{self.log()}") from None
        return process.returncode

    def stop(self) -> None:
        """SIGTERM the parent (SIGKILL after the deadline), then any worker left, by PID."""
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_DEADLINE_S)
        for starts in self.serving().values():
            for pid, _ in starts:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if _is_worker(pid):
                        os.kill(pid, signal.SIGKILL)


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` has a listening socket on (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _is_worker(pid: int) -> bool:
    try:
        return b"eventrouter.server.ops.workers" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@contextlib.asynccontextmanager
async def running_workers(tmp_path: Path, *args: str) -> AsyncIterator[Workers]:
    workers = Workers(tmp_path, *args)
    try:
        workers.spawn()
        await workers.wait_listening()
        yield workers
    finally:
        workers.stop()


def broker_args(redis: RedisProcess) -> list[str]:
    return ["--broker", f"{redis.url}?{BROKER_OPTIONS}"]


# -- one port, two nodes ----------------------------------------------------------


async def test_two_workers_share_one_port_route_by_the_rule_and_drain(
    tmp_path: Path, redis: RedisProcess
) -> None:
    args = ["--workers", "2", "--web-listen", "127.0.0.1:0", *broker_args(redis)]
    async with running_workers(tmp_path, *args) as workers:
        assert workers.count == 2
        assert len(workers.nodes()) == 2
        # Both workers listen on both ports: gRPC and the web listener (its
        # line follows the listening line, a moment later).
        await wait_until(
            lambda: WEB.search(workers.log()) is not None, START_DEADLINE_S, "the web line"
        )
        found = WEB.search(workers.log())
        assert found is not None, workers.log()
        web_port = int(found.group(1))
        for starts in workers.serving().values():
            assert {workers.port, web_port} <= listening_ports(starts[-1][0])
        users = [f"u{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
        # Every stream on a TCP connection of its own: the kernel spreads them.
        channels = [
            grpc.aio.insecure_channel(workers.target, options=OWN_CONNECTION)
            for _ in range(len(users) * len(MATRIX_SCOPES) + 3)
        ]
        try:
            stubs = [pb_grpc.EventRouterServiceStub(c) for c in channels]
            model = RoutingModel()
            readers: list[StreamReader] = []
            for user in users:
                for scope in MATRIX_SCOPES:
                    reader = await subscribe(stubs[len(readers)], user, scope)
                    model.add(user, reader.connection_id, scope)
                    readers.append(reader)
            assert {r.opened.node_id for r in readers} == workers.nodes()

            # Emits through the same port, on three connections (so on either worker).
            emitters = stubs[len(readers) :]
            for round_ in range(2):
                for u, user in enumerate(users):
                    for f, flt in enumerate(MATRIX_FILTERS):
                        event_id = f"e{round_}-{u}-{f}"
                        stub = emitters[(u + f + round_) % len(emitters)]
                        model.emit_update(user, event_id, flt)
                        await stub.Emit(update_request(user, event_id, flt), timeout=10)
                        model.emit_ephemeral(user, f"x{event_id}", flt)
                        await stub.Emit(ephemeral_request(user, f"x{event_id}", flt), timeout=10)
            # The last ones through the web listener (Connect), a new connection each.
            for user in users:
                model.emit_update(user, f"end-{user}", Filter("all"))
                request = MessageToDict(update_request(user, f"end-{user}"))
                reply = await asyncio.to_thread(
                    connect_call, f"127.0.0.1:{web_port}", "Emit", request, "-"
                )
                assert reply["position"]["offset"] == str(model.head(user)), reply
            for reader in readers:
                user = reader.opened.user_id
                expected = model.received[reader.connection_id][:-1]
                assert await reader.read_until(f"end-{user}") == expected, reader.opened

            # SIGTERM: both workers drain (every stream ends UNAVAILABLE), the parent exits 0.
            pids = [starts[-1][0] for starts in workers.serving().values()]
            assert workers.process is not None
            workers.process.send_signal(signal.SIGTERM)
            for reader in readers:
                status = await reader.read_until_status()
                assert status.code() == grpc.StatusCode.UNAVAILABLE, status
            assert await workers.exit_code() == 0
            assert not [pid for pid in pids if _is_worker(pid)]
            assert workers.log().count("shutting down: ended") == 2
            assert "still running" not in workers.log()
        finally:
            for channel in channels:
                await channel.close()


# -- a worker dies ----------------------------------------------------------------


def update_ids(events: list[UpdateReceived]) -> list[str]:
    return [e.payload.id for e in events]


async def read_updates(subscription: Subscription, count: int) -> list[UpdateReceived]:
    """The next ``count`` updates (``Connected`` and ``Reconnecting`` skipped)."""
    got: list[UpdateReceived] = []
    async with asyncio.timeout(START_DEADLINE_S):
        while len(got) < count:
            event = await anext(subscription)
            if isinstance(event, UpdateReceived):
                got.append(event)
    return got


async def test_a_killed_worker_is_restarted_and_its_clients_resume_without_gap(
    tmp_path: Path, redis: RedisProcess
) -> None:
    async with running_workers(tmp_path, "--workers", "2", *broker_args(redis)) as workers:
        user = "u-" + uuid.uuid4().hex[:8]
        fast = ReconnectPolicy(backoff=Backoff(base_s=0.05, max_s=0.5), max_attempts=None)
        async with contextlib.AsyncExitStack() as stack:
            emitter = await stack.enter_async_context(
                EventRouterClient(workers.target, options=OWN_CONNECTION)
            )
            subscriptions: list[Subscription] = []
            for _ in range(12):
                client = await stack.enter_async_context(
                    EventRouterClient(workers.target, options=OWN_CONNECTION, reconnect=fast)
                )
                subscription = client.subscribe(user_scope(), user_id=user, include_control=True)
                subscriptions.append(await stack.enter_async_context(subscription))
            on = {s.opened.node_id for s in subscriptions if s.opened is not None}
            assert on == workers.nodes()

            ids = [f"upd-{i}" for i in range(30)]
            for event_id in ids[:10]:
                await emitter.emit_update(user, update_request(user, event_id).update)
            for subscription in subscriptions:
                assert update_ids(await read_updates(subscription, 10)) == ids[:10]

            # Kill the worker holding the first stream, by the PID the parent logged.
            victim_node = subscriptions[0].opened.node_id  # type: ignore[union-attr]
            index, pid = next(
                (i, starts[-1][0])
                for i, starts in workers.serving().items()
                if starts[-1][1] == victim_node
            )
            os.kill(pid, signal.SIGKILL)
            # Emits go on meanwhile (the emitter retries if its worker was the one).
            for event_id in ids[10:20]:
                await emitter.emit_update(user, update_request(user, event_id).update)
            await wait_until(
                lambda: len(workers.serving().get(index, ())) == 2,
                START_DEADLINE_S,
                "the killed worker's restart",
            )
            assert f"worker {index} (pid {pid}, node {victim_node}) exited (signal SIGKILL)" in (
                workers.log()
            )
            for event_id in ids[20:]:
                await emitter.emit_update(user, update_request(user, event_id).update)
            for subscription in subscriptions:
                # Exactly the rest, in order: no gap, no duplicate.
                assert update_ids(await read_updates(subscription, 20)) == ids[10:], (
                    subscription.opened
                )
            victims = [s for s in subscriptions if s.reconnects]
            assert victims, "no subscription was on the killed worker"

            # The restarted worker is a new node, and it serves.
            new_node = workers.serving()[index][-1][1]
            assert new_node != victim_node
            await _a_stream_lands_on(workers, new_node, user)


def test_the_restart_backoff_doubles_up_to_a_bound() -> None:
    delays = [restart_delay(exits) for exits in range(1, 10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert restart_delay(10_000) == 30.0


async def _a_stream_lands_on(workers: Workers, node: str, user: str) -> None:
    """Open streams, each on a new connection, until one is served by ``node`` (bounded)."""
    for _ in range(40):
        async with grpc.aio.insecure_channel(workers.target, options=OWN_CONNECTION) as channel:
            reader = await subscribe(
                pb_grpc.EventRouterServiceStub(channel), user, MATRIX_SCOPES[0]
            )
            reader.cancel()
            if reader.opened.node_id == node:
                return
    raise AssertionError(f"40 new connections, none served by {node}")


async def test_auto_is_one_worker_per_core(tmp_path: Path, redis: RedisProcess) -> None:
    cores = cpu_cores()
    workers = Workers(tmp_path, "--workers", "auto", *broker_args(redis))
    try:
        workers.spawn()
        if cores == 1:  # one process, as without --workers
            await wait_until(lambda: "eventrouter listening on" in workers.log(), START_DEADLINE_S)
        else:
            await workers.wait_listening()
            assert workers.count == cores
            assert len(workers.nodes()) == cores
        assert workers.process is not None
        workers.process.send_signal(signal.SIGTERM)
        assert await workers.exit_code() == 0
    finally:
        workers.stop()


def _two_free_ports() -> int:
    """A port P such that P and P + 1 are both free now; P.

    Chosen below the kernel's ephemeral range (32768-60999 by default): there,
    an outgoing connection anywhere on the machine (connect() takes even ports)
    could take P + 1 between this check and the workers' binds.
    """
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket() as first, socket.socket() as second:
            try:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two free ports in a row in 200 tries")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text: str = response.read().decode()
        return text


async def test_worker_i_serves_metrics_on_port_plus_i_and_outlives_no_parent(
    tmp_path: Path, redis: RedisProcess
) -> None:
    metrics = _two_free_ports()
    args = ["--workers", "2", "--metrics-listen", f"127.0.0.1:{metrics}", *broker_args(redis)]
    async with running_workers(tmp_path, *args) as workers:
        for i in range(2):
            node = workers.serving()[i][-1][1]
            text = await asyncio.to_thread(scrape, metrics + i)
            assert f'eventrouter_node_info{{node_id="{node}"}} 1.0' in text
        assert "worker=0" in workers.log()  # a worker's own lines say which it is
        assert "worker=1" in workers.log()

        # The parent killed: its workers notice (their stdin closes), drain and exit.
        pids = [starts[-1][0] for starts in workers.serving().values()]
        assert workers.process is not None
        workers.process.kill()
        workers.process.wait(timeout=STOP_DEADLINE_S)
        await wait_until(
            lambda: not [pid for pid in pids if _is_worker(pid)],
            STOP_DEADLINE_S,
            "the orphaned workers' exit",
        )
        assert workers.log().count("shutting down: ended") == 2


# -- refused ----------------------------------------------------------------------


def serve_once(*args: str) -> subprocess.CompletedProcess[str]:
    """``eventrouter serve --insecure ARGS`` run to its end (a refused start)."""
    return subprocess.run(
        [sys.executable, "-m", "eventrouter.server", "--insecure", *args],
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("count", ["2", "auto"])
def test_more_than_one_worker_without_a_shared_broker_is_refused(count: str) -> None:
    if count == "auto" and cpu_cores() == 1:
        pytest.skip("auto is one worker on a machine of one core")
    result = serve_once("--workers", count)
    assert result.returncode == 1, result
    workers = cpu_cores() if count == "auto" else 2
    assert result.stderr.splitlines() == [
        "eventrouter serve: invalid configuration:",
        f"  - workers (flag --workers), broker (default): {workers} workers need a shared"
        " broker: add --broker redis://HOST:PORT/DB (with memory:// each worker would route"
        " only its own connections)",
    ]


def _two_ports_second_held(stack: contextlib.ExitStack) -> int:
    """A free port P whose next port P + 1 is held by a listening socket; P."""
    for _ in range(50):
        held = stack.enter_context(socket.socket())
        held.bind(("127.0.0.1", 0))
        held.listen()
        port: int = held.getsockname()[1] - 1
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise AssertionError("no free port below a held one in 50 tries")


def test_a_worker_that_cannot_start_stops_the_start_with_exit_1(
    tmp_path: Path, redis: RedisProcess
) -> None:
    # Worker 1 serves metrics on the --metrics-listen port + 1: taken.
    with contextlib.ExitStack() as stack:
        metrics = _two_ports_second_held(stack)
        result = serve_once(
            "--workers",
            "2",
            *broker_args(redis),
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            f"127.0.0.1:{metrics}",
        )
    assert result.returncode == 1, result.stderr
    assert (
        f"eventrouter serve: worker 1: cannot listen on 127.0.0.1:{metrics + 1} for metrics and"
        " the status page" in result.stderr
    )
    assert "exited before it served (exit status 1): stopping" in result.stderr
    assert "eventrouter listening" not in result.stderr


@pytest.mark.parametrize(
    ("flag", "what"), [("--listen", "gRPC"), ("--web-listen", "the web listener")]
)
def test_a_port_held_by_another_process_is_refused_not_shared(flag: str, what: str) -> None:
    # Held with SO_REUSEPORT, as a worker holds it: the workers must not join it.
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        address = f"127.0.0.1:{holder.getsockname()[1]}"
        args = {"--listen": "127.0.0.1:0", "--web-listen": "127.0.0.1:0", flag: address}
        result = serve_once(
            "--workers",
            "2",
            "--broker",
            "redis://127.0.0.1:1/0",  # never reached: the ports come first
            "--metrics-listen",
            "",
            *(item for pair in args.items() for item in pair),
        )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"eventrouter serve: cannot listen on {address} for {what}"), line
    assert line.endswith(f"Address already in use; change it with {flag}"), line
