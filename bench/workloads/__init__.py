"""The benchmark's workloads: one module per workload, found here by itself.

A module of this package that defines ``WORKLOADS = (Spec(...), ...)`` adds
those workloads to ``make bench`` (see model.Spec and bench/README.md, "Adding
a workload"); ``model`` says what a workload is, ``rule`` judges deliveries
by the routing rule.  Workloads run in the order of their names.
"""

from __future__ import annotations

from plugins import modules

from workloads.model import Conn, Emit, Sizes, Spec, Workload, merged_sizes
from workloads.rule import (
    CheckResult,
    StalledResult,
    accepts,
    check,
    check_stalled,
    expected_by_conn,
)

_found: list[Spec] = [
    s for m in modules(__name__, __path__, {"model", "rule"}) for s in m.WORKLOADS
]
REGISTRY: dict[str, Spec] = {s.name: s for s in sorted(_found, key=lambda s: s.name)}
FULL = merged_sizes(list(REGISTRY.values()), quick=False)
QUICK = merged_sizes(list(REGISTRY.values()), quick=True)


def build(name: str, sizes: Sizes, cluster_nodes: int = 2) -> Workload:
    return REGISTRY[name].build(sizes, cluster_nodes)


__all__ = [
    "FULL",
    "QUICK",
    "REGISTRY",
    "CheckResult",
    "Conn",
    "Emit",
    "Sizes",
    "Spec",
    "StalledResult",
    "Workload",
    "accepts",
    "build",
    "check",
    "check_stalled",
    "expected_by_conn",
    "merged_sizes",
]
