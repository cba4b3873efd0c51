"""The eventrouter: ``python -m eventrouter.server --insecure`` (a benchmark setting).

Subscribers name their user in metadata and anyone may emit; the metrics
endpoint is off.  ``eventrouter+VARIANT[+VARIANT]`` runs variant_server.py:
the same server with candidate optimizations patched in.
"""

from __future__ import annotations

from targets.base import BENCH, Options
from targets.grpc_clients import GrpcTarget


class EventRouter(GrpcTarget):
    name = "eventrouter"
    order = 0
    color = "#2b6cb0"
    baseline = False  # the subject: the others are compared with it
    clustered = True

    def server_cmd(
        self, port: int, variants: list[str], broker: str | None, node: int, opts: Options
    ) -> list[str]:
        cmd = [opts.server_python, "-m", "eventrouter.server"]
        if variants:
            cmd = [opts.server_python, str(BENCH / "variant_server.py"), ",".join(variants)]
        cmd += [
            "--listen",
            f"127.0.0.1:{port}",
            "--insecure",
            "--metrics-listen",
            "",
            "--log-level",
            "warning",
        ]
        cmd += ["--shutdown-grace-s", "1"]
        if broker:
            cmd += ["--broker", broker, "--node-id", f"bench-node-{node}"]
        return cmd


TARGET = EventRouter()
