"""Benchmark orchestrator: real servers and load generators as separate processes.

    python bench/run.py                 # the full run (what `make bench` does)
    python bench/run.py --quick --out DIR   # tiny sizes: the smoke test's run

Targets (targets/, one module each), run interleaved (one run of each, then
the next round), each on a fresh server process:

``eventrouter``  ``python -m eventrouter.server --insecure`` (subscribers name
                 their user in metadata, anyone may emit: a benchmark setting)
``bare``         bench/bare_server.py: the same .proto on bare grpc.aio
``socketio``     bench/peers/socketio/server.mjs: Socket.IO with the same rule

Workloads (workloads/, one module each): W0 no recipients, W1 fan-out, W2
many users, W3 idle streams, W4 light paced load, W5n2 / W5n3 = W2 over
two / three eventrouter nodes sharing Redis; each with unary ``emit`` and
auto-``batch``-ed producers (W3 has no emits).

One run (driver.py): server CPU, throughput, latency, lost / duplicated /
misrouted deliveries checked per connection against the routing rule, peak
RSS and, for W3, bytes per idle stream, and each load generator's own CPU.
Processes are started and stopped by procs.py.  Results: JSON, Markdown and
a PNG chart (report/) under bench/results/.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import report
import targets
import workloads
from driver import RunResult, run_one
from procs import py_spy
from report.compare import SECTIONS as COMPARE_SECTIONS
from revision import baseline_target
from workloads import Workload, merged_sizes

BENCH = Path(__file__).resolve().parent
MODES = ("emit", "batch")
SUBJECT = "eventrouter"
WEB = "eventrouter-web"  # profiled under W2 too when it runs (--profile)


def plan_runs(
    names: list[str], target_names: list[str], modes: list[str], reps: int
) -> list[tuple[int, str, str, str]]:
    """(rep, workload, mode, target), interleaved: every target once per round."""
    runs = []
    for rep in range(reps):
        # Rotate the target order each round so none always runs first.
        order = target_names[rep % len(target_names) :] + target_names[: rep % len(target_names)]
        for name in names:
            spec = workloads.REGISTRY[name]
            for mode in spec.modes or modes:
                for target in order:
                    found = targets.resolve(target)[0]
                    if spec.needs_cluster and not found.clustered:
                        continue
                    if spec.targets is not None and found.name not in spec.targets:
                        continue
                    if found.workloads is not None and name not in found.workloads:
                        continue
                    runs.append((rep, name, mode, target))
    return runs


def layout() -> report.Layout:
    """What the report needs to know of the targets and workloads."""
    specs = workloads.REGISTRY.values()
    return report.Layout(
        subject=SUBJECT,
        baselines=tuple(t.name for t in targets.REGISTRY.values() if t.baseline),
        colors={t.name: t.color for t in targets.REGISTRY.values()},
        hidden=frozenset(s.name for s in specs if not s.main_table),
        sections=(*(s.section for s in specs if s.section is not None), *COMPARE_SECTIONS),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    parser.add_argument("--out", default=str(BENCH / "results"), help="results folder")
    parser.add_argument("--reps", type=int, default=None, help="rounds (default 3; quick 1)")
    parser.add_argument("--workloads", default=",".join(workloads.REGISTRY))
    parser.add_argument("--targets", default=",".join(targets.REGISTRY))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply emit counts (not connections) by this"
    )
    parser.add_argument(
        "--cluster-nodes",
        type=int,
        default=2,
        help="nodes of a clustered workload that does not fix its own (W5n2, W5n3 do)",
    )
    parser.add_argument(
        "--channel-per",
        choices=("stream", "user"),
        default="stream",
        help="gRPC subscribers: one TCP connection per stream (default) or per user",
    )
    parser.add_argument(
        "--clients",
        choices=targets.CLIENTS,
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
        "--profile",
        action="store_true",
        help="also profile the eventrouter under W1/W2 (and a W5n2 node) (py-spy)",
    )
    parser.add_argument(
        "--baseline-rev",
        metavar="REV",
        help="also run the eventrouter of commit REV (a git worktree, removed afterwards) as"
        " target eventrouter@REV; the report divides the eventrouter by it",
    )
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        if args.baseline_rev:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="eventrouter-rev-"))
            at_rev = stack.enter_context(baseline_target(args.baseline_rev, Path(tmp)))
            args.targets += f",{at_rev.name}"
        return run(parser, args)


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    opts = targets.Options(clients=args.clients, server_python=args.server_python)
    if args.clients != "python" and not targets.node_clients_installed():
        parser.error(
            f"--clients {args.clients} needs node and the root node_modules (make node-deps)"
        )

    sizes = merged_sizes(list(workloads.REGISTRY.values()), args.quick, args.scale)
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    target_names = [t for t in args.targets.split(",") if t]
    names = [w for w in args.workloads.split(",") if w]
    for name in target_names:
        try:
            targets.resolve(name)
        except KeyError as e:
            parser.error(e.args[0])
    unknown = [w for w in names if w not in workloads.REGISTRY]
    if unknown:
        parser.error(f"unknown workloads {unknown}; known: {', '.join(workloads.REGISTRY)}")
    notes: list[str] = []
    for name in list(target_names):
        missing = targets.resolve(name)[0].available()
        if missing is not None:
            target_names.remove(name)
            notes.append(missing)
    for name in list(names):
        missing = workloads.REGISTRY[name].requires()
        if missing is not None:
            names.remove(name)
            notes.append(f"{name} not run: {missing}")
    note = targets.clients_note(args.clients)
    if note is not None:
        notes.append(note)
    modes = [m for m in args.modes.split(",") if m]
    built = {name: workloads.build(name, sizes, args.cluster_nodes) for name in names}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    runs = plan_runs(names, target_names, modes, reps)
    results: list[RunResult] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="eventrouter-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for n, (rep, name, mode, target) in enumerate(runs, 1):
            t0 = time.monotonic()
            procs = workloads.REGISTRY[name].sub_procs
            r = run_one(
                target, built[name], mode, rep, tmp, procs, opts, channel_per=args.channel_per
            )
            results.append(r)
            print(
                f"[{n}/{len(runs)}] {name} {mode:5} {target:11} rep {rep}: "
                f"{_brief(r)} ({time.monotonic() - t0:.1f}s)",
                flush=True,
            )
        profiles: dict[str, Any] = {}
        if args.profile:
            web = [t for t in target_names if t == WEB] if "W2" in built else []
            profiles = run_profiles(built, tmp, out, opts, web)
    elapsed = time.monotonic() - started
    meta = {
        "command": " ".join([Path(sys.executable).name, "bench/run.py", *sys.argv[1:]]),
        "quick": args.quick,
        "reps": reps,
        "sizes": dict(sizes),
        "elapsed_s": elapsed,
        "notes": notes,
        "clients": args.clients,
        "machine": _machine(args.server_python),
        "load_1m": _spread([float(r.metrics["load_1m"]) for r in results]),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "titles": {name: w.title for name, w in built.items()},
    }
    paths = report.write(out, meta, [r.to_json() for r in results], profiles, layout())
    print(f"results: {', '.join(str(p) for p in paths)} ({elapsed:.0f}s)")
    return 0 if all(r.ok for r in results) else 1


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
    if "stalled_streams" in m:
        brief += (
            f"; {m['stalled_streams']} stalled: {m['stalled_closed']} closed too slow,"
            f" {m['stalled_open']} open"
        )
    return brief


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _machine(server_python: str) -> dict[str, Any]:
    model = ""
    with suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    server_version = subprocess.run(
        [server_python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "server_python": server_version,
    }


def run_profiles(
    built: dict[str, Workload], tmp: Path, out: Path, opts: targets.Options, also: list[str]
) -> dict[str, Any]:
    """Profile the eventrouter under W1 and W2 with batched producers (not measured runs).

    ``also``: more targets (eventrouter-web) profiled under W2.  W5n2, when it
    runs, is profiled on its first node (the nodes are alike): what a cluster
    node does per event that a single node does not.
    """
    if py_spy() is None:
        return {"error": "py-spy not installed (pip install py-spy)"}
    found: dict[str, Any] = {}
    jobs: list[tuple[str, str]] = [(name, SUBJECT) for name in ("W1", "W2") if name in built]
    jobs += [("W2", target) for target in also]
    jobs += [("W5n2", SUBJECT)] if "W5n2" in built else []
    for name, target in jobs:
        label = name if target == SUBJECT else f"{name} {target}"
        raw = out / f"profile-{label.replace(' ', '-')}.txt"
        r = run_one(target, built[name], "batch", 99, tmp, 1, opts, profile=raw)
        if raw.exists():
            found[label] = report.profile_summary(raw.read_text())
            found[label]["run_ok"] = r.ok
    return found


if __name__ == "__main__":
    sys.exit(main())
