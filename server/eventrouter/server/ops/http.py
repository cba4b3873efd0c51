"""A tiny HTTP/1.1 server on the router's event loop, for /metrics and the status page.

Why not prometheus_client's ``start_http_server`` (a WSGI app in a thread):
the collector walks the connection registry and reads counters that the
event loop mutates without locks; from another thread that walk can meet a
dict changing size mid-iteration.  Serving on the loop itself makes every
scrape a consistent snapshot taken between two loop steps, needs no lock on
the hot path, and adds no dependency (aiohttp is not one).  The price is
that a scrape runs on the loop: see the cost note in ``metrics``.

Only what the endpoints need is implemented: GET and HEAD, one request per
connection (``Connection: close``), bounded header size and read time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

log = logging.getLogger("eventrouter.server.ops")

MAX_HEADER_BYTES = 16 * 1024
READ_TIMEOUT_S = 10.0

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]


def text_response(status: int, text: str) -> Response:
    return Response(status, (text + "\n").encode())


class HttpServer:
    """Routes exact paths to synchronous handlers (they run on the loop, between steps)."""

    def __init__(self, routes: Mapping[str, Handler]) -> None:
        self.routes = dict(routes)
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(
            self._serve_client, host, port, limit=MAX_HEADER_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._clients):
            task.cancel()
        for task in list(self._clients):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.wait_closed()

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            response, head_only = await self._respond(reader)
            await self._send(writer, response, head_only)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[Response, bool]:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            return text_response(408, "request timeout"), False
        except asyncio.LimitOverrunError:
            return text_response(431, "request headers too large"), False
        request = _parse(head)
        if request is None:
            return text_response(400, "bad request"), False
        if request.method not in ("GET", "HEAD"):
            return (
                Response(405, b"method not allowed\n", headers={"Allow": "GET, HEAD"}),
                False,
            )
        handler = self.routes.get(request.path)
        if handler is None:
            return text_response(404, f"not found; try {', '.join(sorted(self.routes))}"), False
        try:
            return handler(request), request.method == "HEAD"
        except Exception:
            log.exception("handler of %s failed", request.path)
            return text_response(500, "internal error"), False

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, response: Response, head_only: bool) -> None:
        lines = [
            f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Cache-Control: no-store",
            "X-Content-Type-Options: nosniff",
            "Connection: close",
            *(f"{k}: {v}" for k, v in response.headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(response.body)
        await writer.drain()


def _parse(head: bytes) -> Request | None:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        return None
    request_line, *header_lines = text.split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    method, target, _version = parts
    path = target.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        return None
    headers: dict[str, str] = {}
    for line in header_lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            return None
        headers[name.strip().lower()] = value.strip()
    return Request(method, path, headers)


def split_host_port(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` too) as (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


__all__ = ["HttpServer", "Request", "Response", "split_host_port", "text_response"]
