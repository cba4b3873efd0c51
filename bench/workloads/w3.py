"""W3 idle: thousands of idle streams, each on its own TCP connection; memory per stream."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from report.fmt import f, kib, mib

from workloads.model import Conn, Sizes, Spec, Workload


def w3_idle(sizes: Sizes, nodes: int = 1) -> Workload:
    """Idle streams, each on its own TCP connection: 2 user-, 2 session-, 1 machine-scoped."""
    users = sizes.count("w3_users")
    per_user = sizes.count("w3_streams") // users
    kinds = [("user", ""), ("user", ""), ("session", "s"), ("session", "t"), ("machine", "m")]
    conns: list[Conn] = []
    for u in range(users):
        for j in range(per_user):
            scope, prefix = kinds[j % len(kinds)]
            scope_id = f"{prefix}{u}" if prefix else ""
            conns.append(Conn(len(conns), f"u{u}", scope, scope_id))
    title = f"idle: {len(conns)} streams over {users} users"
    # Memory is read at 10% and at 100%: the difference over the streams opened
    # in between excludes what the first connections cost once (threads, imports).
    first = max(1, len(conns) // 10)
    return Workload("W3", title, conns, [], idle=True, stages=[first, len(conns)])


def idle_table(cells: Mapping[str, dict[str, Any]]) -> list[str]:
    idle = [c for c in cells.values() if c["workload"] == "W3"]
    if not idle:
        return []
    lines = [
        "",
        "Idle streams (W3), each on its own TCP connection; bytes per stream = RSS growth"
        " between 10% and 100% of the streams open, over the streams opened in between:",
        "",
        "| target | KiB per idle stream | peak RSS MiB |",
        "|---|--:|--:|",
    ]
    for c in idle:
        lines.append(
            f"| {c['target']} | {f(kib(c.get('bytes_per_stream')), 1)} "
            f"| {f(mib(c.get('peak_rss_bytes')), 0)} |"
        )
    return lines


WORKLOADS = (
    Spec(
        "W3",
        w3_idle,
        full={"w3_users": 1_000, "w3_streams": 5_000},
        quick={"w3_users": 20, "w3_streams": 100},
        modes=("-",),
        sub_procs=2,
        main_table=False,
        section=idle_table,
    ),
)
