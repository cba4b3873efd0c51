"""Runs -> cells (medians over the rounds), ratios within the run, and the goals.

Figures per (workload, mode, target) are the median over the rounds; ratios
compare the subject (the eventrouter) with each baseline (the Socket.IO peer,
the bare grpc.aio ceiling) *within the same benchmark run*, because the
machine is shared and absolute numbers drift between runs.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from report.fmt import ratio
from report.layout import Layout

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
    # Each emit's wait for its reply, as the publisher saw it.
    "emit_call_p50_ms",
    "emit_call_p99_ms",
)
LABELS = ("pub_client", "sub_client")  # which load generators ran (first run's)
SUMMED = (
    "lost",
    "lost_ephemeral",
    "duplicated",
    "misrouted",
    "producer_errors",
    "stream_errors",
    # The connections that stopped reading (W2s) and how they ended.
    "stalled_streams",
    "stalled_closed",
    "stalled_open",
    "stalled_other",
    "stalled_gaps",
    "stalled_expected",
    "stalled_received",
)

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


def key(workload: str, mode: str, target: str) -> str:
    return f"{workload}/{mode}/{target}"


def summarize(runs: list[dict[str, Any]], layout: Layout) -> dict[str, Any]:
    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        grouped[(r["workload"], r["mode"], r["target"])].append(r)
    cells: dict[str, dict[str, Any]] = {}
    for (workload, mode, target), rs in sorted(grouped.items()):
        cells[key(workload, mode, target)] = _cell(workload, mode, target, rs)
    ratios: dict[str, dict[str, float | None]] = {}
    for cell in cells.values():
        if cell["target"] != layout.subject:
            continue
        for other in layout.baselines:
            peer = cells.get(key(cell["workload"], cell["mode"], other))
            if peer is None:
                continue
            ratios[f"{cell['workload']}/{cell['mode']}/{other}"] = {
                metric: ratio(cell.get(metric), peer.get(metric)) for metric in NUMERIC
            }
    goals = []
    for goal_id, text, workload, mode, metric, other, limit in GOALS:
        measured = ratios.get(f"{workload}/{mode}/{other}", {}).get(metric)
        goals.append(
            {
                "id": goal_id,
                "goal": text,
                "vs": other,
                "limit": limit,
                "ratio": measured,
                "met": None if measured is None else measured <= limit,
            }
        )
    return {"cells": cells, "ratios": ratios, "goals": goals}


def _cell(workload: str, mode: str, target: str, rs: list[dict[str, Any]]) -> dict[str, Any]:
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
    return cell
