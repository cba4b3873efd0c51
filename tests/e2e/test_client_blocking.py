"""The blocking client against a real router running on a background thread's event loop."""

from __future__ import annotations

import concurrent.futures

import grpc
import pytest

from eventrouter.client._blocking import BlockingEventRouterClient, BlockingSubscription
from eventrouter.client._calls import (
    Backoff,
    InvalidArgumentError,
    RetryPolicy,
    UnauthenticatedError,
    UnavailableError,
    update_request,
)
from eventrouter.client._events import (
    EphemeralReceived,
    ReconnectPolicy,
    RefetchRequired,
    SubscriptionEvent,
    UpdateReceived,
)
from eventrouter.client._filters import all_interested_in_session, session_scope, user_scope
from eventrouter.client._results import ConnectionInfo, EmitResult
from eventrouter.v1 import events_pb2
from tests.e2e.client_helpers import (
    BlockingRpcCounter,
    ServerThread,
    big_update,
    ephemeral,
    free_port,
    offset,
    server_thread,
    update,
    wait_until_sync,
)

FAST_RECONNECT = ReconnectPolicy(backoff=Backoff(base_s=0.01, max_s=0.1))


def take(subscription: BlockingSubscription, n: int) -> list[SubscriptionEvent]:
    return [next(subscription) for _ in range(n)]


def client_for(server: ServerThread, **kwargs: object) -> BlockingEventRouterClient:
    return BlockingEventRouterClient(f"127.0.0.1:{server.port}", **kwargs)  # type: ignore[arg-type]


@pytest.mark.timeout(30)
def test_emit_subscribe_and_get_connections() -> None:
    with (
        server_thread(insecure=True) as server,
        client_for(server) as client,
        client.subscribe(session_scope("s1"), user_id="alice") as sub,
    ):
        assert sub.connection_id
        assert sub.position is not None

        sent = client.emit_update("alice", update(1), all_interested_in_session("s1"))
        assert (sent.reached, offset(sent)) == (1, 1)
        assert client.emit_ephemeral("alice", ephemeral("m1")) == EmitResult(1, False, None)
        batch = client.emit_batch([update_request("alice", update(i)) for i in (2, 3)])
        assert [offset(r) for r in batch] == [2, 3]

        first, second, third, fourth = take(sub, 4)
        assert isinstance(first, UpdateReceived)
        assert first.payload.id == "upd-1"
        assert isinstance(second, EphemeralReceived)
        assert isinstance(third, UpdateReceived)
        assert isinstance(fourth, UpdateReceived)
        assert fourth.position.offset == 3
        assert sub.position is not None
        assert sub.position.offset == 3

        connections = client.get_connections("alice")
        assert [type(c) for c in connections] == [ConnectionInfo]
        assert [c.connection_id for c in connections] == [sub.connection_id]

        with pytest.raises(InvalidArgumentError) as caught:
            client.emit_batch([update_request("alice", update(4)), update_request("", update(5))])
        assert caught.value.field == "emits[1].user_id"

        client.emit_update("alice", update(4))
        payload = next(sub.payloads())
        assert isinstance(payload, events_pb2.UpdatePayload)
        assert payload.id == "upd-4"

        # Disconnect ends the stream; the subscription resumes by itself.
        assert client.disconnect(connection_id=sub.connection_id) == 1
        client.emit_update("alice", update(5))
        payload = next(sub.payloads())
        assert isinstance(payload, events_pb2.UpdatePayload)
        assert payload.id == "upd-5"
        assert sub.reconnects == 1
    assert sub.closed


@pytest.mark.timeout(30)
def test_fatal_subscribe_error_raises() -> None:
    with (
        server_thread(insecure=True) as server,
        client_for(server) as client,
        pytest.raises(UnauthenticatedError),
        client.subscribe(user_scope()),
    ):
        pass


@pytest.mark.timeout(30)
def test_emit_is_retried_until_the_router_comes_up() -> None:
    port = free_port()
    counter = BlockingRpcCounter()
    retry = RetryPolicy(max_attempts=1000, backoff=Backoff(base_s=0.01, max_s=0.05))
    with (
        BlockingEventRouterClient(
            f"127.0.0.1:{port}", interceptors=[counter], retry=retry
        ) as client,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        with pytest.raises(UnavailableError):
            client.emit_ephemeral("bob", ephemeral())
        assert counter.calls["Emit"] == 1

        pending = pool.submit(client.emit_update, "bob", update(1))
        wait_until_sync(lambda: counter.codes[grpc.StatusCode.UNAVAILABLE] >= 3)
        assert not pending.done()
        with server_thread(port, insecure=True):
            assert offset(pending.result(timeout=15)) == 1


@pytest.mark.timeout(30)
def test_too_slow_subscriber_reconnects_and_resumes_exactly_once() -> None:
    with (
        server_thread(insecure=True, queue_max_events=4) as server,
        client_for(server, reconnect=FAST_RECONNECT) as client,
        client.subscribe(user_scope(), user_id="carol") as sub,
    ):
        # Nobody reads yet: ~10 MiB fill the transport's buffers (a few MiB),
        # the writer blocks, the queue of 4 overflows and the stream is ended
        # as too slow; reading then resumes without loss or duplicate.
        for i in range(40):
            client.emit_update("carol", big_update(i))
        wait_until_sync(lambda: server.connection_count("carol") == 0)
        events = take(sub, 40)
        assert [e.payload.id for e in events if isinstance(e, UpdateReceived)] == [
            f"upd-{i}" for i in range(40)
        ]
        assert sub.reconnects >= 1
        client.emit_update("carol", update(40))
        (live,) = take(sub, 1)
        assert isinstance(live, UpdateReceived)
        assert live.position.offset == 41


@pytest.mark.timeout(30)
def test_resume_against_a_restarted_router_requires_a_refetch() -> None:
    port = free_port()
    with BlockingEventRouterClient(f"127.0.0.1:{port}", reconnect=FAST_RECONNECT) as client:
        with server_thread(port, insecure=True):
            sub = client.subscribe(user_scope(), user_id="dave").open()
            client.emit_update("dave", update(1))
            (got,) = take(sub, 1)
            assert isinstance(got, UpdateReceived)
        with server_thread(port, insecure=True):
            (refetch,) = take(sub, 1)
            assert isinstance(refetch, RefetchRequired)
            assert refetch.reason == "epoch_changed"
            assert refetch.position.epoch != got.position.epoch
            client.emit_update("dave", update(2))
            (live,) = take(sub, 1)
            assert isinstance(live, UpdateReceived)
            assert live.payload.id == "upd-2"
            sub.close()
