"""Process management: servers, a throwaway Redis, load generators and the profiler.

Every process the benchmark starts is started and stopped here.  Load
generators speak the line protocol of common.py over their stdio (``Worker``);
servers are a target's nodes, behind a fresh redis-server when a workload
runs on several (``target_nodes``).
"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from common import free_port, wait_port
from targets import Options, Target
from targets.base import ROOT


class Worker:
    """A load generator speaking the line protocol (common.py) over its stdio."""

    def __init__(self, cmd: list[str], log: Path) -> None:
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            cwd=ROOT,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with suppress(json.JSONDecodeError):
                self.lines.put(json.loads(line))
        self.lines.put(None)

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            try:
                message = self.lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"{self.proc.args!r}: no {event!r} in {timeout}s") from None
            if message is None:
                raise RuntimeError(
                    f"{self.proc.args!r} exited before {event!r}; see {self.log.name}"
                )
            if message.get("event") == event:
                return message

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.log.close()


@dataclass
class Node:
    """One server process of a target."""

    proc: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 5.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def redis_used_memory(port: int) -> int:
    """``used_memory`` from Redis ``INFO memory`` (raw RESP over a socket)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"*2\r\n$4\r\nINFO\r\n$6\r\nmemory\r\n")
        data = b""
        while b"used_memory:" not in data or not data.endswith(b"\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    for line in data.decode().splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":", 1)[1])
    return 0


@contextmanager
def redis_server(tmp: Path) -> Iterator[tuple[int, int]]:
    """A throwaway redis-server (persistence off): yields (port, pid)."""
    port = free_port()
    log = (tmp / "redis.log").open("wb")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_port(port)
        yield port, proc.pid
    finally:
        stop_process(proc)
        log.close()


@contextmanager
def servers(
    target: Target,
    variants: list[str],
    nodes: int,
    tmp: Path,
    broker: str | None,
    opts: Options,
) -> Iterator[list[Node]]:
    started: list[Node] = []
    try:
        for n in range(nodes):
            port = free_port()
            log = (tmp / f"server-{n}.log").open("wb")
            cmd = target.server_cmd(port, variants, broker, n, opts)
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            started.append(Node(proc, port, log))
        for node in started:
            wait_port(node.port)
        yield started
    finally:
        for node in started:
            stop_process(node.proc)
            node.log.close()


@contextmanager
def target_nodes(
    target: Target, variants: list[str], nodes: int, work: Path, opts: Options
) -> Iterator[tuple[list[Node], int, int]]:
    """The target's node(s), behind a fresh Redis when several: (nodes, Redis pid, port)."""
    if nodes > 1:
        with (
            redis_server(work) as (port, pid),
            servers(target, variants, nodes, work, f"redis://127.0.0.1:{port}/0", opts) as started,
        ):
            yield started, pid, port
    else:
        with servers(target, variants, 1, work, None, opts) as started:
            yield started, 0, 0


def py_spy() -> str | None:
    """py-spy on PATH or next to this interpreter (a venv's bin/)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` (native frames, raw format) into ``out`` until stop_profiler."""
    spy = subprocess.Popen(
        [py_spy() or "py-spy", "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
         "--native", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=out.with_suffix(".log").open("wb"),
    )  # fmt: skip
    time.sleep(1.0)
    return spy


def stop_profiler(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)
    spy.wait(timeout=60)
