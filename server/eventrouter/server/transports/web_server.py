"""The web listener's HTTP server: uvicorn (httptools, the node's event loop), in process.

uvicorn was chosen after measuring the three candidates the team named for
this job (issue 16): per streamed message, uvicorn with httptools 17 µs of
server CPU, granian 18 µs, hypercorn 33 µs; per idle stream 15.5 KB, 18.5 KB
and 23.8 KB, against about 44 KB for a grpc.aio stream.  uvicorn also runs
inside an existing asyncio loop, which is what "same process, same loop as
the gRPC server" needs; granian runs its own.  It speaks HTTP/1.1 (and TLS
with the node's certificate); HTTP/2 for browsers comes from the
TLS-terminating proxy in front (README: "Browsers and mobile apps").

The socket is bound here, so a busy address stops the start with the one
line every listener gives (``ListenError``), and port 0 works.  A worker of
``--workers N`` binds it with SO_REUSEPORT, sharing the port with the others.
"""

from __future__ import annotations

import logging
import socket
import ssl

import uvicorn

from eventrouter.server.binding import listen_error
from eventrouter.server.ops.http import split_host_port
from eventrouter.server.transports.web import WebApp

log = logging.getLogger("eventrouter.server.web")

# Streams a node holds are long-lived: the kernel's queue of connections not
# yet accepted must take a reconnect storm (uvicorn's default is 2,048).
BACKLOG = 8192


class _CutOffStreams(logging.Filter):
    """uvicorn reports a response the app left unfinished as an error.

    The app does that on purpose, and only then, for a stream it cut off
    (too slow) whose peer stopped reading: the connection is closed, the
    client resumes.  Not an error worth a line per slow phone.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing response."


class WebListener:
    """Serves a ``WebApp`` on ``address`` until ``stop()``."""

    def __init__(
        self,
        app: WebApp,
        address: str,
        *,
        tls: ssl.SSLContext | None = None,
        shutdown_grace_s: float = 10.0,
        idle_timeout_s: float = 75.0,
        shared: bool = False,
    ) -> None:
        self.app = app
        self.address = address
        # A worker's: the port is shared with the other workers (SO_REUSEPORT).
        self.shared = shared
        self.port = 0
        self._tls = tls
        self._socket: socket.socket | None = None
        self._config = uvicorn.Config(
            app,
            http="httptools",
            lifespan="off",
            # The node configures logging; uvicorn must not replace it.
            log_config=None,
            access_log=False,
            server_header=False,
            # The app reads no client address (credentials come in headers and
            # the TLS peer): rewriting it from X-Forwarded-For would be a
            # middleware call per request and a frame kept per open stream.
            proxy_headers=False,
            date_header=False,
            backlog=BACKLOG,
            timeout_keep_alive=int(idle_timeout_s),
            timeout_graceful_shutdown=int(shutdown_grace_s) or 1,
        )
        self._server = uvicorn.Server(self._config)

    async def start(self) -> int:
        """Bind and serve; returns the bound port (raises ``ListenError``)."""
        self._socket = sock = _bind(self.address, self.shared)
        self.port = sock.getsockname()[1]
        config = self._config
        config.load()
        # Set after load(), which would otherwise build a context from files.
        config.ssl = self._tls
        logging.getLogger("uvicorn.error").addFilter(_CutOffStreams())
        # What Server.serve() sets up before startup(); serve() itself would
        # also take over the process's signals, which belong to the node.
        self._server.lifespan = config.lifespan_class(config)
        await self._server.startup(sockets=[sock])
        return self.port

    async def stop(self) -> None:
        """Close the listener and wait (up to the grace) for responses to finish."""
        if self._socket is None:
            return
        sock, self._socket = self._socket, None
        await self._server.shutdown(sockets=[sock])


def _bind(address: str, shared: bool) -> socket.socket:
    what, flag = "the web listener (Connect, gRPC-Web)", "--web-listen"
    host, port = split_host_port(address)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise listen_error(address, what, flag, f"cannot resolve {host!r}: {e.strerror}") from None
    family, kind, proto, _name, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise listen_error(address, what, flag, e) from None
    return sock


__all__ = ["WebListener"]
