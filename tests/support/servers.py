"""Start real eventrouter servers for tests: in-process on a free loopback port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from eventrouter.server import RouterServer, ServerConfig
from eventrouter.server.auth import USER_ID_METADATA_KEY
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from eventrouter.v1 import routing_pb2 as rt


@contextlib.asynccontextmanager
async def running_server(**overrides: Any) -> AsyncIterator[RouterServer]:
    """A started ``RouterServer`` on 127.0.0.1:<free port>, stopped on exit.

    Routing and delivery tests run in insecure mode (the subscriber names its
    user in ``x-eventrouter-user-id`` metadata): credentials are orthogonal to
    routing and have their own suite, tests/security, which runs the secure
    default.
    """
    overrides.setdefault("insecure", True)
    # No fixed ports: every test server would otherwise bind the default metrics port.
    overrides.setdefault("metrics_listen", "")
    config = ServerConfig(listen="127.0.0.1:0", **overrides)
    server = RouterServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace_s=0)


def user_metadata(user_id: str) -> list[tuple[str, str]]:
    return [(USER_ID_METADATA_KEY, user_id)]


def user_scope() -> rt.ConnectionScope:
    return rt.ConnectionScope(user=rt.UserScope())


def session_scope(session_id: str) -> rt.ConnectionScope:
    return rt.ConnectionScope(session=rt.SessionScope(session_id=session_id))


def machine_scope(machine_id: str) -> rt.ConnectionScope:
    return rt.ConnectionScope(machine=rt.MachineScope(machine_id=machine_id))


class RawSubscriber:
    """A Subscribe call read with the bare generated stub (no client library)."""

    def __init__(self, call: Any, opened: pb.ConnectionOpened) -> None:
        self.call = call
        self.opened = opened

    @property
    def connection_id(self) -> str:
        return self.opened.connection_id

    async def next_events(self) -> list[pb.StreamEvent]:
        """The events of the next stream message (raises AioRpcError when the stream ends)."""
        message = await self.call.read()
        if message is grpc.aio.EOF:
            raise EOFError("stream ended")
        return list(message.events)

    def cancel(self) -> None:
        self.call.cancel()


async def open_raw_subscriber(
    stub: pb_grpc.EventRouterServiceStub,
    user_id: str,
    scope: rt.ConnectionScope,
    resume_from: pb.StreamPosition | None = None,
) -> RawSubscriber:
    request = pb.SubscribeRequest(scope=scope)
    if resume_from is not None:
        request.resume_from.CopyFrom(resume_from)
    call = stub.Subscribe(request, metadata=user_metadata(user_id))
    first = await call.read()
    if first is grpc.aio.EOF:
        raise EOFError("stream ended before it opened")
    event = first.events[0]
    assert event.WhichOneof("event") == "opened", event
    subscriber = RawSubscriber(call, event.opened)
    return subscriber
