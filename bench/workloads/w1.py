"""W1 fan-out: one user, 20 connections, every update to all of them."""

from __future__ import annotations

from workloads.model import Conn, Emit, Sizes, Spec, Workload


def w1_fanout(sizes: Sizes, nodes: int = 1) -> Workload:
    """One user, 20 connections (10 user-, 5 session-, 5 machine-scoped); default filter."""
    conns = [Conn(i, "u0", "user") for i in range(10)]
    conns += [Conn(10 + i, "u0", "session", f"s{i}") for i in range(5)]
    conns += [Conn(15 + i, "u0", "machine", f"m{i}") for i in range(5)]
    plan = [Emit(k, "u0", "u", ["all"]) for k in range(sizes.count("w1_emits"))]
    return Workload("W1", "fan-out: 1 user x 20 connections", conns, plan)


WORKLOADS = (
    Spec(
        "W1",
        w1_fanout,
        full={"w1_emits": 20_000},
        quick={"w1_emits": 300},
        scaled=("w1_emits",),
    ),
)
