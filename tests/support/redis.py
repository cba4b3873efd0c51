"""Real ``redis-server`` processes for tests: one server, or a 3-shard Redis Cluster.

Each runs on a free loopback port with persistence off (``--save ""
--appendonly no``), in its own temporary directory, so a test may SIGKILL it
and start it again on the same port (empty, as after a crash).  Readiness is
polled over a raw socket with a deadline; every process is stopped by PID in
``finally``.  Nothing here touches a Redis the test did not start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
START_DEADLINE_S = 10.0
CLUSTER_DEADLINE_S = 30.0


def free_port(below: int = 65536) -> int:
    """A loopback port nobody listens on now (below ``below``)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port < below:
            return port


def command(port: int, *args: str, timeout: float = 1.0) -> str:
    """Send one command in RESP, return a simple/bulk/integer reply as text (errors too)."""
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        reply = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
            if _complete(reply):
                break
    kind, body = reply[:1], reply[1:]
    if kind == b"$":
        length, _, rest = body.partition(b"\r\n")
        return "" if int(length) < 0 else rest[: int(length)].decode()
    return body.rstrip(b"\r\n").decode()


def _complete(reply: bytes) -> bool:
    if not reply.endswith(b"\r\n"):
        return False
    if reply[:1] != b"$":
        return True
    length, _, rest = reply[1:].partition(b"\r\n")
    return int(length) < 0 or len(rest) >= int(length) + 2


def answers_ping(port: int) -> bool:
    try:
        return command(port, "PING", timeout=0.5) == "PONG"
    except OSError:
        return False


def wait_until(condition: object, what: str, deadline_s: float) -> None:
    """Poll ``condition()`` (every 20 ms) until true; AssertionError after the deadline."""
    assert callable(condition)
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")
        time.sleep(0.02)


class RedisProcess:
    """One redis-server on 127.0.0.1:<port>; ``kill()`` and ``restart()`` keep the port."""

    def __init__(self, workdir: Path, port: int | None = None, *extra: str) -> None:
        assert REDIS_SERVER is not None, "redis-server is not installed"
        self.port = port or free_port()
        self.workdir = workdir
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 (the child keeps it)
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        args += ["--protected-mode", "no", *self.extra]
        try:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        try:
            wait_until(self._ready, f"redis-server on port {self.port}", START_DEADLINE_S)
        except AssertionError:
            self.stop()
            raise AssertionError(self.log_tail()) from None

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"redis-server exited: {self.log_tail()}")
        return answers_ping(self.port)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
        return ""

    def kill(self) -> None:
        """SIGKILL (a crash: the data is gone, persistence being off)."""
        process = self.process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        self.process = None


class RedisClusterProcesses:
    """Three primaries, no replicas, every slot covered."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        # Redis refuses cluster-mode ports above 55535 (bus port = port + 10000)
        # unless the bus port is given, which it is.
        self.nodes = [
            RedisProcess(
                workdir / f"node{i}",
                free_port(below=55536),
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                str(free_port()),
                "--cluster-config-file",
                "nodes.conf",
                # Generous: on a loaded machine a shorter one can drop the MEET
                # handshake, and `--cluster create` then waits forever.
                "--cluster-node-timeout",
                "3000",
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> None:
        assert REDIS_CLI is not None, "redis-cli is not installed"
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        args = [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", "0"]
        try:
            subprocess.run(
                [*args, "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=CLUSTER_DEADLINE_S,
            )
        except subprocess.SubprocessError as e:
            logs = "\n".join(node.log_tail() for node in self.nodes)
            raise AssertionError(f"redis-cli --cluster create failed: {e!r}\n{logs}") from e
        self.wait_ok()

    def state_ok(self) -> bool:
        try:
            return all(
                "cluster_state:ok" in command(node.port, "CLUSTER", "INFO") for node in self.nodes
            )
        except OSError:
            return False

    def wait_ok(self) -> None:
        wait_until(self.state_ok, "cluster_state:ok on every node", CLUSTER_DEADLINE_S)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@contextlib.contextmanager
def redis_server() -> Iterator[RedisProcess]:
    with tempfile.TemporaryDirectory(prefix="er-redis-") as tmp:
        server = RedisProcess(Path(tmp))
        try:
            server.start()
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def redis_cluster() -> Iterator[RedisClusterProcesses]:
    with tempfile.TemporaryDirectory(prefix="er-redis-cluster-") as tmp:
        cluster = RedisClusterProcesses(Path(tmp))
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
