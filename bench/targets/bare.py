"""The bare grpc.aio ceiling: bare_server.py, the same .proto and rule and nothing else.

eventrouter ÷ bare is the router tax.  ``bare+uvloop`` runs it on uvloop's
event loop (the ceiling of a uvloop eventrouter).
"""

from __future__ import annotations

from targets.base import BENCH, Options
from targets.grpc_clients import GrpcTarget


class Bare(GrpcTarget):
    name = "bare"
    order = 1
    color = "#a0aec0"

    def server_cmd(
        self, port: int, variants: list[str], broker: str | None, node: int, opts: Options
    ) -> list[str]:
        uv = ["--uvloop"] if variants == ["uvloop"] else []
        return [opts.server_python, str(BENCH / "bare_server.py"), "--port", str(port), *uv]


TARGET = Bare()
