"""W2 many users: 3 connections per user, random users, a random mix of filters."""

from __future__ import annotations

import random
from collections.abc import Sequence

from workloads.model import FILTER_KINDS, Conn, Emit, Filter, Sizes, Spec, Workload


def three_per_user(users: int, nodes: int = 1) -> list[Conn]:
    """One user-, one session-, one machine-scoped connection per user; conn i on node i % nodes."""
    conns: list[Conn] = []
    for u in range(users):
        for scope, scope_id in (("user", ""), ("session", f"s{u}"), ("machine", f"m{u}")):
            i = len(conns)
            conns.append(Conn(i, f"u{u}", scope, scope_id, i % nodes))
    return conns


def random_plan(
    rng: random.Random, conns: Sequence[Conn], users: int, emits: int, nodes: int = 1
) -> list[Emit]:
    """Random users, a random mix of filters, 20% ephemeral, 10% skipping a connection."""
    plan: list[Emit] = []
    for k in range(emits):
        u = rng.randrange(users)
        mine = conns[3 * u : 3 * u + 3]
        kind = "e" if rng.random() < 0.2 else "u"
        fkind = rng.choice(FILTER_KINDS)
        # Mostly the user's own session/machine; sometimes one nobody watches.
        session = mine[1].scope_id if rng.random() < 0.9 else "s-nobody"
        machine = mine[2].scope_id if rng.random() < 0.9 else "m-nobody"
        flt: Filter = {
            "all": ["all"],
            "user_only": ["user_only"],
            "session": ["session", session],
            "machine_scoped": ["machine_scoped", machine],
            "machine_only": ["machine_only", machine],
        }[fkind]
        skip = rng.choice(mine).index if rng.random() < 0.1 else -1
        plan.append(Emit(k, f"u{u}", kind, flt, skip, k % nodes))
    return plan


def w2_many_users(sizes: Sizes, nodes: int = 1, seed: int = 2) -> Workload:
    users = sizes.count("w2_users")
    conns = three_per_user(users)
    plan = random_plan(random.Random(seed), conns, users, sizes.count("w2_emits"))
    title = f"many users: {users} users x 3 connections, mixed filters"
    return Workload("W2", title, conns, plan)


WORKLOADS = (
    Spec(
        "W2",
        w2_many_users,
        full={"w2_users": 1_000, "w2_emits": 20_000},
        quick={"w2_users": 40, "w2_emits": 400},
        scaled=("w2_emits",),
    ),
)
