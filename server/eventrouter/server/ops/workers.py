"""``eventrouter serve --workers N``: N processes serving one address, and their supervisor.

The parent (``run_workers``) serves nothing itself:

- **Ports.** It binds ``--listen`` (and ``--web-listen``) once, without
  listening (``binding.reserve_port``: a port anyone holds is refused; port
  0 becomes one free port), and every worker listens on that same port with
  SO_REUSEPORT: the kernel spreads new connections over the workers. The
  parent keeps the port for as long as it runs, so a restarted worker gets
  it back. Metrics: worker i serves ``/metrics`` and the status page on the
  ``--metrics-listen`` port + i (port 0: a free port each, logged).
- **Nodes.** Each worker is a full node of the cluster through the broker
  (Redis: a memory broker would route only the worker's own connections,
  ``config.checks`` refuses it). Worker i is node ``<node id>-w<i>`` (a
  random node id when none is set), ``.<n>`` added at its n-th restart: a
  restarted worker is a new node, so the dead one's presence expires.
- **Start.** A worker is ``python -m eventrouter.server.ops.workers``: it
  reads its settings as one JSON line on stdin, serves, and says so in one
  JSON line on stdout. Once all serve, the parent logs one "eventrouter
  listening on HOST:PORT (...)" line, as a single process does. A worker
  that exits before serving stops the start: the parent stops the others
  and exits 1.
- **Restarts.** A worker that exits later is restarted after 0.5 s,
  doubling with each further exit up to 30 s; one that had served for a
  minute starts again from 0.5 s. Each exit and start is logged with the
  worker's PID. Its clients' streams end (the connection breaks); they
  reconnect, to any worker, and resume with no gap and no duplicate.
- **Stop.** SIGTERM or SIGINT is forwarded (as SIGTERM) to every worker,
  which drains as one node does; the parent exits 0 once all have exited.
  A worker still running 10 s after the drain's grace is killed (logged).
  A worker whose stdin closes (the parent is gone) drains too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
from dataclasses import dataclass, fields
from typing import Any

from eventrouter.server.app import RouterServer, loop_name, run_server
from eventrouter.server.binding import reserve_port
from eventrouter.server.config import ServerConfig
from eventrouter.server.ops.http import split_host_port
from eventrouter.server.ops.logs import UserIdHasher, configure_logging
from eventrouter.server.security.tokens import ensure_keys_file

log = logging.getLogger("eventrouter.server.workers")

WORKER_MODULE = "eventrouter.server.ops.workers"
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
# A worker still running this long after the drain's grace (--shutdown-grace-s) is killed.
KILL_AFTER_S = 10.0
# A worker that served this long before it exited is restarted from the first backoff.
STABLE_S = 60.0

__all__ = [
    "BACKOFF_FIRST_S",
    "BACKOFF_MAX_S",
    "STABLE_S",
    "Supervisor",
    "restart_delay",
    "run_workers",
]


@dataclass
class _Worker:
    index: int
    node_id: str = ""
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    exits: int = 0  # in a row, each less than STABLE_S after its start
    started_at: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0


class Supervisor:
    """Runs ``config.worker_count()`` workers until SIGTERM/SIGINT; ``run()`` is the exit code."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.count = config.worker_count()
        self.base_node_id = config.node_id or "node-" + secrets.token_hex(4)
        self.workers = [_Worker(i) for i in range(self.count)]
        self.listen = config.listen
        self.web_listen = config.web_listen
        self._held: list[socket.socket] = []
        self._stopping = asyncio.Event()

    def _hold_ports(self) -> None:
        """Bind the shared ports (``ListenError`` when taken), port 0 made concrete."""
        metrics = self.config.metrics_listen
        if metrics and split_host_port(metrics)[1] + self.count - 1 > 65535:
            raise ValueError(
                f"metrics_listen: worker {self.count - 1} would serve metrics on port"
                f" {split_host_port(metrics)[1] + self.count - 1}: choose a lower port"
            )
        for name, what, flag in (
            ("listen", "gRPC", "--listen"),
            ("web_listen", "the web listener (Connect, gRPC-Web)", "--web-listen"),
        ):
            address = getattr(self, name)
            if not address:
                continue
            held = reserve_port(address, what, flag)
            self._held.append(held)
            setattr(self, name, _with_port(address, held.getsockname()[1]))

    def _settings(self, worker: _Worker) -> dict[str, Any]:
        values = {f.name: getattr(self.config, f.name) for f in fields(ServerConfig)}
        metrics = self.config.metrics_listen
        if metrics:
            port = split_host_port(metrics)[1]
            metrics = _with_port(metrics, port + worker.index if port else 0)
        values.update(
            listen=self.listen,
            web_listen=self.web_listen,
            metrics_listen=metrics,
            node_id=worker.node_id,
            workers=str(self.count),
        )
        return values

    async def _spawn(self, worker: _Worker) -> dict[str, Any] | None:
        """Start ``worker``; what it said once serving, or None when it exited first."""
        worker.starts += 1
        restart = f".{worker.starts - 1}" if worker.starts > 1 else ""
        worker.node_id = f"{self.base_node_id}-w{worker.index}{restart}"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            WORKER_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        worker.process = process
        worker.started_at = asyncio.get_running_loop().time()
        if self._stopping.is_set():
            process.terminate()
        assert process.stdin is not None
        assert process.stdout is not None
        request = {"worker": worker.index, "settings": self._settings(worker)}
        process.stdin.write(json.dumps(request).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await process.stdin.drain()
        while line := await process.stdout.readline():
            with contextlib.suppress(ValueError):
                said = json.loads(line)
                if isinstance(said, dict) and "serving" in said:
                    served: dict[str, Any] = said["serving"]
                    log.info(
                        "worker %d serving (pid %d, node %s, metrics port %s)",
                        worker.index,
                        worker.pid,
                        worker.node_id,
                        served.get("metrics_port") or "off",
                    )
                    return served
            sys.stderr.write(line.decode(errors="replace"))
        await process.wait()
        return None

    def stop(self) -> None:
        """Drain every worker (SIGTERM/SIGINT to the parent); kill those that outlive the grace."""
        if not self._stopping.is_set():
            log.info("stopping %d workers", self.count)
            deadline = self.config.shutdown_grace_s + KILL_AFTER_S
            asyncio.get_running_loop().call_later(deadline, self._kill, deadline)
        self._stopping.set()
        for _, process in self._running():
            with contextlib.suppress(ProcessLookupError):
                process.terminate()

    def _running(self) -> list[tuple[_Worker, asyncio.subprocess.Process]]:
        return [
            (w, w.process)
            for w in self.workers
            if w.process is not None and w.process.returncode is None
        ]

    def _kill(self, after_s: float) -> None:
        for worker, process in self._running():
            log.warning(
                "worker %d (pid %d) still running %.1f s after SIGTERM: killing it",
                worker.index,
                worker.pid,
                after_s,
            )
            with contextlib.suppress(ProcessLookupError):
                process.kill()

    async def _keep(self, worker: _Worker) -> None:
        """Restart ``worker`` each time it exits, until the supervisor stops."""
        loop = asyncio.get_running_loop()
        while worker.process is not None:
            status = await worker.process.wait()
            if self._stopping.is_set():
                return
            served_s = loop.time() - worker.started_at
            worker.exits = 1 if served_s >= STABLE_S else worker.exits + 1
            delay = restart_delay(worker.exits)
            log.warning(
                "worker %d (pid %d, node %s) exited (%s) after %.1f s; restarting in %.1f s",
                worker.index,
                worker.pid,
                worker.node_id,
                _status(status),
                served_s,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
                return
            await self._spawn(worker)

    async def run(self) -> int:
        """Start the workers, keep them running, drain them; the process's exit code."""
        try:
            self._hold_ports()
            if not self.config.insecure:
                # Created once here, not raced by the workers' first start.
                ensure_keys_file(self.config.keys_path())
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
            served = await asyncio.gather(*(self._spawn(w) for w in self.workers))
            if self._stopping.is_set():  # told to stop while starting
                await self._wait_all()
                return 0
            failed = [w for w, said in zip(self.workers, served, strict=True) if said is None]
            if failed:
                return await self._stop_start(failed)
            self._announce(served)
            await asyncio.gather(*(self._keep(w) for w in self.workers))
            await self._wait_all()
            log.info("all %d workers exited", self.count)
            return 0
        finally:
            for held in self._held:
                held.close()

    async def _stop_start(self, failed: list[_Worker]) -> int:
        for worker in failed:
            assert worker.process is not None
            log.error(
                "worker %d (pid %d) exited before it served (%s): stopping",
                worker.index,
                worker.pid,
                _status(worker.process.returncode),
            )
        self.stop()
        await self._wait_all()
        return 1

    async def _wait_all(self) -> None:
        await asyncio.gather(*(w.process.wait() for w in self.workers if w.process is not None))

    def _announce(self, served: list[dict[str, Any] | None]) -> None:
        host, port = self.listen.rpartition(":")[0], split_host_port(self.listen)[1]
        loops = {str(said["loop"]) for said in served if said is not None}
        log.info(
            "eventrouter listening on %s:%d (%d workers: nodes %s; event loop %s)",
            host,
            port,
            self.count,
            ", ".join(w.node_id for w in self.workers),
            ", ".join(sorted(loops)),
        )
        if self.web_listen:
            log.info("web listener (Connect, gRPC-Web) on %s", self.web_listen)


def restart_delay(exits: int) -> float:
    """Seconds before a worker's restart, after ``exits`` quick exits in a row (1 or more)."""
    return min(BACKOFF_FIRST_S * 2.0 ** min(exits - 1, 16), BACKOFF_MAX_S)


def _with_port(address: str, port: int) -> str:
    """``address`` (HOST:PORT) with another port."""
    return f"{address.rpartition(':')[0]}:{port}"


def _status(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"exit status {code}"


def run_workers(config: ServerConfig) -> int:
    """``eventrouter serve --workers N`` (N > 1): supervise N workers; the exit code."""
    return asyncio.run(Supervisor(config).run())


# -- a worker ------------------------------------------------------------------


class _WorkerField(logging.Filter):
    """Adds ``worker=<i>`` to every record a worker logs."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


def _serving(index: int, server: RouterServer, stop: asyncio.Event) -> None:
    """Tell the supervisor the worker serves; drain once its stdin closes (the parent is gone)."""
    said = {
        "serving": {
            "worker": index,
            "pid": os.getpid(),
            "node_id": server.router.node_id,
            "port": server.port,
            "web_port": server.web_port,
            "metrics_port": server.ops.metrics_port,
            "loop": loop_name(),
        }
    }
    sys.stdout.write(json.dumps(said) + "\n")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # the rest of stdout goes to stderr
    loop = asyncio.get_running_loop()
    stdin = sys.stdin.fileno()

    def parent_said() -> None:
        if not os.read(stdin, 4096):  # EOF: the parent is gone
            loop.remove_reader(stdin)
            stop.set()

    loop.add_reader(stdin, parent_said)


def worker_main() -> None:
    """One worker: settings from stdin, serve until SIGTERM/SIGINT or the parent is gone."""
    request = json.loads(sys.stdin.buffer.readline())
    index = int(request["worker"])
    try:
        config = ServerConfig(**request["settings"])
        hasher = UserIdHasher.from_config(config)
        handler = configure_logging(config, stream=sys.stderr, hasher=hasher)
        handler.addFilter(_WorkerField(index))
        run_server(config, lambda server, stop: _serving(index, server, stop))
    except (ValueError, OSError) as e:
        sys.exit(f"eventrouter serve: worker {index}: {e}")


if __name__ == "__main__":
    worker_main()
