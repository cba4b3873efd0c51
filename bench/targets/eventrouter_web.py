"""The eventrouter's web listener: subscribers over the Connect protocol, HTTP/1.1.

The same server as the ``eventrouter`` target with ``--web-listen`` on a
port of its own; its subscribers are peers/web/client.mjs (Connect
streaming, ``application/connect+proto``, each stream its own TCP
connection), its publisher the gRPC one the ``eventrouter`` target uses
(emits stay gRPC: the web path measured is the subscribers').  Compared with
the Socket.IO peer in the report's "Web subscribers" table (report/compare.py).
"""

from __future__ import annotations

from pathlib import Path

from common import free_port

from targets.base import PEERS, Options
from targets.eventrouter import EventRouter
from targets.grpc_clients import node_clients_installed

WEB_CLIENT = PEERS / "web" / "client.mjs"


class EventRouterWeb(EventRouter):
    name = "eventrouter-web"
    order = 3
    color = "#319795"
    clustered = False
    # Issue 16's web rows; the stalled consumers (W2s) are gRPC's and Socket.IO's.
    workloads = ("W1", "W2", "W3", "W4")

    def __init__(self) -> None:
        self._web_ports: dict[int, int] = {}

    def available(self) -> str | None:
        if node_clients_installed():  # protobufjs comes with the root's @grpc/proto-loader
            return None
        return "eventrouter-web not run: node or the root node_modules missing (make node-deps)"

    def server_cmd(
        self, port: int, variants: list[str], broker: str | None, node: int, opts: Options
    ) -> list[str]:
        web = self._web_ports[port] = free_port()
        cmd = super().server_cmd(port, variants, broker, node, opts)
        return [*cmd, "--web-listen", f"127.0.0.1:{web}"]

    def sub_addr(self, port: int) -> str:
        return f"127.0.0.1:{self._web_ports[port]}"

    def worker_cmd(self, role: str, spec: Path, opts: Options) -> list[str]:
        if role == "sub":
            return ["node", str(WEB_CLIENT), "sub", str(spec)]
        return super().worker_cmd(role, spec, opts)

    def client_label(self, role: str, opts: Options) -> str:
        return "node http/1.1 connect" if role == "sub" else super().client_label(role, opts)


TARGET = EventRouterWeb()
