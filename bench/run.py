"""Benchmark orchestrator: real servers and load generators as separate processes.

    python bench/run.py                 # the full run (what `make bench` does)
    python bench/run.py --quick --out DIR   # tiny sizes: the smoke test's run

Targets, run interleaved (one run of each, then the next round), each on a
fresh server process:

``eventrouter``  ``python -m eventrouter.server --insecure`` (subscribers name
                 their user in metadata, anyone may emit: a benchmark setting)
``bare``         bench/bare_server.py: the same .proto on bare grpc.aio
``socketio``     bench/peers/socketio/server.mjs: Socket.IO with the same rule

Workloads (workloads.py): W1 fan-out, W2 many users, W3 idle streams, W4
light paced load, W5 = W2 over two eventrouter nodes sharing Redis; each
with unary ``emit`` and auto-``batch``-ed producers (W3 has no emits).

Per run: server CPU (utime + stime of all its threads, from /proc, between
the producer's start and the last delivery), so per-operation costs do not
depend on what else runs on the machine; throughput; latency measured by the
subscribers from the publisher's stamp; lost / duplicated / misrouted
deliveries checked per connection against the routing rule; peak RSS and,
for W3, bytes per idle stream; and each load generator's own CPU (it says
it in its ``done`` line), to show they were not the bottleneck.  Results:
JSON, Markdown and a PNG chart (report.py) under bench/results/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import report
from common import dump_json, free_port, load_json, sample, thread_cpu, wait_port
from workloads import FULL, QUICK, Sizes, Workload, build, check, expected_by_conn

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEER = BENCH / "peers" / "socketio"
GRPC_NODE_CLIENT = BENCH / "peers" / "grpc" / "client.mjs"
TARGETS = ("eventrouter", "bare", "socketio")
CLIENTS = ("python", "node", "node-sub")
MODES = ("emit", "batch")
# The interpreter of the Python servers (--server-python): the project installed in it.
SERVER_PYTHON = [sys.executable]
OPEN_TIMEOUT_S = 300.0
PRODUCE_TIMEOUT_S = 600.0
FINISH_TIMEOUT_S = 200.0


def peer_installed() -> bool:
    return shutil.which("node") is not None and (PEER / "node_modules" / "socket.io").is_dir()


def py_spy() -> str | None:
    """py-spy on PATH or next to this interpreter (a venv's bin/)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def node_grpc_installed() -> bool:
    """node and the root's @grpc packages (make node-deps), for --clients node / node-sub."""
    modules = ROOT / "node_modules" / "@grpc"
    return shutil.which("node") is not None and all(
        (modules / name).is_dir() for name in ("grpc-js", "proto-loader")
    )


def redis_available() -> bool:
    return shutil.which("redis-server") is not None


# -- processes ------------------------------------------------------------------


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


def server_cmd(target: str, port: int, broker: str | None, node: int) -> list[str]:
    if target.startswith("eventrouter"):
        # eventrouter+VARIANT+...: the same server with candidate optimizations patched in.
        _, *variants = target.split("+")
        cmd = [SERVER_PYTHON[0], "-m", "eventrouter.server"]
        if variants:
            cmd = [SERVER_PYTHON[0], str(BENCH / "variant_server.py"), ",".join(variants)]
        cmd += [
            "--listen",
            f"127.0.0.1:{port}",
            "--insecure",
            "--metrics-listen",
            "",
            "--log-level",
            "warning",
        ]
        cmd += ["--shutdown-grace-s", "1"]
        if broker:
            cmd += ["--broker", broker, "--node-id", f"bench-node-{node}"]
        return cmd
    if target.startswith("bare"):
        # bare+uvloop: the ceiling on the same event loop as a uvloop eventrouter.
        uv = ["--uvloop"] if target == "bare+uvloop" else []
        return [SERVER_PYTHON[0], str(BENCH / "bare_server.py"), "--port", str(port), *uv]
    return ["node", str(PEER / "server.mjs"), "--port", str(port)]


@contextmanager
def servers(target: str, nodes: int, tmp: Path, broker: str | None) -> Iterator[list[Node]]:
    started: list[Node] = []
    try:
        for n in range(nodes):
            port = free_port()
            log = (tmp / f"server-{n}.log").open("wb")
            proc = subprocess.Popen(
                server_cmd(target, port, broker, n), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
            started.append(Node(proc, port, log))
        for node in started:
            wait_port(node.port)
        yield started
    finally:
        for node in started:
            stop_process(node.proc)
            node.log.close()


def uses_node(target: str, role: str, clients: str = "python") -> bool:
    """Whether this role's load generator is a Node.js one.

    ``--clients python``: loadgen_*.py for the gRPC targets; ``node``: both
    roles peers/grpc/client.mjs; ``node-sub``: Node subscribers with the
    Python publisher (the project's client library batching). The Socket.IO
    peer always has its Node clients.
    """
    return target == "socketio" or clients == "node" or (clients == "node-sub" and role == "sub")


def worker_cmd(target: str, role: str, spec: Path, clients: str = "python") -> list[str]:
    if target == "socketio":
        return ["node", str(PEER / "client.mjs"), role, str(spec)]
    if uses_node(target, role, clients):
        return ["node", str(GRPC_NODE_CLIENT), role, str(spec)]
    script = "loadgen_sub.py" if role == "sub" else "loadgen_pub.py"
    return [sys.executable, str(BENCH / script), str(spec)]


def client_label(target: str, role: str, clients: str = "python") -> str:
    """The load generator of a role, as reports name it."""
    if target == "socketio":
        return "node socket.io-client"
    return "node grpc-js" if uses_node(target, role, clients) else "python grpcio"


# -- one run ----------------------------------------------------------------------


@dataclass
class RunResult:
    target: str
    workload: str
    mode: str
    rep: int
    ok: bool = True
    error: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "workload": self.workload,
            "mode": self.mode,
            "rep": self.rep,
            "ok": self.ok,
            "error": self.error,
            **self.metrics,
        }


def _split(workload: Workload, procs: int) -> list[tuple[list[dict[str, Any]], list[int]]]:
    """The connections per subscriber process, with each one's stage counts."""
    conns: list[dict[str, Any]] = workload.to_json()["conns"]
    size = -(-len(conns) // procs)
    groups = [conns[i : i + size] for i in range(0, len(conns), size)]
    total = len(conns)
    return [(g, [max(1, round(len(g) * s / total)) for s in workload.stages[:-1]]) for g in groups]


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return float(sorted_values[i])


def run_one(
    target: str,
    workload: Workload,
    mode: str,
    rep: int,
    tmp: Path,
    sub_procs: int,
    profile: Path | None = None,
    channel_per: str = "stream",
    clients: str = "python",
) -> RunResult:
    result = RunResult(target, workload.name, mode, rep)
    result.metrics["sub_client"] = client_label(target, "sub", clients)
    if not workload.idle:  # W3 has no publisher
        result.metrics["pub_client"] = client_label(target, "pub", clients)
    run_id = f"{target}-{workload.name}-{mode}-{rep}-{os.getpid()}"
    work = tmp / run_id
    work.mkdir()
    with contextmanager_chain(target, workload, work) as (nodes, redis_pid, redis_port):
        addrs = [f"127.0.0.1:{n.port}" for n in nodes]
        subs: list[Worker] = []
        pub: Worker | None = None
        spy: subprocess.Popen[bytes] | None = None
        try:
            groups = _split(workload, sub_procs)
            for i, (conns, stages) in enumerate(groups):
                spec = work / f"sub-{i}.json"
                dump_json(
                    str(spec),
                    {
                        "targets": addrs,
                        "conns": conns,
                        "stages": stages,
                        "open_concurrency": 100,
                        "channel_per": channel_per,
                        "out": str(work / f"sub-{i}.out.json"),
                    },
                )
                subs.append(Worker(worker_cmd(target, "sub", spec, clients), work / f"sub-{i}.log"))
            stage_rss: list[tuple[int, int]] = []
            for _ in workload.stages[:-1]:
                opened = sum(w.expect("stage", OPEN_TIMEOUT_S)["opened"] for w in subs)
                time.sleep(1.0)  # let allocations settle before reading RSS
                stage_rss.append((opened, sum(sample(n.proc.pid).rss_bytes for n in nodes)))
                for w in subs:
                    w.send("next")
            ids: dict[str, str] = {}
            for w in subs:
                ids.update(w.expect("ready", OPEN_TIMEOUT_S)["ids"])
            if workload.idle:
                time.sleep(1.0)
                stage_rss.append((len(ids), sum(sample(n.proc.pid).rss_bytes for n in nodes)))
                (n0, r0), (n1, r1) = stage_rss[0], stage_rss[-1]
                result.metrics.update(
                    streams=len(ids),
                    rss_first_bytes=r0,
                    rss_all_bytes=r1,
                    bytes_per_stream=(r1 - r0) / max(1, n1 - n0),
                    peak_rss_bytes=sum(sample(n.proc.pid).hwm_bytes for n in nodes),
                )
                return result
            expected = expected_by_conn(workload)
            expected_path = work / "expected.json"
            dump_json(str(expected_path), {str(i): len(ks) for i, ks in enumerate(expected)})
            pub_spec = work / "pub.json"
            dump_json(
                str(pub_spec),
                {
                    "targets": addrs,
                    "plan": workload.to_json()["plan"],
                    "ids": ids,
                    "mode": mode,
                    "inflight": workload.inflight,
                    "rate": workload.rate,
                    "run_id": run_id,
                },
            )
            pub = Worker(worker_cmd(target, "pub", pub_spec, clients), work / "pub.log")
            pub.expect("ready", OPEN_TIMEOUT_S)
            if profile is not None:
                spy = subprocess.Popen(
                    [py_spy() or "py-spy", "record", "--pid", str(nodes[0].proc.pid),
                     "--rate", "250", "--format", "raw", "--native", "-o", str(profile)],
                    stdout=subprocess.DEVNULL,
                    stderr=profile.with_suffix(".log").open("wb"),
                )  # fmt: skip
                time.sleep(1.0)
            threads_before = thread_cpu(nodes[0].proc.pid)
            before = [sample(n.proc.pid) for n in nodes]
            redis_before = sample(redis_pid).cpu_s if redis_pid else 0.0
            redis_mem_before = redis_used_memory(redis_port) if redis_port else 0
            pub.send("go")
            produced = pub.expect("done", PRODUCE_TIMEOUT_S)
            for w in subs:
                w.send(f"finish {expected_path}")
            finished = [w.expect("done", FINISH_TIMEOUT_S) for w in subs]
            after = [sample(n.proc.pid) for n in nodes]
            threads = thread_cpu(nodes[0].proc.pid)
            result.metrics["server_thread_cpu_s"] = {
                name: round(cpu - threads_before.get(name, 0.0), 3)
                for name, cpu in sorted(threads.items(), key=lambda kv: -kv[1])
                if cpu - threads_before.get(name, 0.0) > 0
            }
            redis_cpu = (sample(redis_pid).cpu_s - redis_before) if redis_pid else 0.0
            if redis_port:
                updates = sum(e.kind == "u" for e in workload.plan)
                grown = redis_used_memory(redis_port) - redis_mem_before
                result.metrics["redis_memory_growth_bytes"] = grown
                result.metrics["redis_bytes_per_retained_update"] = grown / max(1, updates)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=60)
            _measure(result, workload, groups, work, produced, finished, before, after, redis_cpu)
        except Exception as e:
            result.ok = False
            result.error = f"{type(e).__name__}: {e}"
        finally:
            if spy is not None and spy.poll() is None:
                spy.kill()
            for w in [*subs, *([pub] if pub else [])]:
                w.stop()
    return result


@contextmanager
def contextmanager_chain(
    target: str, workload: Workload, work: Path
) -> Iterator[tuple[list[Node], int, int]]:
    """The target's node(s), behind a fresh Redis when clustered: (nodes, Redis pid, port)."""
    if workload.nodes > 1:
        with (
            redis_server(work) as (port, pid),
            servers(target, workload.nodes, work, f"redis://127.0.0.1:{port}/0") as nodes,
        ):
            yield nodes, pid, port
    else:
        with servers(target, 1, work, None) as nodes:
            yield nodes, 0, 0


def _measure(
    result: RunResult,
    workload: Workload,
    groups: list[tuple[list[dict[str, Any]], list[int]]],
    work: Path,
    produced: dict[str, Any],
    finished: list[dict[str, Any]],
    before: list[Any],
    after: list[Any],
    redis_cpu: float,
) -> None:
    received: list[list[int]] = [[] for _ in workload.conns]
    latencies: list[int] = []
    stream_errors: list[str] = []
    last_recv = 0
    for i in range(len(groups)):
        out = load_json(str(work / f"sub-{i}.out.json"))
        last_recv = max(last_recv, out["last_recv_us"])
        for index, data in out["conns"].items():
            received[int(index)] = data["ks"]
            latencies += data["lat"]
            if data["error"]:
                stream_errors.append(f"conn {index}: {data['error']}")
    checked = check(workload, received)
    latencies.sort()
    cpu = sum(a.cpu_s - b.cpu_s for a, b in zip(after, before, strict=True))
    end = max(last_recv, produced["last_reply_us"])
    duration = max(1e-6, (end - produced["first_send_us"]) / 1e6)
    emits = produced["emits"]
    delivered = checked.delivered
    result.metrics.update(
        emits=emits,
        deliveries=delivered,
        expected=checked.expected,
        lost=checked.lost,
        lost_ephemeral=checked.lost_ephemeral,
        duplicated=checked.duplicated,
        misrouted=checked.misrouted,
        producer_errors=produced["errors"],
        first_producer_errors=produced.get("first_errors", []),
        stream_errors=len(stream_errors),
        first_stream_errors=stream_errors[:5],
        duration_s=duration,
        emits_per_s=emits / duration,
        deliveries_per_s=delivered / duration,
        server_cpu_s=cpu,
        server_user_s=sum(a.user_s - b.user_s for a, b in zip(after, before, strict=True)),
        server_sys_s=sum(a.sys_s - b.sys_s for a, b in zip(after, before, strict=True)),
        cpu_us_per_emit=cpu * 1e6 / max(1, emits),
        redis_cpu_s=redis_cpu,
        peak_rss_bytes=sum(a.hwm_bytes for a in after),
    )
    if delivered:
        # W0 delivers nothing: no per-delivery cost and no latency to report.
        result.metrics.update(
            cpu_us_per_delivery=cpu * 1e6 / delivered,
            latency_p50_ms=_percentile(latencies, 0.50) / 1000,
            latency_p99_ms=_percentile(latencies, 0.99) / 1000,
            latency_max_ms=latencies[-1] / 1000,
        )
    _load_generator_cpu(result, produced, finished, duration, emits, delivered)
    if not checked.ok or produced["errors"] or stream_errors:
        result.ok = False
        result.error = (
            f"lost {checked.lost}, duplicated {checked.duplicated}, misrouted "
            f"{checked.misrouted}, producer errors {produced['errors']}, "
            f"stream errors {len(stream_errors)}"
        )


def _load_generator_cpu(
    result: RunResult,
    produced: dict[str, Any],
    finished: list[dict[str, Any]],
    duration: float,
    emits: int,
    delivered: int,
) -> None:
    """The load generators' own CPU, as they said it in ``done`` (``cpu_s``).

    Publisher: from ``go`` to its ``done``; subscribers (all processes added
    up): from their ``ready`` to writing their results. Cores = CPU ÷ the
    run's duration (first send to last delivery): the mean cores each used.
    """
    m = result.metrics
    m["server_cores"] = m["server_cpu_s"] / duration
    if "cpu_s" in produced:
        pub = float(produced["cpu_s"])
        m.update(
            pub_cpu_s=pub, pub_cpu_us_per_emit=pub * 1e6 / max(1, emits), pub_cores=pub / duration
        )
    if finished and all("cpu_s" in f for f in finished):
        sub = sum(float(f["cpu_s"]) for f in finished)
        m.update(sub_cpu_s=sub, sub_cores=sub / duration)
        if delivered:
            m["sub_cpu_us_per_delivery"] = sub * 1e6 / delivered


# -- the whole benchmark ----------------------------------------------------------


def plan_runs(
    workloads: list[str], targets: list[str], modes: list[str], reps: int
) -> list[tuple[int, str, str, str]]:
    """(rep, workload, mode, target), interleaved: every target once per round."""
    runs = []
    for rep in range(reps):
        # Rotate the target order each round so none always runs first.
        order = targets[rep % len(targets) :] + targets[: rep % len(targets)]
        for name in workloads:
            for mode in ["-"] if name == "W3" else modes:
                for target in order:
                    if name == "W5" and not target.startswith("eventrouter"):
                        continue
                    runs.append((rep, name, mode, target))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    parser.add_argument("--out", default=str(BENCH / "results"), help="results folder")
    parser.add_argument("--reps", type=int, default=None, help="rounds (default 3; quick 1)")
    parser.add_argument("--workloads", default="W0,W1,W2,W3,W4,W5")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply emit counts (not connections) by this"
    )
    parser.add_argument("--cluster-nodes", type=int, default=2, help="eventrouter nodes in W5")
    parser.add_argument(
        "--channel-per",
        choices=("stream", "user"),
        default="stream",
        help="gRPC subscribers: one TCP connection per stream (default) or per user",
    )
    parser.add_argument(
        "--clients",
        choices=CLIENTS,
        default="node-sub",
        help="gRPC targets' load generators: node-sub (default) = Node subscribers with the"
        " Python publisher (the client library's batching); python = loadgen_*.py; node ="
        " peers/grpc/client.mjs for both roles",
    )
    parser.add_argument(
        "--server-python",
        default=sys.executable,
        help="interpreter for the eventrouter and bare servers (another Python version's venv"
        " with the project installed); default: this one",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also profile the eventrouter under W1/W2 (py-spy)"
    )
    args = parser.parse_args(argv)
    SERVER_PYTHON[0] = args.server_python
    if args.clients != "python" and not node_grpc_installed():
        parser.error(
            f"--clients {args.clients} needs node and the root node_modules (make node-deps)"
        )

    sizes: Sizes = QUICK if args.quick else FULL
    if args.scale != 1.0:
        sizes = dataclasses.replace(
            sizes,
            w0_emits=int(sizes.w0_emits * args.scale),
            w1_emits=int(sizes.w1_emits * args.scale),
            w2_emits=int(sizes.w2_emits * args.scale),
            w4_emits=int(sizes.w4_emits * args.scale),
        )
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    targets = [t for t in args.targets.split(",") if t]
    notes: list[str] = []
    if "socketio" in targets and not peer_installed():
        targets.remove("socketio")
        notes.append(
            "Socket.IO peer not run: node or bench/peers/socketio/node_modules missing"
            " (`make bench` installs it)"
        )
    names = [w for w in args.workloads.split(",") if w]
    if "W5" in names and not redis_available():
        names.remove("W5")
        notes.append("W5 not run: redis-server is not installed")
    if args.clients == "node":
        notes.append(
            "gRPC targets' load generators: Node.js @grpc/grpc-js (bench/peers/grpc/client.mjs,"
            " `--clients node`) instead of loadgen_sub.py / loadgen_pub.py"
        )
    elif args.clients == "node-sub":
        notes.append(
            "gRPC targets' subscribers: Node.js @grpc/grpc-js (bench/peers/grpc/client.mjs,"
            " `--clients node-sub`) instead of loadgen_sub.py; the publisher is still"
            " loadgen_pub.py (the project's Python client library and its batching)"
        )
    modes = [m for m in args.modes.split(",") if m]
    workloads = {name: build(name, sizes, args.cluster_nodes) for name in names}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    runs = plan_runs(names, targets, modes, reps)
    results: list[RunResult] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="eventrouter-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for n, (rep, name, mode, target) in enumerate(runs, 1):
            t0 = time.monotonic()
            procs = 2 if name == "W3" else 1
            r = run_one(
                target, workloads[name], mode, rep, tmp, procs, None, args.channel_per, args.clients
            )
            results.append(r)
            print(
                f"[{n}/{len(runs)}] {name} {mode:5} {target:11} rep {rep}: "
                f"{_brief(r)} ({time.monotonic() - t0:.1f}s)",
                flush=True,
            )
        profiles: dict[str, Any] = {}
        if args.profile:
            profiles = run_profiles(workloads, tmp, out, args.clients)
    elapsed = time.monotonic() - started
    meta = {
        "command": " ".join([Path(sys.executable).name, "bench/run.py", *sys.argv[1:]]),
        "quick": args.quick,
        "reps": reps,
        "sizes": _sizes_dict(sizes),
        "elapsed_s": elapsed,
        "notes": notes,
        "clients": args.clients,
        "machine": _machine(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "titles": {name: w.title for name, w in workloads.items()},
    }
    paths = report.write(out, meta, [r.to_json() for r in results], profiles)
    print(f"results: {', '.join(str(p) for p in paths)} ({elapsed:.0f}s)")
    return 0 if all(r.ok for r in results) else 1


def _sizes_dict(sizes: Sizes) -> dict[str, Any]:
    return {f: getattr(sizes, f) for f in sizes.__dataclass_fields__}


def _brief(r: RunResult) -> str:
    m = r.metrics
    if not r.ok:
        return "FAILED " + r.error
    if "bytes_per_stream" in m:
        return f"{m['streams']} streams, {m['bytes_per_stream'] / 1024:.1f} KiB/stream"
    brief = (
        f"{m['emits_per_s']:.0f} emits/s, {m['deliveries_per_s']:.0f} deliveries/s, "
        f"{m['cpu_us_per_emit']:.1f} µs CPU/emit"
    )
    if "cpu_us_per_delivery" in m:
        brief += (
            f", {m['cpu_us_per_delivery']:.2f} µs CPU/delivery, "
            f"p50 {m['latency_p50_ms']:.1f} ms p99 {m['latency_p99_ms']:.1f} ms"
        )
    if "pub_cores" in m and "sub_cores" in m:
        brief += f"; pub {m['pub_cores']:.2f} cores, sub {m['sub_cores']:.2f} cores"
    return brief


def _machine() -> dict[str, Any]:
    model = ""
    with suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    server_python = subprocess.run(
        [SERVER_PYTHON[0], "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "server_python": server_python,
    }


def run_profiles(
    workloads: dict[str, Workload], tmp: Path, out: Path, clients: str = "python"
) -> dict[str, Any]:
    """Profile the eventrouter under W1 and W2 with batched producers (not measured runs)."""
    if py_spy() is None:
        return {"error": "py-spy not installed (pip install py-spy)"}
    found: dict[str, Any] = {}
    for name in ("W1", "W2"):
        if name not in workloads:
            continue
        raw = out / f"profile-{name}.txt"
        r = run_one(
            "eventrouter", workloads[name], "batch", 99, tmp, 1, profile=raw, clients=clients
        )
        if raw.exists():
            found[name] = report.profile_summary(raw.read_text())
            found[name]["run_ok"] = r.ok
    return found


if __name__ == "__main__":
    sys.exit(main())
