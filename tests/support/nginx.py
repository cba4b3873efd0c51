"""Debian's nginx in front of a web listener, configured with the README's own block.

``proxy_config`` takes the README's ``<!-- readme-config: nginx -->`` block
and changes only what a test must (its ports, its certificate, and the read
timeout where one is asked for), each change checked to apply exactly once:
a README whose block no longer reads as the tests expect fails them, and so
does one whose nginx config does not work.  ``running_nginx`` runs nginx as
the current user, in the foreground, with its pid file, logs and temporary
files in a folder of the test's, and stops it by its PID.  The access log
records each request's protocol (``HTTP/2.0``) as nginx saw it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import require_tool
from tests.e2e.client_helpers import free_port, wait_listening
from tests.support.readme import configs

NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
STOP_TIMEOUT_S = 10.0
_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def require_nginx() -> str:
    require_tool(Path(NGINX).is_file(), f"nginx at {NGINX} (make nginx-deps)")
    return NGINX


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


def proxy_config(
    upstream_port: int, listen_port: int, tls: Certificate, read_timeout: str | None = None
) -> str:
    """The README's nginx block, serving on ``listen_port`` and proxying to ``upstream_port``."""
    changes = {
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{upstream_port};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{listen_port} ssl http2;",
        "/etc/ssl/certs/router.example.com.pem": str(tls.cert),
        "/etc/ssl/private/router.example.com.key": str(tls.key),
    }
    if read_timeout is not None:
        changes["proxy_read_timeout 1h;"] = f"proxy_read_timeout {read_timeout};"
    return _changed(configs()["nginx"], changes)


def _changed(text: str, changes: Mapping[str, str]) -> str:
    for old, new in changes.items():
        assert text.count(old) == 1, f"the README's nginx block has not exactly one {old!r}"
        text = text.replace(old, new)
    return text


def _main_config(folder: Path, servers: str) -> str:
    temp = "\n".join(f"    {name}_temp_path {folder / name};" for name in _TEMP_PATHS)
    # As root, nginx would hand its workers to `nobody`; keep them the test's.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}daemon off;
worker_processes 1;
# A graceful stop (SIGQUIT) waits this long at most for open streams.
worker_shutdown_timeout 2s;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} info;
events {{
    worker_connections 256;
}}
http {{
    log_format protocol '$server_protocol $request_method $uri $status';
    access_log {folder / "access.log"} protocol;
{temp}
{servers}
}}
"""


@dataclass(frozen=True)
class Nginx:
    port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def access_log(self) -> list[str]:
        """One line per finished request: protocol, method, path, status."""
        return (self.folder / "access.log").read_text().splitlines()

    def error_log(self) -> str:
        return (self.folder / "error.log").read_text()


@contextlib.contextmanager
def running_nginx(
    folder: Path, upstream_port: int, tls: Certificate, read_timeout: str | None = None
) -> Iterator[Nginx]:
    """nginx with the README's block in front of 127.0.0.1:``upstream_port``, until exit."""
    binary = require_nginx()
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(_main_config(folder, proxy_config(upstream_port, port, tls, read_timeout)))
    command = [binary, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")]
    checked = subprocess.run(
        [*command, "-t", "-q"], capture_output=True, text=True, timeout=30, check=False
    )
    assert checked.returncode == 0, f"nginx -t refused the config:\n{checked.stderr}"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    nginx = Nginx(port, folder)

    def alive() -> None:
        if process.poll() is not None:
            raise AssertionError(f"nginx exited {process.returncode}:\n{nginx.error_log()}")

    try:
        wait_listening(port, alive=alive)
        yield nginx
    finally:
        # SIGQUIT: the graceful stop, so that the access log has every line.
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
