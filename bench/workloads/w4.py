"""W4 light load: one user, 3 connections, emits paced at a fixed rate."""

from __future__ import annotations

from workloads.model import Conn, Emit, Sizes, Spec, Workload


def w4_light(sizes: Sizes, nodes: int = 1) -> Workload:
    rate = sizes["w4_rate"]
    conns = [Conn(0, "u0", "user"), Conn(1, "u0", "session", "s0"), Conn(2, "u0", "machine", "m0")]
    plan = [Emit(k, "u0", "u", ["all"]) for k in range(sizes.count("w4_emits"))]
    title = f"light load: 1 user x 3 connections, {rate:g} emits/s"
    return Workload("W4", title, conns, plan, rate=rate)


WORKLOADS = (
    Spec(
        "W4",
        w4_light,
        full={"w4_emits": 2_000, "w4_rate": 1_000.0},
        quick={"w4_emits": 200, "w4_rate": 1_000.0},
        scaled=("w4_emits",),
    ),
)
