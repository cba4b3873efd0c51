"""W2s stalled consumers, and W2p, the same traffic with nobody stalled: what stalls cost others.

W2s is W2 (same users, connections and emits) where 1% of the connections
stop reading once open: the machine-scoped connection of as many users,
held by a subscriber process of their own that never reads them (driver.py,
loadgen_sub.py; paused sockets for Socket.IO).  So that the server meets
real flow-control back-pressure, each of those connections is also sent
``w2s_pads_per_stalled`` updates of ``w2s_pad_bytes`` (``machine_only`` its
machine: no one else gets them), spread over the run: 40 × 256 KiB = 10 MiB
each, more than the client's HTTP/2 window (64 KiB: see loadgen_sub.py), the
write the server has handed to gRPC (at most 1 MiB) and the eventrouter's
default queue limit (8 MiB, over which a queue may stay for
``queue_overflow_grace_ms``) together.  Each padded update costs 1.1-1.4 ms
of server CPU (the bare server's alike: gRPC receiving 256 KiB), so the
padding is kept to what closing the stalled streams takes.

W2p sends the very same plan with those padded updates addressed to a
machine nobody watches, and nobody stalls: the same emits and bytes through
the emit path, no stalled reader.  W2s ÷ W2p is then what the stalled
connections cost everyone else: the prompt subscribers' delivery latency
and the emitters' Emit / EmitBatch call latency, in the same run; W2s ÷ W2
adds what the padded traffic itself costs.  The section below the main
table reports both, and how the stalled streams ended: closed by the server
as too slow (RESOURCE_EXHAUSTED), still open, or otherwise (a failure), and
whether any got an update after missing one (a gap: a failure).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import Any

from report.fmt import f, mib, ratio
from report.summary import key

from workloads.model import Emit, Sizes, Spec, Workload
from workloads.w2 import random_plan, three_per_user

# (label, metric, digits) of the comparison table.
FIGURES = (
    ("prompt subscribers' delivery p50 ms", "latency_p50_ms", 2),
    ("prompt subscribers' delivery p99 ms", "latency_p99_ms", 2),
    ("emit call p50 ms", "emit_call_p50_ms", 2),
    ("emit call p99 ms", "emit_call_p99_ms", 2),
    ("server CPU µs/emit", "cpu_us_per_emit", 1),
    # W2p's includes the padded updates the history keeps; W2s's the stalled queues too.
    ("server peak RSS MiB", "peak_rss_mib", 0),
)


def with_stalls(sizes: Sizes, stall: bool, seed: int = 2) -> Workload:
    users = sizes.count("w2_users")
    conns = three_per_user(users)
    # W2's plan, emit for emit (same seed), with the padded updates spread over it.
    base = random_plan(random.Random(seed), conns, users, sizes.count("w2_emits"))
    count = min(users, max(1, round(sizes["w2s_stalled_share"] * len(conns))))
    chosen = sorted(random.Random(seed + 1).sample(range(users), count))
    stalled = [conns[3 * u + 2].index for u in chosen]  # their machine-scoped connections
    pad, per = sizes.count("w2s_pad_bytes"), sizes.count("w2s_pads_per_stalled")
    padded = [
        Emit(0, f"u{u}", "u", ["machine_only", f"m{u}" if stall else "m-nobody"], pad=pad)
        for _ in range(per)
        for u in chosen  # round robin: every stalled connection fills up over the run
    ]
    plan: list[Emit] = []
    for j, e in enumerate(padded):
        plan += base[len(plan) - j : j * len(base) // len(padded)]
        plan.append(e)
    plan += base[len(plan) - len(padded) :]
    plan = [dataclasses.replace(e, k=k) for k, e in enumerate(plan)]
    traffic = f"{len(padded)} updates of {pad // 1024} KiB"
    if stall:
        title = (
            f"stalled consumers: W2 with {count} of {len(conns)} connections not reading;"
            f" {traffic} to them"
        )
        return Workload("W2s", title, conns, plan, stalled=stalled)
    title = f"W2 + {traffic} to a machine nobody watches (W2s with nobody stalled)"
    return Workload("W2p", title, conns, plan)


def w2s_stalled(sizes: Sizes, nodes: int = 1) -> Workload:
    return with_stalls(sizes, stall=True)


def w2p_padded(sizes: Sizes, nodes: int = 1) -> Workload:
    return with_stalls(sizes, stall=False)


def _figure(cell: Mapping[str, Any], metric: str) -> float | None:
    if metric == "peak_rss_mib":
        return mib(cell.get("peak_rss_bytes"))
    value = cell.get(metric)
    return None if value is None else float(value)


def stall_section(cells: Mapping[str, dict[str, Any]]) -> list[str]:
    runs = [c for c in cells.values() if c["workload"] == "W2s"]
    if not runs:
        return []
    lines = [
        "",
        "Stalled consumers (W2s): 1% of W2's connections stop reading once open, and big"
        " updates to them make the server meet flow control; W2p = the same emits with"
        " those updates to a machine nobody watches and nobody stalled. Prompt"
        " subscribers = every connection but the stalled ones; emit call = each emit's"
        " wait for its reply (unary `Emit`, or the client's batching and its `EmitBatch`);"
        " peak RSS: W2p's holds the padded updates the eventrouter's history keeps, W2s's"
        " what is kept for the stalled connections too:",
        "",
        "| mode | target | figure | W2 | W2p | W2s | W2s ÷ W2p | W2s ÷ W2 |",
        "|---|---|---|--:|--:|--:|--:|--:|",
    ]
    for c in runs:
        row = [cells.get(key(w, c["mode"], c["target"]), {}) for w in ("W2", "W2p", "W2s")]
        for label, metric, digits in FIGURES:
            plain, padded, stalled = (_figure(cell, metric) for cell in row)
            lines.append(
                f"| {c['mode']} | {c['target']} | {label} | {f(plain, digits)} "
                f"| {f(padded, digits)} | {f(stalled, digits)} "
                f"| {f(ratio(stalled, padded), 2)} | {f(ratio(stalled, plain), 2)} |"
            )
    lines += [
        "",
        "How the stalled streams ended (all rounds added up): closed by the server as too"
        " slow (RESOURCE_EXHAUSTED), still open at the end (then read to the end), or"
        " otherwise; a gap is a stream that got an update after missing one:",
        "",
        "| mode | target | stalled streams | closed too slow | still open | otherwise | gaps"
        " | events got / routed to them |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for c in runs:
        lines.append(
            f"| {c['mode']} | {c['target']} | {f(c.get('stalled_streams'))} "
            f"| {f(c.get('stalled_closed'))} | {f(c.get('stalled_open'))} "
            f"| {f(c.get('stalled_other'))} | {f(c.get('stalled_gaps'))} "
            f"| {f(c.get('stalled_received'))} / {f(c.get('stalled_expected'))} |"
        )
    return lines


# Sizes: W2's (w2_users, w2_emits) and these; the padding is sized for the
# queue limits, not for the load, so --scale leaves it alone.
SIZES = {"w2s_stalled_share": 0.01, "w2s_pad_bytes": 256 * 1024, "w2s_pads_per_stalled": 40}
# The eventrouter, and the Socket.IO peer for comparison; the bare ceiling has
# no slow-consumer handling to measure.
TARGETS = ("eventrouter", "socketio")
WORKLOADS = (
    Spec("W2p", w2p_padded, full={}, quick={}, targets=TARGETS),
    Spec(
        "W2s",
        w2s_stalled,
        full=SIZES,
        # 40 users, 120 connections: 2 stalled.
        quick={**SIZES, "w2s_stalled_share": 0.02},
        targets=TARGETS,
        section=stall_section,
    ),
)
