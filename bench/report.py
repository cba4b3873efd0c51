"""Turns the runs into the results: JSON, a Markdown table and a PNG chart.

Figures per (workload, mode, target) are the median over the rounds; ratios
compare the eventrouter with the Socket.IO peer and with the bare grpc.aio
ceiling *within the same benchmark run*, because the machine is shared and
absolute numbers drift between runs.  A figure that was not measured is
reported as "n/a", never estimated.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

NUMERIC = (
    "emits_per_s",
    "deliveries_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "cpu_us_per_emit",
    "cpu_us_per_delivery",
    "server_cpu_s",
    "server_user_s",
    "server_sys_s",
    "redis_cpu_s",
    "redis_bytes_per_retained_update",
    "peak_rss_bytes",
    "bytes_per_stream",
    "duration_s",
    # The load generators' own CPU (each says it in its `done` line) and cores
    # (CPU ÷ duration_s) next to the server's: were they, or the machine, the bottleneck?
    "server_cores",
    "pub_cpu_s",
    "pub_cpu_us_per_emit",
    "pub_cores",
    "sub_cpu_s",
    "sub_cpu_us_per_delivery",
    "sub_cores",
)
LABELS = ("pub_client", "sub_client")  # which load generators ran (first run's)
SUMMED = ("lost", "lost_ephemeral", "duplicated", "misrouted", "producer_errors", "stream_errors")

# (goal id, text, workload, mode, metric, compared with, limit)
GOALS: list[tuple[str, str, str, str, str, str, float]] = [
    ("cpu_emit_batched_W1", "server CPU per emit, batched producers (W1)", "W1", "batch",
     "cpu_us_per_emit", "socketio", 0.4),
    ("cpu_emit_batched_W0", "server CPU per emit, batched producers, no recipients (W0)", "W0",
     "batch", "cpu_us_per_emit", "socketio", 0.4),
    ("cpu_delivery_W1", "server CPU per delivery, W1 fan-out (batched)", "W1", "batch",
     "cpu_us_per_delivery", "socketio", 0.4),
    ("cpu_emit_W2", "server CPU per emit, W2 many users (batched)", "W2", "batch",
     "cpu_us_per_emit", "socketio", 1.0),
    ("latency_p50_W4", "W4 latency p50 (batched)", "W4", "batch", "latency_p50_ms",
     "socketio", 1.0),
    ("latency_p99_W4", "W4 latency p99 (batched)", "W4", "batch", "latency_p99_ms",
     "socketio", 1.0),
    ("memory_idle_W3", "memory per idle stream (W3)", "W3", "-", "bytes_per_stream",
     "socketio", 1.0),
    ("router_tax_W1", "router tax: CPU per delivery vs bare grpc.aio (W1, batched)", "W1",
     "batch", "cpu_us_per_delivery", "bare", 1.2),
    ("router_tax_W2", "router tax: CPU per emit vs bare grpc.aio (W2, batched)", "W2", "batch",
     "cpu_us_per_emit", "bare", 1.2),
    ("router_tax_W0", "router tax: CPU per emit vs bare grpc.aio (W0, batched)", "W0", "batch",
     "cpu_us_per_emit", "bare", 1.2),
]  # fmt: skip


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        grouped[(r["workload"], r["mode"], r["target"])].append(r)
    cells: dict[str, dict[str, Any]] = {}
    for (workload, mode, target), rs in sorted(grouped.items()):
        cell: dict[str, Any] = {
            "workload": workload,
            "mode": mode,
            "target": target,
            "runs": len(rs),
            "failed_runs": sum(not r["ok"] for r in rs),
            "errors": [r["error"] for r in rs if r["error"]],
        }
        for metric in NUMERIC:
            values = [r[metric] for r in rs if metric in r]
            if values:
                cell[metric] = statistics.median(values)
                cell[metric + "_all"] = values
        for metric in SUMMED:
            values = [r[metric] for r in rs if metric in r]
            if values:
                cell[metric] = sum(values)
        for label in LABELS:
            names = sorted({r[label] for r in rs if label in r})
            if names:
                cell[label] = " / ".join(names)
        cells[key(workload, mode, target)] = cell
    ratios: dict[str, dict[str, float | None]] = {}
    for cell in cells.values():
        if cell["target"] != "eventrouter":
            continue
        for other in ("socketio", "bare"):
            peer = cells.get(key(cell["workload"], cell["mode"], other))
            if peer is None:
                continue
            ratios[f"{cell['workload']}/{cell['mode']}/{other}"] = {
                metric: _ratio(cell.get(metric), peer.get(metric)) for metric in NUMERIC
            }
    goals = []
    for goal_id, text, workload, mode, metric, other, limit in GOALS:
        ratio = ratios.get(f"{workload}/{mode}/{other}", {}).get(metric)
        goals.append(
            {
                "id": goal_id,
                "goal": text,
                "vs": other,
                "limit": limit,
                "ratio": ratio,
                "met": None if ratio is None else ratio <= limit,
            }
        )
    return {"cells": cells, "ratios": ratios, "goals": goals}


def key(workload: str, mode: str, target: str) -> str:
    return f"{workload}/{mode}/{target}"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


# -- Markdown ----------------------------------------------------------------------


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def markdown(meta: dict[str, Any], summary: dict[str, Any], profiles: dict[str, Any]) -> str:
    cells = summary["cells"]
    lines = [
        "# eventrouter benchmark",
        "",
        f"Command: `{meta['command']}` — {meta['started_at']}, {meta['elapsed_s']:.0f} s,"
        f" {meta['reps']} round(s), medians over rounds. Machine: {meta['machine']['cpus']}"
        f" CPUs ({meta['machine']['cpu_model']}), Python {meta['machine']['python']}"
        f" (servers: {meta['machine'].get('server_python') or meta['machine']['python']})."
        " Server and load generators share these CPUs; server CPU is user+system time of"
        " the server process (all threads) from /proc, from the producer's start to the"
        " last delivery. The eventrouter runs with `--insecure` (benchmark setting).",
        "",
    ]
    for note in meta.get("notes", []):
        lines.append(f"- **Note:** {note}")
    if meta.get("notes"):
        lines.append("")
    lines += [
        "| workload | mode | target | emits/s | deliveries/s | p50 ms | p99 ms | max ms"
        " | lost | dup | misrouted | CPU µs/emit | CPU µs/delivery | peak RSS MiB |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for cell in cells.values():
        if cell["workload"] == "W3":
            continue
        failed = f" ({cell['failed_runs']} failed)" if cell["failed_runs"] else ""
        lines.append(
            f"| {cell['workload']} | {cell['mode']} | {cell['target']}{failed} "
            f"| {_f(cell.get('emits_per_s'), 0)} | {_f(cell.get('deliveries_per_s'), 0)} "
            f"| {_f(cell.get('latency_p50_ms'), 2)} | {_f(cell.get('latency_p99_ms'), 2)} "
            f"| {_f(cell.get('latency_max_ms'), 1)} | {_f(cell.get('lost'))} "
            f"| {_f(cell.get('duplicated'))} | {_f(cell.get('misrouted'))} "
            f"| {_f(cell.get('cpu_us_per_emit'), 1)} | {_f(cell.get('cpu_us_per_delivery'), 2)} "
            f"| {_f(_mib(cell.get('peak_rss_bytes')), 0)} |"
        )
    idle = [c for c in cells.values() if c["workload"] == "W3"]
    if idle:
        lines += [
            "",
            "Idle streams (W3), each on its own TCP connection; bytes per stream = RSS growth"
            " between 10% and 100% of the streams open, over the streams opened in between:",
            "",
            "| target | KiB per idle stream | peak RSS MiB |",
            "|---|--:|--:|",
        ]
        for c in idle:
            lines.append(
                f"| {c['target']} | {_f(_kib(c.get('bytes_per_stream')), 1)} "
                f"| {_f(_mib(c.get('peak_rss_bytes')), 0)} |"
            )
    w5 = [c for c in cells.values() if c["workload"] == "W5"]
    if w5:
        lines += [
            "",
            "W5 server CPU is the sum of the nodes; Redis CPU is separate: "
            + ", ".join(
                f"{c['mode']}: {_f(c.get('redis_cpu_s'), 2)} s Redis vs"
                f" {_f(c.get('server_cpu_s'), 2)} s nodes"
                f" (Redis memory {_f(c.get('redis_bytes_per_retained_update'), 0)} B"
                " per retained update)"
                for c in w5
            )
            + ".",
        ]
    lines += ["", "## Ratios (eventrouter ÷ peer, same run; < 1 = eventrouter better)", ""]
    lines += [
        "| workload | mode | vs | CPU/emit | CPU/delivery | p50 | p99 | bytes/idle stream"
        " | emits/s (> 1 better) |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for name, r in sorted(summary["ratios"].items()):
        workload, mode, other = name.split("/")
        lines.append(
            f"| {workload} | {mode} | {other} | {_f(r['cpu_us_per_emit'], 2)} "
            f"| {_f(r['cpu_us_per_delivery'], 2)} | {_f(r['latency_p50_ms'], 2)} "
            f"| {_f(r['latency_p99_ms'], 2)} | {_f(r['bytes_per_stream'], 2)} "
            f"| {_f(r['emits_per_s'], 2)} |"
        )
    lines += ["", "## Goals", "", "| goal | vs | limit | measured ratio | met |"]
    lines.append("|---|---|--:|--:|---|")
    for g in summary["goals"]:
        met = "n/a (not measured)" if g["met"] is None else ("yes" if g["met"] else "**NO**")
        lines.append(
            f"| {g['goal']} | {g['vs']} | ≤ {g['limit']:g}× | {_f(g['ratio'], 2)} | {met} |"
        )
    lines.append(
        "\nSingle unary `Emit` (mode `emit`) is reported above with no goal."
        " `emit` = one unary call per event, 64 in flight; `batch` = the client library's"
        " auto-batching (one EmitBatch in flight, the rest queued into the next), 64 emits"
        " awaited at a time; the Socket.IO producers do the same with acknowledged"
        " `emit` / `emitBatch` events."
    )
    lines += load_generator_markdown(meta, cells)
    if profiles:
        lines += profile_markdown(profiles)
    return "\n".join(lines) + "\n"


def load_generator_markdown(meta: dict[str, Any], cells: dict[str, Any]) -> list[str]:
    """One row per measured cell: the load generators' CPU next to the server's."""
    rows = [c for c in cells.values() if c["workload"] != "W3"]
    if not rows:
        return []
    cpus = meta.get("machine", {}).get("cpus")
    lines = [
        "",
        "## Load generators (CPU)",
        "",
        "Each load generator measures its own CPU (user + system, all threads: Python"
        " `time.process_time()`, Node `process.cpuUsage()`): the publisher from `go` to"
        " its `done`, the subscribers (all their processes added up) from `ready` to"
        " writing their results. Cores = CPU ÷ the run's duration (first send to last"
        " delivery), the mean cores used while measuring; server cores likewise from its"
        f" CPU above. The machine has {cpus} CPUs, shared by all of them: a total near"
        f" {cpus} cores means it was saturated.",
        "",
        "| workload | mode | target | clients | pub µs/emit | pub cores | sub µs/delivery"
        " | sub cores | server cores | total cores |",
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for c in rows:
        parts = [c.get("server_cores"), c.get("pub_cores"), c.get("sub_cores")]
        total = sum(parts) if all(p is not None for p in parts) else None
        lines.append(
            f"| {c['workload']} | {c['mode']} | {c['target']} | {_clients(c)} "
            f"| {_f(c.get('pub_cpu_us_per_emit'), 1)} | {_f(c.get('pub_cores'), 2)} "
            f"| {_f(c.get('sub_cpu_us_per_delivery'), 2)} | {_f(c.get('sub_cores'), 2)} "
            f"| {_f(c.get('server_cores'), 2)} | {_f(total, 2)} |"
        )
    return lines


def _clients(cell: dict[str, Any]) -> str:
    pub, sub = cell.get("pub_client"), cell.get("sub_client")
    if pub is None and sub is None:
        return "n/a"
    if pub == sub:
        return str(pub)
    return f"pub {pub or 'n/a'}, sub {sub or 'n/a'}"


def profile_markdown(profiles: dict[str, Any]) -> list[str]:
    lines = ["", "## Profile of the eventrouter (py-spy --native, separate runs)", ""]
    for name, prof in profiles.items():
        if name == "error":
            lines.append(f"- {prof}")
            continue
        lines += [
            f"**{name}, batched**: {prof['busy_samples']} busy samples of {prof['samples']}"
            " (idle waits left out); shares of busy samples:",
            "",
            "| by thread | % | by innermost frame | % |",
            "|---|--:|---|--:|",
        ]
        rows = max(len(prof["threads"]), len(prof["categories"]))
        for i in range(rows):
            t = prof["threads"][i] if i < len(prof["threads"]) else (None, "")
            c = prof["categories"][i] if i < len(prof["categories"]) else (None, "")
            lines.append(
                f"| {t[1]} | {_f(t[0], 1) if t[0] is not None else ''} "
                f"| {c[1]} | {_f(c[0], 1) if c[0] is not None else ''} |"
            )
        lines += ["", "| self % | function | inclusive % | eventrouter function |"]
        lines.append("|--:|---|--:|---|")
        for (s_pct, s_fn), (i_pct, i_fn) in zip(
            prof["self"][:15], prof["inclusive"][:15], strict=False
        ):
            lines.append(f"| {s_pct:.1f} | `{s_fn}` | {i_pct:.1f} | `{i_fn}` |")
        lines.append("")
    return lines


def _mib(value: float | None) -> float | None:
    return None if value is None else value / (1024 * 1024)


def _kib(value: float | None) -> float | None:
    return None if value is None else value / 1024


# -- profile -----------------------------------------------------------------------


IDLE_LEAVES = ("epoll_wait", "epoll_pwait", "poll", "ppoll", "select", "pselect", "futex",
               "cond_wait", "cond_timedwait", "nanosleep", "sem_wait", "sem_timedwait")  # fmt: skip
GC_FUNCTIONS = ("visit_decref", "visit_reachable", "subtract_refs", "move_unreachable")
ROUTER_FILES = ("server/", "core/", "broker/", "ops/", "security/")
SYSCALLS = {
    "sendmsg": "syscall sendmsg (TCP writes)",
    "send": "syscall sendmsg (TCP writes)",
    "writev": "syscall sendmsg (TCP writes)",
    "write": "syscall write (wakeup fds between event loop and grpc poller)",
    "recvmsg": "syscall recv (TCP reads)",
    "recv": "syscall recv (TCP reads)",
    "read": "syscall read",
    "getpid": "syscall getpid (asyncio get_running_loop, Python 3.11)",
}


def profile_summary(raw: str) -> dict[str, Any]:
    """Where the server's busy samples went, from py-spy's ``--format raw --native`` output.

    Samples whose innermost frame is a wait (epoll, futex, ...) are idle and
    left out; the rest are attributed by innermost frame to a category, to a
    function (self), and to every eventrouter function on the stack (inclusive).
    """
    categories: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    busy = idle = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f]
        leaf = frames[-1]
        leaf_name = leaf.split(" (", 1)[0]
        if any(word in leaf_name for word in IDLE_LEAVES):
            idle += count
            continue
        busy += count
        thread = (
            "event loop (main thread)"
            if any("_run_module_as_main" in f for f in frames)
            else "grpc completion-queue poller thread"
            if any("Thread.run" in f for f in frames)
            else "other threads"
        )
        threads[thread] += count
        categories[_category(leaf, leaf_name)] += count
        self_counts[leaf] += count
        for f in {f for f in frames if any(p in f for p in ROUTER_FILES) and "__main__" not in f}:
            incl_counts[f] += count

    def pct(counter: Counter[str], top: int = 25) -> list[tuple[float, str]]:
        return [(100.0 * n / max(1, busy), f) for f, n in counter.most_common(top)]

    return {
        "samples": busy + idle,
        "busy_samples": busy,
        "threads": pct(threads),
        "categories": pct(categories),
        "self": pct(self_counts),
        "inclusive": pct(incl_counts),
    }


def _category(leaf: str, name: str) -> str:
    if "libc.so" in leaf and name in SYSCALLS:
        return SYSCALLS[name]
    if "libc.so" in leaf and not name.startswith("0x"):
        return f"libc {name}"
    if "gc_collect" in name or "_traverse" in name or name in GC_FUNCTIONS:
        return "Python cyclic GC"
    if "cygrpc" in leaf or "libgrpc" in leaf:
        return "grpc Cython/C-core"
    if "_message" in leaf or "upb" in name or "protobuf" in leaf:
        return "protobuf (upb)"
    if any(p in leaf for p in ROUTER_FILES):
        return "eventrouter Python code"
    if "asyncio" in leaf:
        return "asyncio"
    if "libpython" in leaf or ".py)" in leaf or "<string>" in leaf:
        return "Python interpreter / stdlib"
    return "other native"


def _frame(text: str) -> str:
    """``func (path/to/module.py:123)`` -> ``func (to/module.py)``; native frames keep their lib."""
    name, _, where = text.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0] if where.rstrip(")")[-1:].isdigit() else where[:-1]
    short = "/".join(path.split("/")[-2:]) if path else ""
    return f"{name} ({short})" if short else name


# -- chart -------------------------------------------------------------------------


def chart(summary: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cells = summary["cells"]
    targets = [t for t in ("eventrouter", "bare", "socketio") if any(
        c["target"] == t for c in cells.values())]  # fmt: skip
    colors = {"eventrouter": "#2b6cb0", "bare": "#a0aec0", "socketio": "#dd6b20"}
    panels = [
        ("server CPU µs per delivery", "cpu_us_per_delivery", [("W1", "batch"), ("W1", "emit")]),
        ("server CPU µs per emit", "cpu_us_per_emit",
         [("W0", "batch"), ("W2", "batch"), ("W2", "emit"), ("W4", "batch"), ("W4", "emit")]),
        ("W4 latency ms (batched)", None, [("W4", "batch")]),
        ("KiB per idle stream (W3)", "bytes_per_stream", [("W3", "-")]),
    ]  # fmt: skip
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    for ax, (title, metric, groups) in zip(axes, panels, strict=True):
        width = 0.8 / max(1, len(targets))
        plotted = False
        if metric is None:
            labels = ["p50", "p99"]
            for i, t in enumerate(targets):
                c = cells.get(key("W4", "batch", t), {})
                values = [c.get("latency_p50_ms") or 0, c.get("latency_p99_ms") or 0]
                ax.bar([x + i * width for x in range(2)], values, width, label=t, color=colors[t])
        else:
            labels = [f"{w} {m}" if m != "-" else w for w, m in groups]
            for i, t in enumerate(targets):
                values = []
                for w, m in groups:
                    v = cells.get(key(w, m, t), {}).get(metric) or 0
                    values.append(v / 1024 if metric == "bytes_per_stream" else v)
                plotted = plotted or any(v > 0 for v in values)
                ax.bar(
                    [x + i * width for x in range(len(groups))], values, width, label=t,
                    color=colors[t],
                )  # fmt: skip
        ax.set_xticks([x + width * (len(targets) - 1) / 2 for x in range(len(labels))])
        ax.set_xticklabels(labels)
        if metric in ("cpu_us_per_delivery", "cpu_us_per_emit") and plotted:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        "eventrouter vs Socket.IO peer vs bare grpc.aio (lower is better; CPU on log scales)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- writing ---------------------------------------------------------------------


def write(
    out: Path, meta: dict[str, Any], runs: list[dict[str, Any]], profiles: dict[str, Any]
) -> list[Path]:
    summary = summarize(runs)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = out / f"bench-{stamp}"
    document = {"meta": meta, "summary": summary, "runs": runs, "profiles": profiles}
    paths = [base.with_suffix(".json"), base.with_suffix(".md")]
    paths[0].write_text(json.dumps(document, indent=1))
    paths[1].write_text(markdown(meta, summary, profiles))
    png = base.with_suffix(".png")
    if chart(summary, png):
        paths.append(png)
    else:
        meta.setdefault("notes", []).append("no PNG: matplotlib is not installed")
    for p in paths:
        shutil.copyfile(p, out / f"latest{p.suffix}")
    return paths
