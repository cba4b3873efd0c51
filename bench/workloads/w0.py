"""W0 no recipients: the emit path alone (validation, idempotency, history, the reply)."""

from __future__ import annotations

import random

from workloads.model import Conn, Emit, Sizes, Spec, Workload


def w0_no_recipients(sizes: Sizes, nodes: int = 1, seed: int = 0) -> Workload:
    """Updates to users with no connection open (nothing is delivered).

    One connection of another user keeps the subscriber side of the harness
    the same as in every workload; it receives nothing.
    """
    rng = random.Random(seed)
    users, emits = sizes.count("w0_users"), sizes.count("w0_emits")
    conns = [Conn(0, "u-watching", "user")]
    plan = [Emit(k, f"u{rng.randrange(users)}", "u", ["all"]) for k in range(emits)]
    title = f"no recipients: {emits} updates to {users} users with no connection"
    return Workload("W0", title, conns, plan)


WORKLOADS = (
    Spec(
        "W0",
        w0_no_recipients,
        full={"w0_users": 1_000, "w0_emits": 20_000},
        quick={"w0_users": 20, "w0_emits": 300},
        scaled=("w0_emits",),
    ),
)
