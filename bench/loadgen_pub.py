"""gRPC producer load generator: sends a workload's plan as unary Emit or batched.

Usage: ``python bench/loadgen_pub.py SPEC.json`` (written by run.py).

Modes:

``emit``   the generated stub's unary ``Emit``, ``inflight`` calls at a time:
           one RPC per event, what a naive service does.
``batch``  ``eventrouter.client.EventRouterClient`` with ``inflight`` emits
           awaited at a time: the client keeps one call in flight and sends
           whatever queued meanwhile as one ``EmitBatch`` (its auto-batching).

Every payload carries its emit index ``k`` and the send stamp (µs of
CLOCK_MONOTONIC, taken right before the emit is handed to gRPC or to the
client): an update (``new-message``, built with the client library's
builder) in ``seq`` and ``created_at_ms``; an ephemeral (``usage``) in its
first two token counts.  Those fields are the benchmark's, not Happy's
meaning of them.  An emit of the plan with ``pad`` > 0 is an update whose
ciphertext is ``pad`` bytes instead of 200 (W2s: big events to the
connections that stop reading).

With ``rate`` > 0 the emits are paced: emit ``k`` is sent at ``start +
k / rate`` (W4).  Protocol (common.py): builds every request and connects,
says ``ready``, starts on ``go``, says ``done`` with the first send and the
last reply stamps, ``call_us``: each emit's wait for its reply in µs (from
the send stamp: the unary call, or the wait in the client's batching and its
``EmitBatch`` call), and ``cpu_s``: this process's CPU (all threads,
``time.process_time``) from ``go`` to just before saying ``done``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import grpc
from common import command, load_json, now_us, say

from eventrouter.client import (
    EventRouterClient,
    all_interested_in_session,
    all_user_authenticated_connections,
    build_new_message_update,
    build_usage_ephemeral,
    machine_only,
    machine_scoped_only,
    user_scoped_only,
)
from eventrouter.v1 import events_pb2
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from eventrouter.v1 import routing_pb2 as rt

# About what Happy's apps send: an encrypted message of a couple hundred bytes.
CIPHERTEXT = "q" * 200


def recipient_filter(flt: list[str]) -> rt.RecipientFilter:
    kind = flt[0]
    if kind == "user_only":
        return user_scoped_only()
    if kind == "session":
        return all_interested_in_session(flt[1])
    if kind == "machine_scoped":
        return machine_scoped_only(flt[1])
    if kind == "machine_only":
        return machine_only(flt[1])
    return all_user_authenticated_connections()


def new_message(ciphertext: str) -> events_pb2.UpdatePayload:
    return build_new_message_update(
        {
            "id": "msg",
            "seq": 1,
            "content": {"t": "encrypted", "c": ciphertext},
            "localId": None,
            "createdAt": 1_700_000_000_000,
            "updatedAt": 1_700_000_000_000,
        },
        "session",
        1,
        "upd",
        now_ms=1_700_000_000_000,
    )


class Requests:
    """Builds each emit's request from templates; ``stamped(k)`` fills in k and the time."""

    def __init__(self, plan: list[dict[str, Any]], ids: dict[str, str], run_id: str) -> None:
        self.plan = plan
        self.run_id = run_id
        self.update = new_message(CIPHERTEXT)
        # Padded updates' templates, by ciphertext size.
        self.padded = {e["pad"]: new_message("q" * e["pad"]) for e in plan if e.get("pad", 0) > 0}
        self.ephemeral = build_usage_ephemeral(
            "session",
            "claude-session",
            {"input": 0, "output": 0, "cache_read": 120},
            {"total": 0.0125},
            now_ms=1_700_000_000_000,
        )
        # Everything but the stamp, built before the clock starts.
        self.base: list[pb.EmitRequest] = []
        for e in plan:
            request = pb.EmitRequest(
                user_id=e["user"], skip_connection_id=ids.get(str(e["skip"]), "")
            )
            if e["filter"][0] != "all":
                request.recipient_filter.CopyFrom(recipient_filter(e["filter"]))
            self.base.append(request)

    def stamped(self, k: int) -> pb.EmitRequest:
        request = self.base[k]
        sent = now_us()
        e = self.plan[k]
        if e["kind"] == "u":
            update = request.update
            update.CopyFrom(self.padded[e["pad"]] if e.get("pad", 0) > 0 else self.update)
            update.id = f"{self.run_id}-{k}"
            update.seq = k
            update.created_at_ms = sent
        else:
            usage = events_pb2.EphemeralPayload()
            usage.CopyFrom(self.ephemeral)
            usage.usage.tokens[0].value = k
            usage.usage.tokens[1].value = sent
            request.ephemeral.CopyFrom(usage)
        return request


async def produce(spec: dict[str, Any]) -> dict[str, Any]:
    plan: list[dict[str, Any]] = spec["plan"]
    requests = Requests(plan, spec["ids"], spec["run_id"])
    targets: list[str] = spec["targets"]
    mode: str = spec["mode"]
    rate: float = spec["rate"]
    errors: list[str] = []
    channels = [grpc.aio.insecure_channel(t) for t in targets]
    stubs = [pb_grpc.EventRouterServiceStub(c) for c in channels]
    clients = [
        EventRouterClient(t, channel=c, max_batch_size=512, timeout=60)
        for t, c in zip(targets, channels, strict=True)
    ]
    for channel in channels:
        await channel.channel_ready()
    say("ready")
    if await command() != "go":
        raise SystemExit("no go")
    cpu_start = time.process_time()
    order = iter(range(len(plan)))
    start = time.monotonic()
    first_send = now_us()
    last_reply = 0
    calls = [0] * len(plan)

    async def worker() -> None:
        nonlocal last_reply
        for k in order:
            if rate:
                delay = start + k / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            node = plan[k].get("node", 0)
            sent = now_us()
            request = requests.stamped(k)
            try:
                if mode == "emit":
                    await stubs[node].Emit(request, timeout=60)
                else:
                    await clients[node].emit(request)
            except Exception as e:
                errors.append(f"{k}: {type(e).__name__}: {e}")
            last_reply = now_us()
            calls[k] = last_reply - sent

    await asyncio.gather(*(worker() for _ in range(spec["inflight"])))
    for client in clients:
        await client.aclose()
    for channel in channels:
        await channel.close()
    return {
        "first_send_us": first_send,
        "last_reply_us": last_reply,
        "emits": len(plan),
        "errors": len(errors),
        "first_errors": errors[:5],
        "cpu_s": time.process_time() - cpu_start,
        "call_us": calls,
    }


async def main(spec_path: str) -> None:
    spec = load_json(spec_path)
    say("done", **await produce(spec))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
