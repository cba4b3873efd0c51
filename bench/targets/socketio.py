"""The Socket.IO peer: peers/socketio/server.mjs, Happy's rule on Socket.IO 4.8, and its clients."""

from __future__ import annotations

import shutil
from pathlib import Path

from targets.base import PEERS, Options, Target

PEER = PEERS / "socketio"


class SocketIO(Target):
    name = "socketio"
    order = 2
    color = "#dd6b20"

    def available(self) -> str | None:
        if shutil.which("node") is not None and (PEER / "node_modules" / "socket.io").is_dir():
            return None
        return (
            "Socket.IO peer not run: node or bench/peers/socketio/node_modules missing"
            " (`make bench` installs it)"
        )

    def server_cmd(
        self, port: int, variants: list[str], broker: str | None, node: int, opts: Options
    ) -> list[str]:
        return ["node", str(PEER / "server.mjs"), "--port", str(port)]

    def worker_cmd(self, role: str, spec: Path, opts: Options) -> list[str]:
        # Its "sub" holds the stalled connections too ("stall" in their spec).
        return ["node", str(PEER / "client.mjs"), "pub" if role == "pub" else "sub", str(spec)]

    def client_label(self, role: str, opts: Options) -> str:
        return "node socket.io-client"


TARGET = SocketIO()
