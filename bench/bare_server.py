"""The bare grpc.aio ceiling: the same .proto and the same routing rule, nothing else.

Usage: ``python bench/bare_server.py --port PORT``.

What the eventrouter does around the fan-out and this server does not:
validation, id and size limits, history and offsets, idempotency, bounded
queues with an overflow policy, metrics, health, auth, graceful shutdown.
What both do the same way (so that the ratio isolates that work, the
"router tax"): one grpc.aio server on one event loop, each event serialized
once per emit and the same bytes queued to every recipient, each stream's
writer sending everything pending as one ``SubscribeResponse`` (response
serializer off), recipients picked from a per-user list.

Subscribers name their user in ``x-eventrouter-user-id`` metadata, as in
the eventrouter's --insecure mode.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
from typing import Any

import grpc

from eventrouter.v1 import router_service_pb2 as pb

SERVICE = "eventrouter.v1.EventRouterService"
_ids = itertools.count(1)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def frame(event: pb.StreamEvent) -> bytes:
    """One ``SubscribeResponse.events`` element (field 1, length-delimited)."""
    data = event.SerializeToString()
    return b"\x0a" + _varint(len(data)) + data


class Conn:
    __slots__ = ("conn_id", "kind", "pending", "scope_id", "wakeup")

    def __init__(self, kind: str, scope_id: str) -> None:
        self.conn_id = f"b{next(_ids)}"
        self.kind = kind
        self.scope_id = scope_id
        self.pending: list[bytes] = []
        self.wakeup = asyncio.Event()


def accepts(request: pb.EmitRequest, conn: Conn) -> bool:
    rf = request.recipient_filter
    which = rf.WhichOneof("filter")
    if which is None or which == "all_user_authenticated_connections":
        return True
    if which == "user_scoped_only":
        return conn.kind == "user"
    if which == "all_interested_in_session":
        return conn.kind == "user" or (
            conn.kind == "session" and conn.scope_id == rf.all_interested_in_session.session_id
        )
    if which == "machine_scoped_only":
        return conn.kind == "user" or (
            conn.kind == "machine" and conn.scope_id == rf.machine_scoped_only.machine_id
        )
    return conn.kind == "machine" and conn.scope_id == rf.machine_only.machine_id


class Bare:
    def __init__(self) -> None:
        self.users: dict[str, list[Conn]] = {}

    async def subscribe(self, request: pb.SubscribeRequest, context: Any) -> None:
        user = dict(context.invocation_metadata()).get("x-eventrouter-user-id", "")
        kind = request.scope.WhichOneof("scope") or "user"
        scope_id = (
            request.scope.session.session_id
            if kind == "session"
            else request.scope.machine.machine_id
            if kind == "machine"
            else ""
        )
        conn = Conn(kind, scope_id)
        conns = self.users.setdefault(user, [])
        conns.append(conn)
        try:
            opened = pb.ConnectionOpened(connection_id=conn.conn_id, user_id=user)
            await context.write(frame(pb.StreamEvent(opened=opened)))
            while True:
                await conn.wakeup.wait()
                conn.wakeup.clear()
                data, conn.pending = b"".join(conn.pending), []
                await context.write(data)
        finally:
            conns.remove(conn)
            if not conns:
                del self.users[user]

    def route(self, request: pb.EmitRequest) -> pb.EmitResponse:
        conns = self.users.get(request.user_id, ())
        if request.HasField("update"):
            event = pb.StreamEvent(update=pb.UpdateDelivery(payload=request.update))
        else:
            event = pb.StreamEvent(ephemeral=request.ephemeral)
        data = frame(event)
        skip = request.skip_connection_id
        reached = 0
        for conn in conns:
            if conn.conn_id != skip and accepts(request, conn):
                conn.pending.append(data)
                conn.wakeup.set()
                reached += 1
        return pb.EmitResponse(reached=reached)

    async def emit(self, request: pb.EmitRequest, context: Any) -> pb.EmitResponse:
        return self.route(request)

    async def emit_batch(self, request: pb.EmitBatchRequest, context: Any) -> pb.EmitBatchResponse:
        return pb.EmitBatchResponse(results=[self.route(e) for e in request.emits])

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Subscribe": grpc.unary_stream_rpc_method_handler(
                    self.subscribe,
                    request_deserializer=pb.SubscribeRequest.FromString,
                    response_serializer=None,
                ),
                "Emit": grpc.unary_unary_rpc_method_handler(
                    self.emit,
                    request_deserializer=pb.EmitRequest.FromString,
                    response_serializer=pb.EmitResponse.SerializeToString,
                ),
                "EmitBatch": grpc.unary_unary_rpc_method_handler(
                    self.emit_batch,
                    request_deserializer=pb.EmitBatchRequest.FromString,
                    response_serializer=pb.EmitBatchResponse.SerializeToString,
                ),
            },
        )


async def serve(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)])
    server.add_generic_rpc_handlers((Bare().handler(),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
