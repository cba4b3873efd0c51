"""One run: a workload against a target, on fresh server processes, measured.

The subscribers open the workload's connections (stage by stage for W3, whose
memory is read at each stage), the publisher sends the plan, the subscribers
wait until every delivery the routing rule calls for arrived; then CPU,
throughput, latency, correctness and memory are worked out (``measure``).

Server CPU is utime + stime of all the server's threads from /proc, between
the producer's start and the last delivery, so per-operation costs do not
depend on what else runs on the machine; each load generator reports its own
CPU in its ``done`` line, to show they were not the bottleneck.

A workload's stalled connections (W2s) are held by a subscriber process of
their own that reads nothing after opening them; it is told to finish only
after the measurement and STALL_HOLD_S more, then reads what was kept for
them and how they ended (``check_stalled``).  Every other figure is about the
prompt connections alone.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import ProcSample, dump_json, load_json, sample, thread_cpu
from procs import Worker, redis_used_memory, start_profiler, stop_profiler, target_nodes
from targets import Options, resolve
from workloads import Workload, check, check_stalled, expected_by_conn

OPEN_TIMEOUT_S = 300.0
PRODUCE_TIMEOUT_S = 600.0
FINISH_TIMEOUT_S = 200.0
# How long the stalled connections stay unread after the measurement: longer
# than the eventrouter's queue_overflow_grace_ms (1000 by default), so a queue
# left over its limits has been closed as too slow before they read.
STALL_HOLD_S = 1.5


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


Group = tuple[list[dict[str, Any]], list[int]]


def split(workload: Workload, procs: int) -> list[Group]:
    """The prompt connections per subscriber process, with each one's stage counts."""
    stalled = set(workload.stalled)
    conns = [c for c in workload.to_json()["conns"] if c["index"] not in stalled]
    size = -(-len(conns) // procs)
    groups = [conns[i : i + size] for i in range(0, len(conns), size)]
    total = len(conns)
    return [(g, [max(1, round(len(g) * s / total)) for s in workload.stages[:-1]]) for g in groups]


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return float(sorted_values[i])


def run_one(
    target_name: str,
    workload: Workload,
    mode: str,
    rep: int,
    tmp: Path,
    sub_procs: int,
    opts: Options,
    profile: Path | None = None,
    channel_per: str = "stream",
) -> RunResult:
    target, variants = resolve(target_name)
    result = RunResult(target_name, workload.name, mode, rep)
    # What else kept the shared machine busy (1-minute load average), as the run starts.
    result.metrics["load_1m"] = os.getloadavg()[0]
    result.metrics["sub_client"] = target.client_label("sub", opts)
    if not workload.idle:  # W3 has no publisher
        result.metrics["pub_client"] = target.client_label("pub", opts)
    run_id = f"{target_name}-{workload.name}-{mode}-{rep}-{os.getpid()}"
    work = tmp / run_id
    work.mkdir()
    with target_nodes(target, variants, workload.nodes, work, opts) as (
        nodes,
        redis_pid,
        redis_port,
    ):
        addrs = [f"127.0.0.1:{n.port}" for n in nodes]
        sub_addrs = [target.sub_addr(n.port) for n in nodes]
        subs: list[Worker] = []
        pub: Worker | None = None
        stalled: Worker | None = None
        spy: subprocess.Popen[bytes] | None = None

        def subscriber(role: str, name: str, conns: list[dict[str, Any]], **more: Any) -> Worker:
            spec = work / f"{name}.json"
            dump_json(
                str(spec),
                {
                    "targets": sub_addrs,
                    "conns": conns,
                    "open_concurrency": 100,
                    "channel_per": channel_per,
                    "out": str(work / f"{name}.out.json"),
                    **more,
                },
            )
            return Worker(target.worker_cmd(role, spec, opts), work / f"{name}.log")

        try:
            groups = split(workload, sub_procs)
            for i, (conns, stages) in enumerate(groups):
                subs.append(subscriber("sub", f"sub-{i}", conns, stages=stages))
            if workload.stalled:
                result.metrics["stalled_client"] = target.client_label("stalled", opts)
                conns = [workload.to_json()["conns"][i] for i in workload.stalled]
                stalled = subscriber("stalled", "stalled", conns, stall=True)
            stage_rss: list[tuple[int, int]] = []
            for _ in workload.stages[:-1]:
                opened = sum(w.expect("stage", OPEN_TIMEOUT_S)["opened"] for w in subs)
                time.sleep(1.0)  # let allocations settle before reading RSS
                stage_rss.append((opened, sum(sample(n.proc.pid).rss_bytes for n in nodes)))
                for w in subs:
                    w.send("next")
            ids: dict[str, str] = {}
            for w in [*subs, *([stalled] if stalled else [])]:
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
            pub = Worker(target.worker_cmd("pub", pub_spec, opts), work / "pub.log")
            pub.expect("ready", OPEN_TIMEOUT_S)
            if profile is not None:
                spy = start_profiler(nodes[0].proc.pid, profile)
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
                stop_profiler(spy)
            if stalled is not None:
                time.sleep(STALL_HOLD_S)
                stalled.send(f"finish {expected_path}")
                stalled.expect("done", FINISH_TIMEOUT_S)
            measure(result, workload, groups, work, produced, finished, before, after, redis_cpu)
        except Exception as e:
            result.ok = False
            result.error = f"{type(e).__name__}: {e}"
        finally:
            if spy is not None and spy.poll() is None:
                spy.kill()
            for w in [*subs, *([pub] if pub else []), *([stalled] if stalled else [])]:
                w.stop()
    return result


def measure(
    result: RunResult,
    workload: Workload,
    groups: list[Group],
    work: Path,
    produced: dict[str, Any],
    finished: list[dict[str, Any]],
    before: list[ProcSample],
    after: list[ProcSample],
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
    checked = check(workload, received, skip=set(workload.stalled))
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
            latency_p50_ms=percentile(latencies, 0.50) / 1000,
            latency_p99_ms=percentile(latencies, 0.99) / 1000,
            latency_max_ms=latencies[-1] / 1000,
        )
    calls = sorted(produced.get("call_us", []))
    if calls:
        result.metrics.update(
            emit_call_p50_ms=percentile(calls, 0.50) / 1000,
            emit_call_p99_ms=percentile(calls, 0.99) / 1000,
        )
    load_generator_cpu(result, produced, finished, duration, emits, delivered)
    stalled_ok = measure_stalled(result, workload, work) if workload.stalled else True
    if not checked.ok or produced["errors"] or stream_errors or not stalled_ok:
        result.ok = False
        result.error = (
            f"lost {checked.lost}, duplicated {checked.duplicated}, misrouted "
            f"{checked.misrouted}, producer errors {produced['errors']}, "
            f"stream errors {len(stream_errors)}"
        )
        if not stalled_ok:
            result.error += ", stalled streams: " + "; ".join(result.metrics["stalled_problems"])


def measure_stalled(result: RunResult, workload: Workload, work: Path) -> bool:
    """How the stalled connections ended and whether what they got at last was sound."""
    out = load_json(str(work / "stalled.out.json"))["conns"]
    received = {int(i): data["ks"] for i, data in out.items()}
    ends = {int(i): data["error"] for i, data in out.items()}
    stalled = check_stalled(workload, received, ends)
    stalled.problems = stalled.problems[:5]
    # stalled_streams, stalled_closed, stalled_open, ..., stalled_problems
    result.metrics.update({f"stalled_{k}": v for k, v in dataclasses.asdict(stalled).items()})
    return stalled.ok


def load_generator_cpu(
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
