"""The same calls through every protocol the server speaks, for one behavioural suite.

``Caller`` hides how a call travels: native gRPC (grpc.aio's generated stub)
or the web listener, through the Connect project's own Python client
(connectrpc) speaking Connect with binary or JSON messages, or gRPC-Web.
Failures come back as ``CallFailed`` with gRPC's status name, whatever the
protocol, so a test asserts one behaviour for all of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

import grpc
from connectrpc.client import ConnectClient
from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.protocol import ProtocolType
from google.protobuf.message import Message

from eventrouter.server import RouterServer
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc

SERVICE = "eventrouter.v1.EventRouterService"
TRANSPORTS = ["grpc", "connect-proto", "connect-json", "grpc-web"]
RESPONSES: dict[str, type[Message]] = {
    "Emit": pb.EmitResponse,
    "EmitBatch": pb.EmitBatchResponse,
    "GetConnections": pb.GetConnectionsResponse,
    "Disconnect": pb.DisconnectResponse,
    "Subscribe": pb.SubscribeResponse,
}


class CallFailed(Exception):
    """A call ended with a status: ``code`` is gRPC's name (``"INVALID_ARGUMENT"``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Stream(Protocol):
    async def next(self) -> pb.SubscribeResponse:
        """The next stream message; raises CallFailed when the stream ends with a status."""

    async def close(self) -> None: ...


class Caller(Protocol):
    name: str

    async def call(self, method: str, request: Message, token: str | None) -> Any: ...

    async def subscribe(self, request: pb.SubscribeRequest, token: str | None) -> Stream: ...


def _headers(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


class _GrpcStream:
    def __init__(self, call: Any) -> None:
        self._call = call

    async def next(self) -> pb.SubscribeResponse:
        try:
            message = await self._call.read()
        except grpc.aio.AioRpcError as e:
            raise CallFailed(e.code().name, e.details() or "") from None
        assert message is not grpc.aio.EOF, "the stream ended without a status"
        assert isinstance(message, pb.SubscribeResponse)
        return message

    async def close(self) -> None:
        self._call.cancel()


class GrpcCaller:
    name = "grpc"

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = pb_grpc.EventRouterServiceStub(channel)

    async def call(self, method: str, request: Message, token: str | None) -> Any:
        metadata = list(_headers(token).items())
        try:
            return await getattr(self._stub, method)(request, metadata=metadata)
        except grpc.aio.AioRpcError as e:
            raise CallFailed(e.code().name, e.details() or "") from None

    async def subscribe(self, request: pb.SubscribeRequest, token: str | None) -> Stream:
        call = self._stub.Subscribe(request, metadata=list(_headers(token).items()))
        return _GrpcStream(call)


def _method(name: str, request: Message) -> MethodInfo[Any, Any]:
    return MethodInfo(
        name=name,
        service_name=SERVICE,
        input=type(request),
        output=RESPONSES[name],
        idempotency_level=IdempotencyLevel.UNKNOWN,
        stream_type=StreamType.SERVER_STREAM if name == "Subscribe" else StreamType.UNARY,
    )


def _failed(error: ConnectError) -> CallFailed:
    return CallFailed(error.code.name, error.message)


class _ConnectStream:
    def __init__(self, iterator: Any) -> None:
        self._iterator = iterator

    async def next(self) -> pb.SubscribeResponse:
        try:
            message = await self._iterator.__anext__()
        except ConnectError as e:
            raise _failed(e) from None
        except StopAsyncIteration:
            raise AssertionError("the stream ended without a status") from None
        assert isinstance(message, pb.SubscribeResponse)
        return message

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._iterator.aclose()


class ConnectCaller:
    def __init__(self, name: str, client: ConnectClient) -> None:
        self.name = name
        self._client = client

    async def call(self, method: str, request: Message, token: str | None) -> Any:
        try:
            return await self._client.execute_unary(
                request=request, method=_method(method, request), headers=_headers(token)
            )
        except ConnectError as e:
            raise _failed(e) from None

    async def subscribe(self, request: pb.SubscribeRequest, token: str | None) -> Stream:
        iterator = self._client.execute_server_stream(
            request=request, method=_method("Subscribe", request), headers=_headers(token)
        ).__aiter__()
        return _ConnectStream(iterator)


@contextlib.asynccontextmanager
async def caller_for(transport: str, server: RouterServer) -> AsyncIterator[Caller]:
    """A caller of ``server`` over ``transport`` (one of TRANSPORTS)."""
    if transport == "grpc":
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield GrpcCaller(channel)
        return
    protocol = ProtocolType.GRPC_WEB if transport == "grpc-web" else ProtocolType.CONNECT
    codec = (
        google_protobuf_json_codec()
        if transport == "connect-json"
        else google_protobuf_binary_codec()
    )
    address = f"http://127.0.0.1:{server.web_port}"
    async with ConnectClient(address, protocol=protocol, codec=codec) as client:
        yield ConnectCaller(transport, client)
