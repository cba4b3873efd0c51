"""The web adapter: ``eventrouter.v1.EventRouterService`` over Connect and gRPC-Web, as ASGI.

Browsers and React Native cannot speak native gRPC; they speak the Connect
protocol (binary or JSON) or gRPC-Web over plain HTTP/1.1 or HTTP/2.  This
app serves the same five methods through the same ``Handlers`` as the
grpc.aio adapter: one router, one broker, one set of credentials, limits
and counters.  Like that adapter it only translates: HTTP requests into
``CallInfo`` + request messages, ``Refused`` into each protocol's error,
and a ``SubscribeStream``'s frames into enveloped response chunks (the
frames' bytes as they are; JSON once per event, see web_protocol.py).

A client that goes away is noticed through ASGI's ``http.disconnect`` (the
server stops writing to it silently otherwise), which ends its stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from eventrouter.server.handlers import SERVICE_NAME, CallInfo, Code, Handlers, Refused
from eventrouter.server.handlers.subscribe import SubscribeStream
from eventrouter.server.transports.cors import CorsPolicy
from eventrouter.server.transports.web_protocol import (
    HTTP_STATUS,
    Framing,
    Protocol,
    TooLarge,
    UnsupportedEncoding,
    connect_end,
    decompress,
    envelope,
    envelope_prefix,
    error_json,
    framing_of,
    grpc_web_trailers,
    open_envelope,
    parse_request,
    response_json,
    serialize,
)
from eventrouter.v1 import router_service_pb2 as pb

log = logging.getLogger("eventrouter.server.web")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

# How long the end of a stream the server cut off may wait for a peer that
# stopped reading, before the connection is simply closed.
END_WRITE_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class _Method:
    request: type[Message]
    handler: Callable[[Any, CallInfo], Awaitable[Message]] | None  # None: Subscribe


class WebApp:
    """The ASGI application of the web listener."""

    def __init__(
        self,
        handlers: Handlers,
        cors: CorsPolicy,
        *,
        max_request_bytes: int,
        heartbeat_default_ms: int,
    ) -> None:
        self.handlers = handlers
        self.cors = cors
        self.max_request_bytes = max_request_bytes
        self.heartbeat_default_ms = heartbeat_default_ms
        prefix = f"/{SERVICE_NAME}/"
        self._methods = {
            prefix + "Subscribe": _Method(pb.SubscribeRequest, None),
            prefix + "Emit": _Method(pb.EmitRequest, handlers.emits.emit),
            prefix + "EmitBatch": _Method(pb.EmitBatchRequest, handlers.emits.emit_batch),
            prefix + "GetConnections": _Method(
                pb.GetConnectionsRequest, handlers.admin.get_connections
            ),
            prefix + "Disconnect": _Method(pb.DisconnectRequest, handlers.admin.disconnect),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers: Headers = scope["headers"]
        origin = _header(headers, b"origin")
        extra: Headers = []
        if origin is not None:
            if not self.cors.allows(origin):
                await _plain(send, 403, f"origin {origin} is not allowed (--web-cors-origins)")
                return
            extra = self.cors.response_headers(origin)
        if scope["method"] == "OPTIONS":
            await self._preflight(send, headers, origin)
            return
        method = self._methods.get(scope["path"])
        if method is None:
            await _plain(send, 404, "no such method", extra)
            return
        if scope["method"] != "POST":
            await _plain(send, 405, "use POST", [*extra, (b"allow", b"POST")])
            return
        framing = framing_of(_header(headers, b"content-type") or "", method.handler is None)
        if framing is None:
            await _plain(send, 415, "unsupported content type for this method", extra)
            return
        try:
            request = await self._read_request(receive, headers, framing, method.request)
        except TooLarge:
            refusal = Refused(
                Code.RESOURCE_EXHAUSTED, f"request: larger than {self.max_request_bytes} bytes"
            )
            await _refuse(send, framing, refusal, extra)
            return
        except UnsupportedEncoding as e:
            await _refuse(send, framing, Refused(Code.UNIMPLEMENTED, f"request: {e}"), extra)
            return
        except ValueError as e:
            await _refuse(send, framing, Refused(Code.INVALID_ARGUMENT, f"request: {e}"), extra)
            return
        call = CallInfo([(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers])
        if method.handler is not None:
            await self._unary(method.handler, request, call, framing, send, extra)
            return
        assert isinstance(request, pb.SubscribeRequest)
        stream = await self._open(request, call, framing, send, extra)
        # An open stream keeps this frame for its lifetime: not the request's
        # decoded headers and message, which nothing needs any more.
        del call, request
        if stream is not None:
            await self._stream(stream, framing, receive, send, extra)

    async def _read_request(
        self, receive: Receive, headers: Headers, framing: Framing, kind: type[Message]
    ) -> Message:
        limit = self.max_request_bytes
        body = await _read_body(receive, limit)
        if framing.enveloped:
            name = (
                b"grpc-encoding"
                if framing.protocol is Protocol.GRPC_WEB
                else (b"connect-content-encoding")
            )
            data = open_envelope(body, _header(headers, name), limit)
        else:
            encoding = _header(headers, b"content-encoding")
            data = body if encoding in (None, "identity") else decompress(body, encoding, limit)
        return parse_request(data, kind, framing.json)

    async def _preflight(self, send: Send, headers: Headers, origin: str | None) -> None:
        requested = _header(headers, b"access-control-request-method")
        if origin is None or requested is None:
            await _plain(send, 405, "use POST", [(b"allow", b"POST")])
            return
        answer = self.cors.preflight_headers(
            origin, _header(headers, b"access-control-request-headers") or ""
        )
        if answer is None or requested.upper() != "POST":
            await _plain(send, 403, "preflight asks for a method or header not allowed")
            return
        await send({"type": "http.response.start", "status": 204, "headers": answer})
        await send({"type": "http.response.body", "body": b""})

    async def _unary(
        self,
        handler: Callable[[Any, CallInfo], Awaitable[Message]],
        request: Message,
        call: CallInfo,
        framing: Framing,
        send: Send,
        extra: Headers,
    ) -> None:
        try:
            response = await handler(request, call)
        except Refused as refusal:
            await _refuse(send, framing, refusal, extra)
            return
        data = serialize(response, framing.json)
        if framing.protocol is Protocol.GRPC_WEB:
            data = envelope(data) + grpc_web_trailers()
        await _respond(send, 200, framing.content_type, data, extra)

    async def _open(
        self,
        request: pb.SubscribeRequest,
        call: CallInfo,
        framing: Framing,
        send: Send,
        extra: Headers,
    ) -> SubscribeStream | None:
        """The stream, or None once its refusal is sent."""
        try:
            return await self.handlers.subscriptions.open(
                request, call, heartbeat_default_ms=self.heartbeat_default_ms
            )
        except Refused as refusal:
            await _refuse(send, framing, refusal, extra)
            return None

    async def _stream(
        self,
        stream: SubscribeStream,
        framing: Framing,
        receive: Receive,
        send: Send,
        extra: Headers,
    ) -> None:
        task = asyncio.current_task()
        watcher = asyncio.create_task(_watch_disconnect(receive, task))
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", framing.content_type.encode()),
                        # A proxy must pass each message on at once, not buffer the stream.
                        (b"cache-control", b"no-store"),
                        (b"x-accel-buffering", b"no"),
                        *extra,
                    ],
                }
            )
            await self._write_stream(stream, framing, send)
        except asyncio.CancelledError:
            ended = stream.interrupted()
            gone = _went_away(watcher)
            if not gone and ended is None:
                raise  # not ours: the server is stopping the task
            _uncancel()
            if ended is not None and not gone:
                # The server cut it off while a write was blocked (too slow,
                # ...): try to say so, briefly; the peer may never read it.
                watcher.cancel()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(END_WRITE_TIMEOUT_S):
                        await _end_stream(send, framing, ended)
        finally:
            watcher.cancel()
            stream.close()

    async def _write_stream(self, stream: SubscribeStream, framing: Framing, send: Send) -> None:
        as_json = framing.json
        try:
            async with contextlib.aclosing(stream.messages()) as messages:
                async for frames in messages:
                    if as_json:
                        data = envelope(response_json(frames))
                    else:
                        size = sum(map(len, frames))
                        data = b"".join([envelope_prefix(size), *frames])
                    await send({"type": "http.response.body", "body": data, "more_body": True})
        except Refused as refusal:
            await _end_stream(send, framing, refusal)
            return
        await _end_stream(send, framing, None)  # not reached: streams end with Refused


async def _watch_disconnect(receive: Receive, task: asyncio.Task[Any] | None) -> None:
    """Cancel the stream's task when its client goes away (the body is already read).

    It returns only then: ``_went_away`` reads that from the task itself
    (no Event per stream).
    """
    while (await receive())["type"] != "http.disconnect":
        pass
    if task is not None:
        task.cancel()


def _went_away(watcher: asyncio.Task[None]) -> bool:
    """The client went away: the disconnect watcher returned."""
    return watcher.done() and not watcher.cancelled() and watcher.exception() is None


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ValueError("the client went away before sending its request")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _header(headers: Headers, name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


async def _respond(send: Send, status: int, content_type: str, body: bytes, extra: Headers) -> None:
    headers = [(b"content-type", content_type.encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _plain(send: Send, status: int, text: str, extra: Headers | None = None) -> None:
    await _respond(send, status, "text/plain; charset=utf-8", text.encode(), extra or [])


async def _refuse(send: Send, framing: Framing, refusal: Refused, extra: Headers) -> None:
    """A call refused before any response: each protocol's error response."""
    if framing.protocol is Protocol.CONNECT_UNARY:
        body = error_json(refusal.code, refusal.message)
        await _respond(send, HTTP_STATUS[refusal.code], "application/json", body, extra)
    elif framing.protocol is Protocol.CONNECT_STREAM:
        await _respond(
            send, 200, framing.content_type, connect_end(refusal.code, refusal.message), extra
        )
    else:
        body = grpc_web_trailers(refusal.code, refusal.message)
        await _respond(send, 200, framing.content_type, body, extra)


async def _end_stream(send: Send, framing: Framing, refusal: Refused | None) -> None:
    code, message = (refusal.code, refusal.message) if refusal else (None, "")
    if framing.protocol is Protocol.GRPC_WEB:
        end = grpc_web_trailers(code, message)
    else:
        end = connect_end(code, message)
    await send({"type": "http.response.body", "body": end, "more_body": False})


__all__ = ["WebApp"]
