"""The load generators of the gRPC targets (eventrouter, bare): Python grpcio or Node grpc-js.

``--clients python``: loadgen_sub.py / loadgen_pub.py; ``node``: both roles
peers/grpc/client.mjs; ``node-sub`` (the default): Node subscribers with the
Python publisher (the project's client library batching).  The connections that stop
reading are always loadgen_sub.py's (``"stall"`` in its spec): they do
nothing while measured, so their language does not matter.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from targets.base import BENCH, PEERS, ROOT, Options, Target

CLIENTS = ("python", "node", "node-sub")
GRPC_NODE_CLIENT = PEERS / "grpc" / "client.mjs"


def node_clients_installed() -> bool:
    """node and the root's @grpc packages (make node-deps), for --clients node / node-sub."""
    modules = ROOT / "node_modules" / "@grpc"
    return shutil.which("node") is not None and all(
        (modules / name).is_dir() for name in ("grpc-js", "proto-loader")
    )


def clients_note(clients: str) -> str | None:
    """What the results say about the gRPC targets' load generators, unless all are Python's."""
    if clients == "node":
        return (
            "gRPC targets' load generators: Node.js @grpc/grpc-js (bench/peers/grpc/client.mjs,"
            " `--clients node`) instead of loadgen_sub.py / loadgen_pub.py"
        )
    if clients == "node-sub":
        return (
            "gRPC targets' subscribers: Node.js @grpc/grpc-js (bench/peers/grpc/client.mjs,"
            " `--clients node-sub`) instead of loadgen_sub.py; the publisher is still"
            " loadgen_pub.py (the project's Python client library and its batching)"
        )
    return None


def _node(role: str, clients: str) -> bool:
    return role != "stalled" and (clients == "node" or (clients == "node-sub" and role == "sub"))


class GrpcTarget(Target):
    """A server speaking the eventrouter's .proto: the gRPC load generators serve it."""

    def worker_cmd(self, role: str, spec: Path, opts: Options) -> list[str]:
        if _node(role, opts.clients):
            return ["node", str(GRPC_NODE_CLIENT), role, str(spec)]
        script = "loadgen_pub.py" if role == "pub" else "loadgen_sub.py"
        return [sys.executable, str(BENCH / script), str(spec)]

    def client_label(self, role: str, opts: Options) -> str:
        return "node grpc-js" if _node(role, opts.clients) else "python grpcio"
