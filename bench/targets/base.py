"""What a target is: a server the benchmark starts, and the load generators that talk to it."""

from __future__ import annotations

import abc
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
PEERS = BENCH / "peers"

# Load generator roles: "sub" holds the subscriber connections, "pub" sends the
# plan, "stalled" holds the connections that stop reading (Workload.stalled).
ROLES = ("sub", "pub", "stalled")


@dataclass(frozen=True, slots=True)
class Options:
    """The command line's choices that shape how a target's processes are started."""

    # The gRPC targets' load generators (--clients): "node-sub", "python" or "node".
    clients: str = "node-sub"
    # The interpreter of the Python servers (--server-python).
    server_python: str = field(default_factory=lambda: sys.executable)


class Target(abc.ABC):
    """A target of the benchmark; a module registers one as ``TARGET = MyTarget()``.

    A target named ``NAME+A+B`` on the command line is ``NAME`` with the
    variants ``A`` and ``B`` (``eventrouter+gc``): its ``server_cmd`` gets them.
    """

    name: ClassVar[str]
    # Where it goes in the default --targets and the chart (lowest first).
    order: ClassVar[int]
    color: ClassVar[str]
    # The eventrouter is compared with it (ratio tables); the eventrouter is the subject.
    baseline: ClassVar[bool] = True
    # It can run as several nodes behind one Redis (W5).
    clustered: ClassVar[bool] = False
    # The workloads it runs (None: every one that does not exclude it).
    workloads: ClassVar[tuple[str, ...] | None] = None

    def available(self) -> str | None:
        """None, or a note saying why it cannot run on this machine."""
        return None

    @abc.abstractmethod
    def server_cmd(
        self, port: int, variants: list[str], broker: str | None, node: int, opts: Options
    ) -> list[str]:
        """The command of one server node listening on 127.0.0.1:``port``."""

    def sub_addr(self, port: int) -> str:
        """Where subscribers connect to the node whose ``server_cmd`` got ``port``."""
        return f"127.0.0.1:{port}"

    @abc.abstractmethod
    def worker_cmd(self, role: str, spec: Path, opts: Options) -> list[str]:
        """The command of a load generator of ``role`` reading ``spec``."""

    @abc.abstractmethod
    def client_label(self, role: str, opts: Options) -> str:
        """The load generator of ``role``, as reports name it."""
