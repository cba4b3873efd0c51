"""The routing rule and the check every target is judged by.

The rule is written here again on purpose, from the table in
protos/eventrouter/v1/routing.proto, without importing the server: the
benchmark is an outside observer of the router.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from workloads.model import Conn, Filter, Workload


def accepts(flt: Filter, conn: Conn) -> bool:
    """Whether a connection receives an emit with this filter (skip aside)."""
    kind = flt[0]
    if kind == "all":
        return True
    if kind == "user_only":
        return conn.scope == "user"
    if kind == "session":
        return conn.scope == "user" or (conn.scope == "session" and conn.scope_id == flt[1])
    if kind == "machine_scoped":
        return conn.scope == "user" or (conn.scope == "machine" and conn.scope_id == flt[1])
    if kind == "machine_only":
        return conn.scope == "machine" and conn.scope_id == flt[1]
    raise ValueError(f"unknown filter {flt!r}")


def expected_by_conn(workload: Workload) -> list[list[int]]:
    """For each connection, the emit indexes it must receive, in emit order."""
    by_user: dict[str, list[Conn]] = {}
    for c in workload.conns:
        by_user.setdefault(c.user, []).append(c)
    expected: list[list[int]] = [[] for _ in workload.conns]
    for e in workload.plan:
        for c in by_user.get(e.user, ()):
            if c.index != e.skip and accepts(e.filter, c):
                expected[c.index].append(e.k)
    return expected


@dataclass(slots=True)
class CheckResult:
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    misrouted: int = 0  # received by a connection the rule excludes
    lost_ephemeral: int = 0  # of ``lost``: ephemerals (the router may drop them by design)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.misrouted == 0


def check(workload: Workload, received: Sequence[Sequence[int]]) -> CheckResult:
    """Compare what each connection received with what the rule says it must."""
    expected = expected_by_conn(workload)
    kinds = {e.k: e.kind for e in workload.plan}
    result = CheckResult()
    for want, got in zip(expected, received, strict=True):
        result.expected += len(want)
        result.delivered += len(got)
        counts = Counter(got)
        want_set = set(want)
        for k, n in counts.items():
            if k in want_set:
                result.duplicated += n - 1
            else:
                result.misrouted += n
        for k in want:
            if k not in counts:
                result.lost += 1
                if kinds[k] == "e":
                    result.lost_ephemeral += 1
    return result
