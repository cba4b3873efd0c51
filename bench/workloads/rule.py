"""The routing rule and the check every target is judged by.

The rule is written here again on purpose, from the table in
protos/eventrouter/v1/routing.proto, without importing the server: the
benchmark is an outside observer of the router.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

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


def check(
    workload: Workload, received: Sequence[Sequence[int]], skip: Collection[int] = ()
) -> CheckResult:
    """Compare what each connection (but those in ``skip``) received with what the rule says."""
    expected = expected_by_conn(workload)
    kinds = {e.k: e.kind for e in workload.plan}
    result = CheckResult()
    for index, (want, got) in enumerate(zip(expected, received, strict=True)):
        if index in skip:
            continue
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


@dataclass(slots=True)
class StalledResult:
    """How the connections that stopped reading ended, and whether what they got was sound."""

    streams: int = 0
    closed: int = 0  # ended RESOURCE_EXHAUSTED: the server closed it as too slow
    open: int = 0  # still open at the end (then read to the end)
    other: int = 0  # ended any other way
    gaps: int = 0  # streams that got an update after missing one, or anything twice or not theirs
    expected: int = 0
    received: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.other == 0 and self.gaps == 0


def check_stalled(
    workload: Workload, received: Mapping[int, Sequence[int]], ends: Mapping[int, str]
) -> StalledResult:
    """Judge the stalled connections by what they got once read at last, and how they ended.

    ``ends``: "" for a stream still open, else the status it ended with
    (``RESOURCE_EXHAUSTED: ...``).  A stalled stream may lose ephemerals (the
    router drops them for a full queue) and, once closed, everything after
    its last delivery; what it got must still be its own, once each, in
    order, its updates a prefix of what the rule calls for: all of them if
    it is still open.
    """
    expected = expected_by_conn(workload)
    kinds = {e.k: e.kind for e in workload.plan}
    result = StalledResult()
    for index in workload.stalled:
        want, got, end = expected[index], list(received[index]), ends[index]
        result.streams += 1
        result.expected += len(want)
        result.received += len(got)
        if not end:
            result.open += 1
        elif end.startswith("RESOURCE_EXHAUSTED"):
            result.closed += 1
        else:
            result.other += 1
            result.problems.append(f"conn {index} ended {end}")
        want_updates = [k for k in want if kinds[k] == "u"]
        got_updates = [k for k in got if kinds.get(k) == "u"]
        sound = set(got) <= set(want) and got == sorted(set(got))
        if not end:
            sound = sound and got_updates == want_updates
        if not sound or got_updates != want_updates[: len(got_updates)]:
            result.gaps += 1
            result.problems.append(
                f"conn {index}: got {len(got_updates)} of {len(want_updates)} updates, not"
                " in order, not theirs or with a gap"
            )
    return result
