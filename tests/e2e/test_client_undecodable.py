"""A stream message the client cannot decode ends the subscription with a typed error.

The router refuses such payloads at Emit (tests/unit/test_core_nesting.py), so
here a real grpc.aio server stands in for a router that sends one anyway: a
newer server, a contract mismatch.  Before, grpc's generated stub dropped the
message (asyncio: a ``None`` read, then ``AttributeError``) or failed with
INTERNAL, and a resume met the same message again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from eventrouter.client import (
    BlockingEventRouterClient,
    EventRouterClient,
    UndecodableMessageError,
    user_scope,
)
from eventrouter.server.core import wire
from eventrouter.v1 import router_service_pb2 as pb

OPENED = wire.event_frame(
    pb.StreamEvent(
        opened=pb.ConnectionOpened(
            connection_id="c1",
            user_id="alice",
            position=pb.StreamPosition(offset=0, epoch="e1"),
        )
    ).SerializeToString()
)
# A StreamEvent whose length runs past the end of the message: no runtime decodes it.
UNDECODABLE = b"\x0a\x7f\x12\x03abc"


@contextlib.asynccontextmanager
async def raw_router(messages: list[bytes]) -> AsyncIterator[str]:
    """A real gRPC server whose Subscribe writes ``messages`` (raw bytes) and then waits."""

    async def subscribe(request: Any, context: Any) -> None:
        for message in messages:
            await context.write(message)
        await asyncio.Event().wait()

    handler = grpc.method_handlers_generic_handler(
        "eventrouter.v1.EventRouterService",
        {
            "Subscribe": grpc.unary_stream_rpc_method_handler(
                subscribe,
                request_deserializer=pb.SubscribeRequest.FromString,
                response_serializer=None,
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_the_async_client_raises_a_typed_error() -> None:
    async with (
        raw_router([OPENED, UNDECODABLE]) as address,
        EventRouterClient(address) as client,
    ):
        subscription = client.subscribe(user_scope(), user_id="alice")
        with pytest.raises(UndecodableMessageError) as raised:
            async for _ in subscription:
                pass
        assert raised.value.code == grpc.StatusCode.INTERNAL
        assert "could not be decoded" in raised.value.details
        assert subscription.closed, "no reconnect into the same message"


async def test_the_blocking_client_raises_a_typed_error() -> None:
    async with raw_router([OPENED, UNDECODABLE]) as address:

        def read_all() -> None:
            with BlockingEventRouterClient(address) as client:
                subscription = client.subscribe(user_scope(), user_id="alice")
                try:
                    for _ in subscription:
                        pass
                finally:
                    assert subscription.closed

        with pytest.raises(UndecodableMessageError, match="could not be decoded"):
            await asyncio.to_thread(read_all)
