"""The W5 section of the report: what a cluster costs against one node, in the same run.

For each producer mode: node CPU per emit summed over the nodes (W5n2, W5n3)
÷ single-node W2 CPU per emit (goal: at most 1.3), Redis CPU per emit
(Redis is a process of its own, measured apart) and Redis memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from report.fmt import f, ratio

GOAL = 1.3
SUBJECT = "eventrouter"


def redis_us_per_emit(cell: Mapping[str, Any]) -> float | None:
    """Redis CPU per emit: its CPU seconds over the emits the nodes' CPU/emit was taken over."""
    redis, nodes, per_emit = (
        cell.get("redis_cpu_s"),
        cell.get("server_cpu_s"),
        cell.get("cpu_us_per_emit"),
    )
    if redis is None or not nodes or per_emit is None:
        return None
    return float(redis) / float(nodes) * float(per_emit)


def cluster_section(cells: Mapping[str, dict[str, Any]]) -> list[str]:
    rows = []
    for mode in ("batch", "emit"):
        single = cells.get(f"W2/{mode}/{SUBJECT}", {}).get("cpu_us_per_emit")
        for nodes in (2, 3):
            cell = cells.get(f"W5n{nodes}/{mode}/{SUBJECT}")
            if cell is None:
                continue
            per_emit = cell.get("cpu_us_per_emit")
            r = ratio(per_emit, single)
            verdict = "n/a" if r is None else ("met" if r <= GOAL else "not met")
            rows.append(
                f"| W5n{nodes} | {mode} | {f(per_emit, 1)} | {f(single, 1)} | {f(r, 2)}"
                f" | {verdict} | {f(redis_us_per_emit(cell), 1)}"
                f" | {f(cell.get('redis_bytes_per_retained_update'), 0)} |"
            )
    if not rows:
        return []
    return [
        "",
        f"### Cluster cost (W5 ÷ single-node W2, same run; goal ≤ {GOAL}×)",
        "",
        "Node CPU is summed over the nodes; Redis CPU is its own process, per emit.",
        "",
        "| workload | mode | nodes' CPU µs/emit | W2 µs/emit | ratio | goal | Redis CPU µs/emit"
        " | Redis B/retained update |",
        "|---|---|--:|--:|--:|---|--:|--:|",
        *rows,
    ]
