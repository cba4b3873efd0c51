"""W5 cluster: W2 over several eventrouter nodes sharing a fresh redis-server."""

from __future__ import annotations

import random
import shutil
from collections.abc import Mapping
from typing import Any

from report.fmt import f

from workloads.model import Sizes, Spec, Workload
from workloads.w2 import random_plan, three_per_user


def w5_cluster(sizes: Sizes, nodes: int = 2, seed: int = 5) -> Workload:
    """W2 across nodes sharing Redis: a user's connections and emits spread over them.

    Connection i goes to node i % nodes, so with 2 nodes every user has
    connections on both, and with 3 each of a user's three is on its own node
    (the worst case: every node receives every event of the user).
    """
    users = sizes.count("w2_users")
    conns = three_per_user(users, nodes=nodes)
    plan = random_plan(random.Random(seed), conns, users, sizes.count("w2_emits"), nodes=nodes)
    title = f"cluster: W2 over {nodes} nodes + Redis ({users} users)"
    return Workload("W5", title, conns, plan, nodes=nodes)


def redis_missing() -> str | None:
    return None if shutil.which("redis-server") else "redis-server is not installed"


def redis_note(cells: Mapping[str, dict[str, Any]]) -> list[str]:
    w5 = [c for c in cells.values() if c["workload"] == "W5"]
    if not w5:
        return []
    return [
        "",
        "W5 server CPU is the sum of the nodes; Redis CPU is separate: "
        + ", ".join(
            f"{c['mode']}: {f(c.get('redis_cpu_s'), 2)} s Redis vs"
            f" {f(c.get('server_cpu_s'), 2)} s nodes"
            f" (Redis memory {f(c.get('redis_bytes_per_retained_update'), 0)} B"
            " per retained update)"
            for c in w5
        )
        + ".",
    ]


# Sizes: W2's (w2_users, w2_emits).
WORKLOADS = (
    Spec(
        "W5",
        w5_cluster,
        full={},
        quick={},
        needs_cluster=True,
        requires=redis_missing,
        section=redis_note,
    ),
)
