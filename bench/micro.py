"""The router's own Python work per emit and per delivery, without gRPC, beside the bare one.

Usage: ``python bench/micro.py [--workload W0|W1|W2] [--rounds N] [--profile FILE] [--quick]``.

``make bench`` measures whole servers; this isolates what the router adds
(the "router tax") so a change to the core can be judged in seconds.  Both
sides run in this process, in the same run, on the same requests (built by
``loadgen_pub.Requests`` from the workload's plan):

``eventrouter``  ``EventRouterService.emit_batch`` (insecure mode, memory
                 broker) on batches of 64 emits, then every connection's
                 writer step: ``b"".join(queue.drain())``;
``bare``         ``bare_server.Bare.emit_batch`` on the same batches, then
                 the same writer step on its pending lists.

It reports µs of CPU (``time.process_time``) per emit and per delivery for
each, and their ratio; ``--profile`` writes a cProfile of the eventrouter
side.  gRPC's own costs (calls, stream writes) are not here: that is what
``make bench`` is for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from bare_server import Bare
from bare_server import Conn as BareConn
from loadgen_pub import Requests
from workloads import FULL, QUICK, Workload, build, expected_by_conn

from eventrouter.server.app import RouterServer
from eventrouter.server.config import ServerConfig
from eventrouter.server.core.connections import (
    ClientConnection,
    MachineScopedConnection,
    SessionScopedConnection,
    UserScopedConnection,
)
from eventrouter.server.core.queue import ConnectionQueue
from eventrouter.server.transports.grpc_aio import call_info
from eventrouter.v1 import router_service_pb2 as pb

BATCH = 64


class Context:
    """The parts of a grpc.aio servicer context the gRPC adapter reads."""

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    async def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"{code}: {details}")


def batches(workload: Workload, ids: dict[str, str]) -> list[pb.EmitBatchRequest]:
    requests = Requests([e.__dict__ for e in _plain(workload)], ids, "micro")
    out = []
    for start in range(0, len(workload.plan), BATCH):
        emits = [requests.stamped(k) for k in range(start, min(start + BATCH, len(workload.plan)))]
        out.append(pb.EmitBatchRequest(emits=emits))
    return out


def _users_by_batch(requests: list[pb.EmitBatchRequest]) -> list[list[str]]:
    return [list(dict.fromkeys(e.user_id for e in r.emits)) for r in requests]


def _plain(workload: Workload) -> list[Any]:
    class Row:
        def __init__(self, **kw: Any) -> None:
            self.__dict__.update(kw)

    return [
        Row(k=e.k, user=e.user, kind=e.kind, filter=list(e.filter), skip=e.skip)
        for e in workload.plan
    ]


def _connection(user: str, scope: str, scope_id: str) -> ClientConnection:
    if scope == "session":
        return SessionScopedConnection(user, session_id=scope_id)
    if scope == "machine":
        return MachineScopedConnection(user, machine_id=scope_id)
    return UserScopedConnection(user)


async def eventrouter_side(workload: Workload) -> tuple[Callable[[], int], list[Any]]:
    server = RouterServer(ServerConfig(insecure=True, metrics_listen=""))
    router, service = server.router, server.service
    queues: dict[str, list[ConnectionQueue]] = {}
    ids: dict[str, str] = {}
    for conn in workload.conns:
        connection = _connection(conn.user, conn.scope, conn.scope_id)
        router.register(connection)
        ids[str(conn.index)] = connection.connection_id
        assert connection.queue is not None
        queues.setdefault(conn.user, []).append(connection.queue)
    requests = batches(workload, ids)
    touched = _users_by_batch(requests)
    context = Context()

    def run() -> int:
        delivered = 0
        for i, request in enumerate(requests):
            coro = service.emits.emit_batch(request, call_info(context))
            try:
                coro.send(None)
            except StopIteration:
                pass
            else:  # emit_batch awaited something real
                raise RuntimeError("emit_batch suspended: a queue filled up")
            # The writers' step, for the connections of the users this batch reached.
            for user in touched[i]:
                for queue in queues.get(user, ()):
                    if queue.has_pending():
                        frames = queue.drain()
                        delivered += len(frames)
                        b"".join(frames)
        return delivered

    return run, requests


async def bare_side(workload: Workload) -> Callable[[], int]:
    bare = Bare()
    ids: dict[str, str] = {}
    for conn in workload.conns:
        c = BareConn(conn.scope, conn.scope_id)
        bare.users.setdefault(conn.user, []).append(c)
        ids[str(conn.index)] = c.conn_id
    requests = batches(workload, ids)
    touched = _users_by_batch(requests)
    context = Context()

    def run() -> int:
        delivered = 0
        for i, request in enumerate(requests):
            coro = bare.emit_batch(request, context)
            with contextlib.suppress(StopIteration):
                coro.send(None)
            for c in (c for user in touched[i] for c in bare.users.get(user, ())):
                if c.pending:
                    delivered += len(c.pending)
                    b"".join(c.pending)
                    c.pending = []
                    c.wakeup.clear()
        return delivered

    return run


def timed(run: Callable[[], int]) -> tuple[float, int]:
    # The collector settings ``serve()`` uses, so GC costs count as in the server.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)
    start = time.process_time()
    delivered = run()
    return time.process_time() - start, delivered


async def main_async(args: argparse.Namespace) -> None:
    workload = build(args.workload, QUICK if args.quick else FULL)
    emits = len(workload.plan)
    expected = sum(len(ks) for ks in expected_by_conn(workload))
    results: dict[str, list[float]] = {"eventrouter": [], "bare": []}
    deliveries: dict[str, int] = {}
    for _ in range(args.rounds):
        # A fresh router each round: idempotency would otherwise drop repeats.
        er_run, _ = await eventrouter_side(workload)
        bare_run = await bare_side(workload)
        for name, run in (("eventrouter", er_run), ("bare", bare_run)):
            seconds, delivered = timed(run)
            results[name].append(seconds)
            deliveries[name] = delivered
    if args.profile:
        er_run, _ = await eventrouter_side(workload)
        cProfile.runctx("er_run()", globals(), {"er_run": er_run}, args.profile)
    print(f"{args.workload}: {emits} emits in batches of {BATCH}, {args.rounds} rounds (median)")
    medians = {name: statistics.median(v) for name, v in results.items()}
    for name, seconds in medians.items():
        delivered = deliveries[name]
        per_delivery = f"{seconds * 1e6 / delivered:6.3f}" if delivered else "   n/a"
        print(
            f"  {name:12} {seconds * 1e6 / emits:7.2f} µs/emit "
            f"{per_delivery} µs/delivery ({delivered} deliveries)"
        )
    print(f"  ratio eventrouter/bare: {medians['eventrouter'] / medians['bare']:.2f}")
    # Both sides must have done the same work: what the routing rule calls for.
    wrong = {name: n for name, n in deliveries.items() if n != expected}
    if wrong:
        raise SystemExit(f"deliveries differ from the routing rule's {expected}: {wrong}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="W1", choices=["W0", "W1", "W2"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    parser.add_argument("--profile", default="", help="write a cProfile of the eventrouter side")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
