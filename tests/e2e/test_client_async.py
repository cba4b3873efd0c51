"""The asyncio client against a real router: emits, auto-batching, retries, subscriptions."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import grpc
import pytest

from eventrouter.client._calls import (
    Backoff,
    InvalidArgumentError,
    PermissionDeniedError,
    RetryPolicy,
    UnauthenticatedError,
    UnavailableError,
    update_request,
)
from eventrouter.client._client import EventRouterClient
from eventrouter.client._events import (
    Connected,
    EphemeralReceived,
    Heartbeat,
    Reconnecting,
    ReconnectPolicy,
    RefetchRequired,
    SubscriptionEvent,
    UpdateReceived,
)
from eventrouter.client._filters import (
    all_interested_in_session,
    machine_only,
    session_scope,
    user_scope,
)
from eventrouter.client._results import ConnectionInfo, EmitResult
from eventrouter.client._subscription import Subscription
from eventrouter.server import RouterServer
from eventrouter.server.security.tokens import (
    SERVICE_AUDIENCE,
    SUBSCRIBER_AUDIENCE,
    KeySet,
    generate_hs256_jwks,
)
from eventrouter.v1 import events_pb2
from eventrouter.v1 import router_service_pb2 as pb
from tests.e2e.client_helpers import (
    RpcCounter,
    big_update,
    ephemeral,
    free_port,
    offset,
    server_on_port,
    update,
    wait_until,
)
from tests.support.servers import running_server

FAST_RECONNECT = ReconnectPolicy(backoff=Backoff(base_s=0.01, max_s=0.1))


def target(server: RouterServer) -> str:
    return f"127.0.0.1:{server.port}"


async def take(subscription: Subscription, n: int) -> list[SubscriptionEvent]:
    events: list[SubscriptionEvent] = []
    async with asyncio.timeout(15):
        while len(events) < n:
            events.append(await anext(subscription))
    return events


async def test_emit_and_get_connections(router_server: RouterServer) -> None:
    async with (
        EventRouterClient(target(router_server)) as client,
        client.subscribe(session_scope("s1"), user_id="alice") as sub,
    ):
        assert sub.connection_id
        assert sub.position is not None
        assert sub.position.offset == 0

        sent = await client.emit_update("alice", update(1), all_interested_in_session("s1"))
        assert (sent.reached, sent.duplicate, offset(sent)) == (1, False, 1)
        again = await client.emit_update("alice", update(1))
        assert again.duplicate
        assert offset(again) == 1
        missed = await client.emit_ephemeral("alice", ephemeral("m1"), machine_only("m1"))
        # Typed results, as subscribe yields: an ephemeral has no position at all.
        assert missed == EmitResult(reached=0, duplicate=False, position=None)

        connections = await client.get_connections("alice")
        assert [type(c) for c in connections] == [ConnectionInfo]
        assert [c.connection_id for c in connections] == [sub.connection_id]
        assert connections[0].scope.session.session_id == "s1"
        assert connections[0].node_id == router_server.router.node_id
        assert await client.get_connections("nobody") == []

        # Disconnect ends the session's stream; the subscription comes back by itself.
        assert await client.disconnect("alice", session_id="s1", reason="moved") == 1
        await client.emit_update("alice", update(2))  # replayed when it resumes
        events = await take(sub, 2)
        assert [e.payload.id for e in events if isinstance(e, UpdateReceived)] == ["upd-1", "upd-2"]
        assert sub.reconnects == 1
        assert await client.disconnect(connection_id="c_nobody") == 0
        with pytest.raises(TypeError, match="exactly one"):
            await client.disconnect("alice", token_id="t1")


async def test_concurrent_emits_are_batched_with_per_call_results(
    router_server: RouterServer,
) -> None:
    counter = RpcCounter()
    async with (
        EventRouterClient(target(router_server), interceptors=[counter]) as client,
        client.subscribe(user_scope(), user_id="bob") as sub,
    ):
        results = await asyncio.gather(*(client.emit_update("bob", update(i)) for i in range(200)))
        # Every caller got its own result, in the order the emits were called.
        assert [offset(r) for r in results] == list(range(1, 201))
        assert all(r.reached == 1 for r in results)
        rpcs = counter.count("Emit", "EmitBatch")
        assert 1 <= rpcs < 200
        assert counter.calls["EmitBatch"] >= 1

        # A lone emit goes out at once as a plain Emit (no timer, no batch).
        before = counter.calls["Emit"]
        lone = await client.emit_update("bob", update(200))
        assert offset(lone) == 201
        assert counter.calls["Emit"] == before + 1

        events = await take(sub, 201)
        assert [e.payload.id for e in events if isinstance(e, UpdateReceived)] == [
            f"upd-{i}" for i in range(201)
        ]


async def test_max_batch_size_bounds_each_call(router_server: RouterServer) -> None:
    counter = RpcCounter()
    async with EventRouterClient(
        target(router_server), interceptors=[counter], max_batch_size=16
    ) as client:
        results = await asyncio.gather(*(client.emit_update("carol", update(i)) for i in range(64)))
        assert [offset(r) for r in results] == list(range(1, 65))
        assert counter.count("Emit", "EmitBatch") >= 4


async def test_invalid_item_in_a_batch_fails_only_its_caller(router_server: RouterServer) -> None:
    counter = RpcCounter()
    async with (
        EventRouterClient(target(router_server), interceptors=[counter]) as client,
        client.subscribe(user_scope(), user_id="dave") as sub,
    ):
        bad = events_pb2.UpdatePayload(
            id="bad-1",
            body=events_pb2.UpdateEvent(
                # UNSPECIFIED is rejected by the router, not by the client's cheap checks.
                relationship_updated=events_pb2.RelationshipUpdated(uid="x")
            ),
        )
        results = await asyncio.gather(
            client.emit_update("dave", update(1)),
            client.emit_update("dave", bad),
            client.emit_update("dave", update(2)),
            return_exceptions=True,
        )
        ok1, error, ok2 = results
        assert not isinstance(ok1, BaseException)
        assert offset(ok1) == 1
        assert not isinstance(ok2, BaseException)
        assert offset(ok2) == 2
        assert isinstance(error, InvalidArgumentError)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.field == "update.body.relationship_updated.status"
        # One rejected batch, then each item on its own.
        assert counter.calls["EmitBatch"] == 1
        assert counter.calls["Emit"] == 3

        events = await take(sub, 2)
        assert [e.payload.id for e in events if isinstance(e, UpdateReceived)] == [
            "upd-1",
            "upd-2",
        ]

        # Cheap mistakes never leave the client.
        with pytest.raises(InvalidArgumentError) as caught:
            await client.emit_update("dave", events_pb2.UpdatePayload(id=""))
        assert caught.value.field == "update.id"
        assert counter.calls["Emit"] == 3

        # An explicit batch is all-or-nothing, as the router defines it.
        with pytest.raises(InvalidArgumentError) as caught:
            await client.emit_batch(
                [update_request("dave", update(3)), update_request("dave", bad)]
            )
        assert caught.value.field == "emits[1].update.body.relationship_updated.status"
        done = await client.emit_batch([update_request("dave", update(3))])
        assert offset(done[0]) == 3


async def test_emit_is_retried_until_the_router_comes_up() -> None:
    port = free_port()
    counter = RpcCounter()
    retry = RetryPolicy(max_attempts=1000, backoff=Backoff(base_s=0.01, max_s=0.05))
    async with EventRouterClient(
        f"127.0.0.1:{port}", interceptors=[counter], retry=retry
    ) as client:
        # An ephemeral without an idempotency key is not retried: a repeat
        # could show twice.
        with pytest.raises(UnavailableError):
            await client.emit_ephemeral("erin", ephemeral())
        assert counter.calls["Emit"] == 1

        pending = asyncio.create_task(client.emit_update("erin", update(1)))
        await wait_until(lambda: counter.codes[grpc.StatusCode.UNAVAILABLE] >= 3)
        assert not pending.done()
        async with server_on_port(port, insecure=True):
            async with asyncio.timeout(15):
                result = await pending
            assert offset(result) == 1
            keyed = await client.emit_ephemeral("erin", ephemeral(), idempotency_key="k1")
            assert not keyed.duplicate


async def test_subscription_yields_typed_events_in_order(router_server: RouterServer) -> None:
    async with EventRouterClient(target(router_server)) as client:
        sub = client.subscribe(user_scope(), user_id="frank")
        async with sub:
            await client.emit_update("frank", update(1))
            await client.emit_ephemeral("frank", ephemeral("m9"))
            await client.emit_update("frank", update(2))
            first, second, third = await take(sub, 3)
            assert isinstance(first, UpdateReceived)
            assert first.payload.id == "upd-1"
            assert first.position.offset == 1
            assert isinstance(second, EphemeralReceived)
            assert second.payload.machine_status.machine_id == "m9"
            assert isinstance(third, UpdateReceived)
            assert third.position.offset == 2
            assert sub.position is not None
            assert sub.position.offset == 2

            await client.emit_update("frank", update(3))
            payloads = sub.payloads()
            payload = await anext(payloads)
            assert isinstance(payload, events_pb2.UpdatePayload)
            assert payload.id == "upd-3"
            await payloads.aclose()
        assert sub.closed
        with pytest.raises(StopAsyncIteration):
            await anext(sub)


async def test_fatal_errors_raise_instead_of_reconnecting(router_server: RouterServer) -> None:
    async with EventRouterClient(target(router_server)) as client:
        with pytest.raises(UnauthenticatedError):
            async with client.subscribe(user_scope()):
                pass
        with pytest.raises(InvalidArgumentError) as caught:
            async with client.subscribe(session_scope(""), user_id="gina"):
                pass
        assert caught.value.field == "scope.session.session_id"


async def test_too_slow_subscriber_reconnects_and_resumes_exactly_once() -> None:
    async with (
        running_server(queue_max_events=4) as server,
        EventRouterClient(target(server), reconnect=FAST_RECONNECT) as client,
        client.subscribe(user_scope(), user_id="hank") as sub,
    ):
        first_connection = sub.connection_id
        # The reader is paused: ~12 MiB fill the transport's buffers, the
        # writer blocks, the queue of 4 overflows and the router ends the
        # stream with RESOURCE_EXHAUSTED.
        sent = await client.emit_batch([update_request("hank", big_update(i)) for i in range(50)])
        assert [offset(r) for r in sent] == list(range(1, 51))
        await wait_until(lambda: not server.router.get_connections("hank"))

        events = await take(sub, 50)
        assert [e.payload.id for e in events if isinstance(e, UpdateReceived)] == [
            f"upd-{i}" for i in range(50)
        ]
        assert [e.position.offset for e in events if isinstance(e, UpdateReceived)] == list(
            range(1, 51)
        )
        assert sub.reconnects >= 1
        assert sub.connection_id != first_connection

        # Live delivery continues after the replay, with nothing repeated.
        await client.emit_update("hank", update(50))
        (live,) = await take(sub, 1)
        assert isinstance(live, UpdateReceived)
        assert live.position.offset == 51
        assert sub.pending == 0


async def test_resume_against_a_restarted_router_requires_a_refetch() -> None:
    port = free_port()
    async with EventRouterClient(f"127.0.0.1:{port}", reconnect=FAST_RECONNECT) as client:
        async with server_on_port(port, insecure=True):
            sub = client.subscribe(user_scope(), user_id="ivy")
            await sub.open()
            await client.emit_update("ivy", update(1))
            (got,) = await take(sub, 1)
            assert isinstance(got, UpdateReceived)
            old_epoch = got.position.epoch
        # The router is gone (its stream ended with UNAVAILABLE); a new one,
        # with a new epoch and no history, starts where clients point.
        async with server_on_port(port, insecure=True):
            (refetch,) = await take(sub, 1)
            assert isinstance(refetch, RefetchRequired)
            assert refetch.reason == "epoch_changed"
            assert refetch.position.epoch != old_epoch
            assert sub.reconnects == 1

            await client.emit_update("ivy", update(2))
            (live,) = await take(sub, 1)
            assert isinstance(live, UpdateReceived)
            assert live.payload.id == "upd-2"
            assert live.position.offset == 1
            assert live.position.epoch == refetch.position.epoch
            await sub.aclose()


async def test_heartbeats_and_connected_events_on_request(router_server: RouterServer) -> None:
    async with (
        EventRouterClient(target(router_server)) as client,
        client.subscribe(
            user_scope(), user_id="jill", heartbeat_ms=1000, include_control=True
        ) as sub,
    ):
        connected, heartbeat = await take(sub, 2)
        assert isinstance(connected, Connected)
        assert connected.opened.heartbeat_interval_ms == 1000
        assert isinstance(heartbeat, Heartbeat)
        assert heartbeat.server_time_ms > 0


async def test_reconnecting_events_say_why_and_the_subscription_gives_up() -> None:
    port = free_port()
    policy = ReconnectPolicy(backoff=Backoff(base_s=0.01, max_s=0.05), max_attempts=2)
    async with EventRouterClient(f"127.0.0.1:{port}", reconnect=policy) as client:
        sub = client.subscribe(user_scope(), user_id="leo", include_control=True)
        async with server_on_port(port, insecure=True):
            await sub.open()
            await client.emit_update("leo", update(1))
            connected, first = await take(sub, 2)
            assert isinstance(connected, Connected)
            assert isinstance(first, UpdateReceived)

            assert await client.disconnect("leo", reason="maintenance") == 1
            reconnecting, connected = await take(sub, 2)
            assert isinstance(reconnecting, Reconnecting)
            assert reconnecting.code == grpc.StatusCode.UNAVAILABLE
            assert reconnecting.details == "disconnected by the service: maintenance"
            assert (reconnecting.attempt, reconnecting.max_attempts) == (1, 2)
            assert 0 <= reconnecting.delay_s <= 0.02  # first wait: U(0, base_s * 2)
            assert isinstance(connected, Connected)
            await client.emit_update("leo", update(2))
            (second,) = await take(sub, 1)
            assert isinstance(second, UpdateReceived)  # progress: the count starts again
        # The router is gone: two failed attempts are announced, the third raises.
        attempts = await take(sub, 2)
        assert [(type(e), getattr(e, "attempt", None)) for e in attempts] == [
            (Reconnecting, 1),
            (Reconnecting, 2),
        ]
        with pytest.raises(UnavailableError, match="gave up after 2 reconnects"):
            await take(sub, 1)
        assert sub.closed


async def test_bearer_tokens_and_a_refreshed_token_after_expiry(tmp_path: Path) -> None:
    jwks = generate_hs256_jwks()
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps(jwks))
    keys_file.chmod(0o600)
    keys = KeySet(jwks)
    minted: list[str] = []

    def fresh_token() -> str:
        # The first token was issued long enough ago that the router ends the
        # stream within a second (past `exp` plus the verifier's leeway);
        # later ones last.
        if minted:
            minted.append(keys.mint("kate", SUBSCRIBER_AUDIENCE, ttl_s=600))
        else:
            minted.append(keys.mint("kate", SUBSCRIBER_AUDIENCE, ttl_s=2, now=time.time() - 6))
        return minted[-1]

    async with running_server(insecure=False, keys_file=str(keys_file)) as server:
        service = keys.mint("backend", SERVICE_AUDIENCE)
        async with (
            EventRouterClient(target(server), token=service, reconnect=FAST_RECONNECT) as client,
            client.subscribe(user_scope(), token=fresh_token) as sub,
        ):
            assert sub.opened is not None
            assert sub.opened.user_id == "kate"

            # The router ends the stream when the token expires; the
            # subscription reopens it with a fresh token and resumes.
            await wait_until(lambda: not server.router.get_connections("kate"))
            # Emitted while the subscription reconnects: it arrives once, by
            # the resume's replay or live, whichever of the two came first.
            reached = (await client.emit_update("kate", update(1))).reached
            (first,) = await take(sub, 1)
            assert isinstance(first, UpdateReceived)
            assert first.payload.id == "upd-1"
            assert sub.reconnects == 1
            assert len(minted) == 2
            assert sub.opened is not None
            assert sub.opened.resume.status == pb.RESUME_STATUS_RESUMED
            assert sub.opened.resume.replayed == (1 if reached == 0 else 0)

            assert (await client.emit_update("kate", update(2))).reached == 1
            (live,) = await take(sub, 1)
            assert isinstance(live, UpdateReceived)
            assert live.payload.id == "upd-2"

        async with EventRouterClient(target(server), token=minted[-1]) as wrong_kind:
            with pytest.raises(PermissionDeniedError):
                await wrong_kind.emit_update("kate", update(3))
