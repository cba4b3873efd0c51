"""W5 cluster: W2 over 2 nodes (W5n2) and 3 nodes (W5n3) sharing a fresh redis-server.

The report's section (report/cluster.py) sets each beside single-node W2 of the same run.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable

from report.cluster import cluster_section

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
    return Workload(f"W5n{nodes}", title, conns, plan, nodes=nodes)


def _fixed(nodes: int) -> Callable[[Sizes, int], Workload]:
    """W5 over ``nodes`` nodes, whatever ``--cluster-nodes`` says (both counts run in one run)."""

    def build(sizes: Sizes, _cluster_nodes: int = nodes) -> Workload:
        return w5_cluster(sizes, nodes)

    return build


def redis_missing() -> str | None:
    return None if shutil.which("redis-server") else "redis-server is not installed"


# Sizes: W2's (w2_users, w2_emits).
WORKLOADS = tuple(
    Spec(
        f"W5n{nodes}",
        _fixed(nodes),
        full={},
        quick={},
        needs_cluster=True,
        requires=redis_missing,
        section=cluster_section if nodes == 2 else None,
    )
    for nodes in (2, 3)
)
