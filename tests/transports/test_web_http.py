"""The web listener at the HTTP level: CORS, routes, content types, limits, disconnects.

Plain HTTP/1.1 over a socket, as a browser or curl would send it, so what
is asserted is exactly what goes over the wire.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from eventrouter.server import RouterServer
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.support.model import update_request, wait_until
from tests.support.servers import running_server

ALLOWED = "https://app.example.com"
SERVICE = "/eventrouter.v1.EventRouterService"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


async def http(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> Reply:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", "connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"content-length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        parsed[key.strip().lower()] = value.strip()
    if parsed.get("transfer-encoding") == "chunked":
        rest = _unchunk(rest)
    return Reply(int(status_line.split()[1]), parsed, rest)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def connect_json(body: dict[str, object], **headers: str) -> tuple[dict[str, str], bytes]:
    return {"content-type": "application/json", **headers}, json.dumps(body).encode()


@pytest.fixture
async def server() -> AsyncIterator[RouterServer]:
    async with running_server(web_listen="127.0.0.1:0", web_cors_origins=ALLOWED) as server:
        yield server


async def test_a_json_emit_works_like_curl(server: RouterServer) -> None:
    headers, body = connect_json(
        {"userId": "alice", "update": {"id": "u1", "body": {"deleteSession": {"sessionId": "s"}}}},
        **{"x-eventrouter-user-id": "svc"},
    )
    reply = await http(server.web_port, "POST", f"{SERVICE}/Emit", headers, body)
    assert reply.status == 200, reply
    assert reply.headers["content-type"] == "application/json"
    assert json.loads(reply.body)["position"]["offset"] == "1"


async def test_errors_of_unary_calls_are_connect_errors(server: RouterServer) -> None:
    headers, body = connect_json({"userId": "al ice", "ephemeral": {"activity": {}}})
    reply = await http(server.web_port, "POST", f"{SERVICE}/Emit", headers, body)
    assert reply.status == 400
    error = json.loads(reply.body)
    assert error["code"] == "invalid_argument"
    assert error["message"].startswith("user_id:")
    # Compression other than gzip is refused as unimplemented; gzip works.
    headers, body = connect_json({"userId": "alice"}, **{"content-encoding": "br"})
    reply = await http(server.web_port, "POST", f"{SERVICE}/Emit", headers, body)
    assert (reply.status, json.loads(reply.body)["code"]) == (501, "unimplemented")
    headers, body = connect_json({"userId": ""}, **{"content-encoding": "gzip"})
    reply = await http(server.web_port, "POST", f"{SERVICE}/Emit", headers, gzip.compress(body))
    assert json.loads(reply.body)["message"].startswith("user_id:")


async def test_routes_methods_and_content_types(server: RouterServer) -> None:
    port = server.web_port
    assert (await http(port, "POST", f"{SERVICE}/Nope", {})).status == 404
    reply = await http(port, "GET", f"{SERVICE}/Emit", {})
    assert (reply.status, reply.headers["allow"]) == (405, "POST")
    text = {"content-type": "text/plain"}
    assert (await http(port, "POST", f"{SERVICE}/Emit", text, b"x")).status == 415
    # Subscribe is a stream: unary content types do not apply to it.
    headers, body = connect_json({})
    assert (await http(port, "POST", f"{SERVICE}/Subscribe", headers, body)).status == 415


async def test_a_request_over_the_limit_is_refused(server: RouterServer) -> None:
    limit = server.config.max_request_bytes
    headers = {"content-type": "application/proto"}
    reply = await http(
        server.web_port, "POST", f"{SERVICE}/EmitBatch", headers, b"\0" * (limit + 1)
    )
    assert reply.status == 429
    assert json.loads(reply.body)["code"] == "resource_exhausted"


async def test_cors_allows_only_the_listed_origins(server: RouterServer) -> None:
    port = server.web_port
    preflight = {
        "origin": ALLOWED,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, connect-protocol-version",
    }
    reply = await http(port, "OPTIONS", f"{SERVICE}/Subscribe", preflight)
    assert reply.status == 204
    assert reply.headers["access-control-allow-origin"] == ALLOWED
    assert "authorization" in reply.headers["access-control-allow-headers"]
    assert reply.headers["access-control-allow-methods"].startswith("POST")

    elsewhere = {**preflight, "origin": "https://evil.example.net"}
    reply = await http(port, "OPTIONS", f"{SERVICE}/Subscribe", elsewhere)
    assert reply.status == 403
    assert "access-control-allow-origin" not in reply.headers
    # Not only the preflight: an actual request from that origin does nothing.
    headers, body = connect_json({"userId": "alice"}, origin="https://evil.example.net")
    reply = await http(port, "POST", f"{SERVICE}/Emit", headers, body)
    assert reply.status == 403

    odd_header = {**preflight, "access-control-request-headers": "x-something-else"}
    assert (await http(port, "OPTIONS", f"{SERVICE}/Emit", odd_header)).status == 403

    headers, body = connect_json({"userId": ""}, origin=ALLOWED)
    reply = await http(port, "POST", f"{SERVICE}/Emit", headers, body)
    assert reply.headers["access-control-allow-origin"] == ALLOWED
    assert "grpc-status" in reply.headers["access-control-expose-headers"]


async def test_nothing_is_allowed_cross_origin_by_default() -> None:
    async with running_server(web_listen="127.0.0.1:0") as server:
        headers, body = connect_json({"userId": "alice"}, origin=ALLOWED)
        reply = await http(server.web_port, "POST", f"{SERVICE}/Emit", headers, body)
        assert reply.status == 403


async def test_a_stream_answers_at_once_and_ends_when_its_client_goes(server: RouterServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.web_port)
    body = b"\x00\x00\x00\x00\x04" + b"\x0a\x02\x0a\x00"  # SubscribeRequest{scope: {user: {}}}
    request = (
        f"POST {SERVICE}/Subscribe HTTP/1.1\r\nhost: x\r\n"
        "content-type: application/connect+proto\r\nx-eventrouter-user-id: erin\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    writer.write(request)
    await writer.drain()
    # The headers and the opened event come at once (a fetch() resolves).
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-type: application/connect+proto" in head
    await wait_until(lambda: server.router.registry.has_user("erin"), what="the stream to open")
    writer.close()
    await wait_until(
        lambda: not server.router.registry.has_user("erin"),
        what="the stream of a client that went away to end",
    )


async def test_a_stalled_web_stream_is_cut_off_quietly(caplog: pytest.LogCaptureFixture) -> None:
    # The same slow-consumer policy as over gRPC: a web client that stops
    # reading is closed as too slow, and leaves nothing in the log at ERROR.
    caplog.set_level(logging.WARNING)
    async with running_server(
        web_listen="127.0.0.1:0", queue_max_events=64, queue_overflow_grace_ms=0
    ) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.web_port))
        _reader, writer = await asyncio.open_connection(sock=sock)
        body = b"\x00\x00\x00\x00\x04" + b"\x0a\x02\x0a\x00"
        writer.write(
            (
                f"POST {SERVICE}/Subscribe HTTP/1.1\r\nhost: x\r\n"
                "content-type: application/connect+proto\r\nx-eventrouter-user-id: stan\r\n"
                f"content-length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        await writer.drain()
        await wait_until(lambda: server.router.registry.has_user("stan"), what="the stream")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.EventRouterServiceStub(channel)
            sent = 0
            while server.router.registry.has_user("stan"):
                assert sent < 5_000, "never cut off"
                batch = [update_request("stan", f"s{sent + i}", pad=20_000) for i in range(20)]
                await stub.EmitBatch(pb.EmitBatchRequest(emits=batch))
                sent += len(batch)
        assert server.router.stats.closed_too_slow == 1
        writer.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
