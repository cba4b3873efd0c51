"""The eventrouter with candidate optimizations patched in, to measure them before coding them.

Usage: ``python bench/variant_server.py VARIANTS [eventrouter serve flags...]``,
e.g. ``gc,yield --listen 127.0.0.1:50051 --insecure``; run.py starts it for
targets named ``eventrouter+VARIANT[+VARIANT]`` (``--targets
eventrouter,eventrouter+gc``).  Nothing here changes the server's code: each
variant monkeypatches the installed package in this process only.

Variants:

``gc``      freeze the objects alive after start-up out of the cyclic GC and
            raise the young-generation threshold from 700 to 50,000
            allocations (the profile shows ``gc_collect_main`` high in W2).
``lean``    smaller per-connection buffers in grpc core: TCP read chunks of 1-8 KiB
            instead of up to 4 MiB, and 1 KiB HPACK tables (W3 memory per stream).
``uvloop``  run the server on uvloop's event loop instead of asyncio's.
``malloc``  one glibc malloc arena (``mallopt(M_ARENA_MAX, 1)``) before grpc
            starts its threads (W3 memory per stream).
``linger``  a woken stream writer waits 1 ms before it drains its queue, so
            the events emitted meanwhile go in the same write (a delivery
            linger: fewer, larger writes for added latency).
``yield``   a woken stream writer yields to the event loop once before it
            drains its queue, so the emits already ready to run add to the
            same write (write coalescing; unary Emit sends one event per write).
"""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any


def apply(variants: set[str]) -> None:
    unknown = variants - {"gc", "lean", "yield", "uvloop", "malloc", "linger"}
    if unknown:
        raise SystemExit(f"unknown variants: {sorted(unknown)}")
    if "gc" in variants:
        from eventrouter.server.app import RouterServer

        start = RouterServer.start

        async def start_then_freeze(self: Any) -> int:
            port: int = await start(self)
            gc.collect()
            gc.freeze()
            return port

        gc.set_threshold(50_000, 20, 100)
        RouterServer.start = start_then_freeze  # type: ignore[method-assign]
    if "lean" in variants:
        from eventrouter.server.config import ServerConfig

        options = ServerConfig.grpc_options

        def lean_options(self: ServerConfig) -> list[tuple[str, int]]:
            return [
                *options(self),
                ("grpc.experimental.tcp_read_chunk_size", 1024),
                ("grpc.experimental.tcp_min_read_chunk_size", 512),
                ("grpc.experimental.tcp_max_read_chunk_size", 8192),
                ("grpc.http2.hpack_table_size.decoder", 1024),
                ("grpc.http2.hpack_table_size.encoder", 1024),
            ]

        ServerConfig.grpc_options = lean_options  # type: ignore[method-assign]
    if "uvloop" in variants:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if "malloc" in variants:
        import ctypes

        m_arena_max = -8
        ctypes.CDLL("libc.so.6").mallopt(m_arena_max, 1)
    if "linger" in variants:
        from eventrouter.server.core.queue import ConnectionQueue

        wait_plain = ConnectionQueue.wait

        async def wait_then_linger(self: ConnectionQueue) -> None:
            await wait_plain(self)
            await asyncio.sleep(0.001)

        ConnectionQueue.wait = wait_then_linger  # type: ignore[method-assign]
    if "yield" in variants:
        from eventrouter.server.core.queue import ConnectionQueue

        wait = ConnectionQueue.wait

        async def wait_then_yield(self: ConnectionQueue) -> None:
            await wait(self)
            await asyncio.sleep(0)

        ConnectionQueue.wait = wait_then_yield  # type: ignore[method-assign]


def main() -> None:
    apply({v for v in sys.argv[1].split(",") if v})
    from eventrouter.server.__main__ import main as serve

    serve(sys.argv[2:])


if __name__ == "__main__":
    main()
