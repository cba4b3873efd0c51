"""gRPC subscriber load generator: holds Subscribe streams and records what arrives.

Usage: ``python bench/loadgen_sub.py SPEC.json`` (written by run.py).  Serves
the eventrouter and the bare gRPC ceiling alike: both speak the same .proto.

Every connection gets its own channel with a local subchannel pool, hence
its own TCP connection, as every app, session watcher and daemon has in
production (and as every Socket.IO client has); ``"channel_per": "user"`` in
the spec (run.py ``--channel-per user``) makes a user's streams share one.
The generated stub is used directly, so this process spends as little CPU
per event as it can.

For each event the subscriber keeps the emit index ``k`` and the latency
(receive stamp minus the publisher's send stamp); see loadgen_pub.py for
where the payload carries them.  Protocol (see common.py): opens the
connections stage by stage (``stage`` ... ``next``), says ``ready`` with
the server-assigned connection ids, then on ``finish PATH`` (expected
counts per connection) waits until they arrived (or the stream ended) or
progress stalls, writes its results and says ``done`` with ``cpu_s``: this
process's CPU (all threads, ``time.process_time``) from saying ``ready`` to
just before writing the results (the wait for the publisher's start
included; it is idle).

With ``"stall": true`` in the spec its connections stop reading once open
(W2s): after the ``ConnectionOpened`` nothing is read, so the client's HTTP/2
window fills and the server meets flow control, until ``finish`` reads what
was kept for them and how each stream ended (RESOURCE_EXHAUSTED when the
server closed it as too slow).  The stalled connections of every gRPC target
are this script's, whatever ``--clients`` says: they do nothing while measured.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import sys
import time
from typing import Any

import grpc
from common import command, dump_json, load_json, now_us, say

from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from eventrouter.v1 import routing_pb2 as rt

USER_ID_METADATA_KEY = "x-eventrouter-user-id"
STALL_S = 5.0  # finish when nothing arrived for this long
FINISH_CAP_S = 120.0
CHANNEL_OPTIONS = [
    # One TCP connection per channel (channels with equal arguments share one).
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]
# Stalled connections announce gRPC's initial 64 KiB stream window, as grpc-js
# clients do: with BDP probing a grpcio client held 4.3-6 MiB here before the
# server closed it, which only puts off the moment the server meets flow
# control.  Read at last, they take messages of any size (the bare ceiling
# writes all it kept as one).
STALLED_CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.http2.bdp_probe", 0),
    ("grpc.max_receive_message_length", -1),
]


class Stream:
    """One Subscribe stream and what it received."""

    __slots__ = ("call", "channel", "conn_id", "error", "index", "ks", "lats")

    def __init__(self, index: int) -> None:
        self.index = index
        self.channel: Any = None
        self.call: Any = None
        self.conn_id = ""
        self.ks = array.array("q")
        self.lats = array.array("q")
        self.error = ""


def scope_of(conn: dict[str, Any]) -> rt.ConnectionScope:
    if conn["scope"] == "session":
        return rt.ConnectionScope(session=rt.SessionScope(session_id=conn["scope_id"]))
    if conn["scope"] == "machine":
        return rt.ConnectionScope(machine=rt.MachineScope(machine_id=conn["scope_id"]))
    return rt.ConnectionScope(user=rt.UserScope())


async def open_stream(
    conn: dict[str, Any],
    target: str,
    limit: asyncio.Semaphore,
    shared: dict[str, Any] | None,
    options: list[tuple[str, int]],
) -> Stream:
    stream = Stream(conn["index"])
    async with limit:
        if shared is None:
            stream.channel = grpc.aio.insecure_channel(target, options=options)
        else:
            # --channel-per user: a user's streams share one channel (one TCP connection).
            key = f"{target}/{conn['user']}"
            if key not in shared:
                shared[key] = grpc.aio.insecure_channel(target, options=options)
            stream.channel = shared[key]
        stub = pb_grpc.EventRouterServiceStub(stream.channel)
        stream.call = stub.Subscribe(
            pb.SubscribeRequest(scope=scope_of(conn)),
            metadata=[(USER_ID_METADATA_KEY, conn["user"])],
            wait_for_ready=True,
            timeout=3600,
        )
        first = await stream.call.read()
        stream.conn_id = first.events[0].opened.connection_id
    return stream


class Stats:
    def __init__(self) -> None:
        self.received = 0
        self.first_us = 0
        self.last_us = 0


async def read_stream(stream: Stream, stats: Stats) -> None:
    ks, lats = stream.ks, stream.lats
    try:
        while True:
            message = await stream.call.read()
            if message is grpc.aio.EOF:
                stream.error = "EOF"
                return
            now = now_us()
            for event in message.events:
                which = event.WhichOneof("event")
                if which == "update":
                    payload = event.update.payload
                    k, sent = payload.seq, payload.created_at_ms
                elif which == "ephemeral":
                    tokens = event.ephemeral.usage.tokens
                    k, sent = int(tokens[0].value), int(tokens[1].value)
                else:
                    continue
                ks.append(k)
                lats.append(now - sent)
            if not stats.first_us:
                stats.first_us = now
            stats.last_us = now
            stats.received += len(message.events)
    except grpc.aio.AioRpcError as e:
        if e.code() != grpc.StatusCode.CANCELLED:
            stream.error = f"{e.code().name}: {e.details()}"


async def finish(streams: list[Stream], expected: dict[str, int], stats: Stats) -> None:
    """Wait until each stream has its expected count or ended, or nothing arrives for STALL_S."""
    end = time.monotonic() + FINISH_CAP_S
    last_total, last_change = -1, time.monotonic()
    while time.monotonic() < end:
        if all(s.error or len(s.ks) >= expected.get(str(s.index), 0) for s in streams):
            return
        if stats.received != last_total:
            last_total, last_change = stats.received, time.monotonic()
        elif time.monotonic() - last_change > STALL_S:
            return
        await asyncio.sleep(0.02)


async def main(spec_path: str) -> None:
    spec = load_json(spec_path)
    targets: list[str] = spec["targets"]
    conns: list[dict[str, Any]] = spec["conns"]
    limit = asyncio.Semaphore(spec.get("open_concurrency", 200))
    shared: dict[str, Any] | None = {} if spec.get("channel_per") == "user" else None
    stall = bool(spec.get("stall"))
    options = STALLED_CHANNEL_OPTIONS if stall else CHANNEL_OPTIONS
    stats = Stats()
    streams: list[Stream] = []
    readers: list[asyncio.Task[None]] = []
    opened = 0
    for stage in [*spec.get("stages", []), len(conns)]:
        batch = conns[opened:stage]
        opened = max(opened, stage)
        new = await asyncio.gather(
            *(open_stream(c, targets[c.get("node", 0)], limit, shared, options) for c in batch)
        )
        streams += new
        if not stall:
            readers += [asyncio.create_task(read_stream(s, stats)) for s in new]
        if stage < len(conns):
            say("stage", opened=len(streams))
            if await command() != "next":
                return
    say("ready", ids={str(s.index): s.conn_id for s in streams})
    cpu_start = time.process_time()
    cmd = await command()
    if cmd.startswith("finish "):
        if stall:
            readers += [asyncio.create_task(read_stream(s, stats)) for s in streams]
        expected = load_json(cmd.split(" ", 1)[1])
        await finish(streams, expected, stats)
    cpu_s = time.process_time() - cpu_start
    results = {
        "first_recv_us": stats.first_us,
        "last_recv_us": stats.last_us,
        "conns": {
            str(s.index): {"ks": s.ks.tolist(), "lat": s.lats.tolist(), "error": s.error}
            for s in streams
        },
    }
    dump_json(spec["out"], results)
    say("done", received=stats.received, cpu_s=cpu_s)
    for task in readers:
        task.cancel()
    # Closing thousands of channels one by one takes long and measures nothing:
    # the orchestrator stops the server next, which drops them all.
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
