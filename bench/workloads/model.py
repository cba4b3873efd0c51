"""What a workload is: a topology, a plan, and how the harness runs it.

A workload is a *topology* (which connections exist: user, scope, session or
machine id) and a *plan* (the emits, in order: user, update or ephemeral,
recipient filter, connection to skip).  Both are plain JSON, so the Python
load generators (eventrouter, bare gRPC) and the Node ones (Socket.IO, grpc-js)
read the very same files, and one rule (rule.py) judges every target.

A ``Spec`` is how a workload module registers a workload with the harness:
its name, its sizes (full and ``--quick``), how to build it, which producer
modes and targets it runs with, and what it adds to the report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from report.layout import Section

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
    pad: int = 0  # an update whose ciphertext is this many bytes instead of 200 (W2s)


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
    # Connections (indexes) that stop reading once open, in a subscriber process
    # of their own (W2s); the others are the prompt ones the run is judged by.
    stalled: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "conns": [asdict(c) for c in self.conns],
            "plan": [asdict(e) for e in self.plan],
            "inflight": self.inflight,
            "rate": self.rate,
        }


class Sizes(dict[str, float]):
    """How big the workloads are, by key (``w2_users``, ``w2_emits``, ...).

    Each workload module declares its own keys, full and ``--quick``; the
    full run and the quick one differ only here.  A workload may read
    another's keys (W5 is W2's shape over several nodes).
    """

    def count(self, key: str) -> int:
        return int(self[key])


def no_requirement() -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class Spec:
    """A workload as the harness knows it; a module registers it as ``WORKLOADS = (Spec(...),)``."""

    name: str
    # Builds the workload from the sizes and the node count (``--cluster-nodes``, W5).
    build: Callable[[Sizes, int], Workload]
    full: Mapping[str, float]
    quick: Mapping[str, float]
    # Size keys that are emit counts: ``--scale`` multiplies them.
    scaled: tuple[str, ...] = ()
    # Producer modes it runs with; ("-",): none (nothing is emitted, W3).
    modes: tuple[str, ...] | None = None
    # Only targets that run as several nodes behind Redis (W5).
    needs_cluster: bool = False
    # Only these targets (their variants too), or all.
    targets: tuple[str, ...] | None = None
    # Why it cannot run on this machine (a missing program), or None.
    requires: Callable[[], str | None] = no_requirement
    # Subscriber processes the connections are spread over.
    sub_procs: int = 1
    # Its rows belong in the main table and the load generators' table (W3's do not).
    main_table: bool = True
    # What it adds to the report below the main table.
    section: Section | None = None


def merged_sizes(specs: Sequence[Spec], quick: bool, scale: float = 1.0) -> Sizes:
    """Every workload's sizes in one mapping, emit counts multiplied by ``scale``."""
    sizes = Sizes()
    for spec in specs:
        sizes.update(spec.quick if quick else spec.full)
    if scale != 1.0:
        for spec in specs:
            for key in spec.scaled:
                sizes[key] = int(sizes[key] * scale)
    return sizes
