"""Workload shapes, emit plans and the routing check, shared by every target.

A workload is a *topology* (which connections exist: user, scope, session or
machine id) and a *plan* (the emits, in order: user, update or ephemeral,
recipient filter, connection to skip).  Both are plain JSON, so the Python
load generators (eventrouter, bare gRPC) and the Node ones (Socket.IO) read
the very same files, and the check below judges every target by one rule.

The rule is written here again on purpose, from the table in
protos/eventrouter/v1/routing.proto, without importing the server: the
benchmark is an outside observer of the router.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# A recipient filter as the plan writes it: [kind] or [kind, session/machine id].
Filter = list[str]

FILTER_KINDS = ("all", "user_only", "session", "machine_scoped", "machine_only")


@dataclass(frozen=True, slots=True)
class Conn:
    """One subscriber connection of the topology."""

    index: int
    user: str
    scope: str  # "user", "session" or "machine"
    scope_id: str = ""  # the session or machine id
    node: int = 0  # which server node it connects to (W5)


@dataclass(frozen=True, slots=True)
class Emit:
    """One emit of the plan; ``k`` is its index, carried in the payload."""

    k: int
    user: str
    kind: str  # "u" update, "e" ephemeral
    filter: Filter
    skip: int = -1  # index of the connection to skip, -1 = none
    node: int = 0  # which server node receives it (W5)


@dataclass(slots=True)
class Workload:
    """A named shape: topology, plan and how the producer paces it."""

    name: str
    title: str
    conns: list[Conn]
    plan: list[Emit]
    inflight: int = 64
    rate: float = 0.0  # emits per second; 0 = as fast as ``inflight`` allows
    idle: bool = False  # W3: open, measure memory, close (no emits)
    nodes: int = 1
    stages: list[int] = field(default_factory=list)  # W3: connection counts to pause at

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "conns": [asdict(c) for c in self.conns],
            "plan": [asdict(e) for e in self.plan],
            "inflight": self.inflight,
            "rate": self.rate,
        }


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each workload is (the full run and ``--quick`` differ only here)."""

    w0_users: int = 1_000
    w0_emits: int = 20_000
    w1_emits: int = 20_000
    w2_users: int = 1_000
    w2_emits: int = 20_000
    w3_users: int = 1_000
    w3_streams: int = 5_000
    w4_emits: int = 2_000
    w4_rate: float = 1_000.0


FULL = Sizes()
QUICK = Sizes(
    w0_users=20,
    w0_emits=300,
    w1_emits=300,
    w2_users=40,
    w2_emits=400,
    w3_users=20,
    w3_streams=100,
    w4_emits=200,
)


def w0_no_recipients(sizes: Sizes, seed: int = 0) -> Workload:
    """The emit path alone: updates to users with no connection open (nothing is delivered).

    One connection of another user keeps the subscriber side of the harness
    the same as in every workload; it receives nothing.
    """
    rng = random.Random(seed)
    conns = [Conn(0, "u-watching", "user")]
    plan = [
        Emit(k, f"u{rng.randrange(sizes.w0_users)}", "u", ["all"]) for k in range(sizes.w0_emits)
    ]
    title = f"no recipients: {sizes.w0_emits} updates to {sizes.w0_users} users with no connection"
    return Workload("W0", title, conns, plan)


def w1_fanout(sizes: Sizes) -> Workload:
    """One user, 20 connections (10 user-, 5 session-, 5 machine-scoped); default filter."""
    conns = [Conn(i, "u0", "user") for i in range(10)]
    conns += [Conn(10 + i, "u0", "session", f"s{i}") for i in range(5)]
    conns += [Conn(15 + i, "u0", "machine", f"m{i}") for i in range(5)]
    plan = [Emit(k, "u0", "u", ["all"]) for k in range(sizes.w1_emits)]
    return Workload("W1", "fan-out: 1 user x 20 connections", conns, plan)


def _three_per_user(users: int, nodes: int = 1) -> list[Conn]:
    conns: list[Conn] = []
    for u in range(users):
        for scope, scope_id in (("user", ""), ("session", f"s{u}"), ("machine", f"m{u}")):
            i = len(conns)
            conns.append(Conn(i, f"u{u}", scope, scope_id, i % nodes))
    return conns


def _random_plan(
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


def w2_many_users(sizes: Sizes, seed: int = 2) -> Workload:
    conns = _three_per_user(sizes.w2_users)
    plan = _random_plan(random.Random(seed), conns, sizes.w2_users, sizes.w2_emits)
    title = f"many users: {sizes.w2_users} users x 3 connections, mixed filters"
    return Workload("W2", title, conns, plan)


def w3_idle(sizes: Sizes) -> Workload:
    """Idle streams, each on its own TCP connection: 2 user-, 2 session-, 1 machine-scoped."""
    per_user = sizes.w3_streams // sizes.w3_users
    kinds = [("user", ""), ("user", ""), ("session", "s"), ("session", "t"), ("machine", "m")]
    conns: list[Conn] = []
    for u in range(sizes.w3_users):
        for j in range(per_user):
            scope, prefix = kinds[j % len(kinds)]
            scope_id = f"{prefix}{u}" if prefix else ""
            conns.append(Conn(len(conns), f"u{u}", scope, scope_id))
    title = f"idle: {len(conns)} streams over {sizes.w3_users} users"
    # Memory is read at 10% and at 100%: the difference over the streams opened
    # in between excludes what the first connections cost once (threads, imports).
    first = max(1, len(conns) // 10)
    return Workload("W3", title, conns, [], idle=True, stages=[first, len(conns)])


def w4_light(sizes: Sizes) -> Workload:
    conns = [Conn(0, "u0", "user"), Conn(1, "u0", "session", "s0"), Conn(2, "u0", "machine", "m0")]
    plan = [Emit(k, "u0", "u", ["all"]) for k in range(sizes.w4_emits)]
    title = f"light load: 1 user x 3 connections, {sizes.w4_rate:g} emits/s"
    return Workload("W4", title, conns, plan, rate=sizes.w4_rate)


def w5_cluster(sizes: Sizes, seed: int = 5, nodes: int = 2) -> Workload:
    """W2 across nodes sharing Redis: a user's connections and emits spread over them.

    Connection i goes to node i % nodes, so with 2 nodes every user has
    connections on both, and with 3 each of a user's three is on its own node
    (the worst case: every node receives every event of the user).
    """
    conns = _three_per_user(sizes.w2_users, nodes=nodes)
    plan = _random_plan(random.Random(seed), conns, sizes.w2_users, sizes.w2_emits, nodes=nodes)
    title = f"cluster: W2 over {nodes} nodes + Redis ({sizes.w2_users} users)"
    return Workload("W5", title, conns, plan, nodes=nodes)


def build(name: str, sizes: Sizes, cluster_nodes: int = 2) -> Workload:
    if name == "W5":
        return w5_cluster(sizes, nodes=cluster_nodes)
    makers = {
        "W0": w0_no_recipients,
        "W1": w1_fanout,
        "W2": w2_many_users,
        "W3": w3_idle,
        "W4": w4_light,
    }
    return makers[name](sizes)


# -- the routing rule and the check ---------------------------------------------


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
