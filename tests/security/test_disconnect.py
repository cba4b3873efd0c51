"""Disconnect: each selector ends exactly its streams, with the reason; revocation of tokens."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from eventrouter.server import RouterServer
from eventrouter.server.auth import TokenAuthenticator
from eventrouter.server.security.tokens import LEEWAY_S
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.security.helpers import (
    Keys,
    Stream,
    bearer,
    connect,
    counters,
    eventually,
    expect_markers,
    expect_status,
    machine_scope,
    marker_emit,
    moved,
    open_stream,
    secure_server,
    session_scope,
    subscribe_error,
    update_emit,
    user_scope,
)

SHARED_JTI = "tok-shared"


@dataclass
class Fleet:
    """alice: user (shared token), s1, s2 (shared token), m1, m2; bob: user, s1, m1."""

    streams: dict[str, Stream]

    def ids(self, *names: str) -> set[str]:
        return {self.streams[n].connection_id for n in names}


@pytest.fixture
async def fleet(keys: Keys, stub: pb_grpc.EventRouterServiceStub) -> AsyncIterator[Fleet]:
    shared = keys.user("alice", token_id=SHARED_JTI)
    plan = {
        "alice.user": (shared, user_scope()),
        "alice.s1": (keys.user("alice", session_id="s1"), session_scope("s1")),
        "alice.s2": (shared, session_scope("s2")),
        "alice.m1": (keys.user("alice", machine_id="m1"), machine_scope("m1")),
        "alice.m2": (keys.user("alice"), machine_scope("m2")),
        "bob.user": (keys.user("bob"), user_scope()),
        "bob.s1": (keys.user("bob"), session_scope("s1")),
        "bob.m1": (keys.user("bob", machine_id="m1"), machine_scope("m1")),
    }
    streams = {name: await open_stream(stub, token, scope) for name, (token, scope) in plan.items()}
    yield Fleet(streams)
    for stream in streams.values():
        stream.cancel()


SELECTORS: dict[str, tuple[Callable[[Fleet], pb.DisconnectRequest], set[str]]] = {
    "user_id": (
        lambda f: pb.DisconnectRequest(user_id="alice"),
        {"alice.user", "alice.s1", "alice.s2", "alice.m1", "alice.m2"},
    ),
    "connection_id": (
        lambda f: pb.DisconnectRequest(connection_id=f.streams["alice.s1"].connection_id),
        {"alice.s1"},
    ),
    "machine": (
        lambda f: pb.DisconnectRequest(
            machine=pb.MachineSelector(user_id="alice", machine_id="m1")
        ),
        {"alice.m1"},
    ),
    "session": (
        lambda f: pb.DisconnectRequest(
            session=pb.SessionSelector(user_id="alice", session_id="s1")
        ),
        {"alice.s1"},
    ),
    "token_id": (lambda f: pb.DisconnectRequest(token_id=SHARED_JTI), {"alice.user", "alice.s2"}),
    "unknown connection": (lambda f: pb.DisconnectRequest(connection_id="no-such-id"), set()),
    "session of a user without it": (
        lambda f: pb.DisconnectRequest(
            session=pb.SessionSelector(user_id="carol", session_id="s1")
        ),
        set(),
    ),
}


async def _survivors_still_receive(
    stub: pb_grpc.EventRouterServiceStub, keys: Keys, survivors: dict[str, Stream]
) -> None:
    service = bearer(keys.service())
    for user in ("alice", "bob"):
        sent = await stub.Emit(marker_emit(user, f"after-{user}"), metadata=service)
        assert sent.reached == sum(1 for n in survivors if n.startswith(user + "."))
    for name, stream in survivors.items():
        await expect_markers(stream, [f"after-{name.split('.')[0]}"])


@pytest.mark.parametrize("revoke", [False, True], ids=["disconnect", "revoke"])
@pytest.mark.parametrize("selector", list(SELECTORS))
async def test_selector_ends_exactly_its_streams(
    selector: str,
    revoke: bool,
    keys: Keys,
    server: RouterServer,
    stub: pb_grpc.EventRouterServiceStub,
    fleet: Fleet,
) -> None:
    make_request, expected = SELECTORS[selector]
    request = make_request(fleet)
    request.reason = f"access lost ({selector})"
    request.revoke = revoke
    done = await stub.Disconnect(request, metadata=bearer(keys.service()))
    assert done.disconnected == len(expected)
    code = grpc.StatusCode.PERMISSION_DENIED if revoke else grpc.StatusCode.UNAVAILABLE
    for name in sorted(expected):
        error = await fleet.streams[name].ended()
        assert error.code() == code, (name, error.details())
        assert f"access lost ({selector})" in (error.details() or ""), error.details()
    survivors = {n: s for n, s in fleet.streams.items() if n not in expected}
    await _survivors_still_receive(stub, keys, survivors)
    remaining = {c.connection_id for c in server.router.registry.all()}
    assert remaining == fleet.ids(*survivors)


async def test_reason_is_optional(
    keys: Keys, stub: pb_grpc.EventRouterServiceStub, fleet: Fleet
) -> None:
    target = fleet.streams["bob.user"]
    done = await stub.Disconnect(
        pb.DisconnectRequest(connection_id=target.connection_id), metadata=bearer(keys.service())
    )
    assert done.disconnected == 1
    error = await target.ended()
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == "disconnected by the service"


async def test_revoked_token_id_is_refused_on_reconnect(
    keys: Keys, server: RouterServer, stub: pb_grpc.EventRouterServiceStub
) -> None:
    service = bearer(keys.service())
    revoked = keys.user("alice", token_id="jti-revoked")
    other = keys.user("alice", token_id="jti-other")
    victim = await open_stream(stub, revoked)
    bystander = await open_stream(stub, other)
    done = await stub.Disconnect(
        pb.DisconnectRequest(token_id="jti-revoked", revoke=True, reason="stolen"),
        metadata=service,
    )
    assert done.disconnected == 1
    assert (await victim.ended()).code() == grpc.StatusCode.PERMISSION_DENIED
    before, _ = counters(server)
    for scope in (user_scope(), session_scope("s1")):
        error = await subscribe_error(stub, revoked, scope)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "revoked" in (error.details() or "")
    assert moved(before, counters(server)[0]) == {"revoked": 2}
    # Another token of the same user is unaffected, old stream and new.
    sent = await stub.Emit(marker_emit("alice", "still-here"), metadata=service)
    assert sent.reached == 1
    await expect_markers(bystander, ["still-here"])
    (await open_stream(stub, other)).cancel()
    # Revoking an id no stream uses still refuses it later.
    done = await stub.Disconnect(
        pb.DisconnectRequest(token_id="jti-future", revoke=True), metadata=service
    )
    assert done.disconnected == 0
    error = await subscribe_error(stub, keys.user("alice", token_id="jti-future"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    bystander.cancel()


async def test_disconnect_without_revoke_lets_the_token_reconnect(
    keys: Keys, stub: pb_grpc.EventRouterServiceStub
) -> None:
    token = keys.user("alice", token_id="jti-kept")
    stream = await open_stream(stub, token)
    done = await stub.Disconnect(
        pb.DisconnectRequest(token_id="jti-kept"), metadata=bearer(keys.service())
    )
    assert done.disconnected == 1
    assert (await stream.ended()).code() == grpc.StatusCode.UNAVAILABLE
    (await open_stream(stub, token)).cancel()


async def test_revoke_by_user_ends_streams_but_revokes_no_token(
    keys: Keys, stub: pb_grpc.EventRouterServiceStub
) -> None:
    # Per the contract only a token_id selector revokes the token itself.
    token = keys.user("alice")
    stream = await open_stream(stub, token)
    await stub.Disconnect(
        pb.DisconnectRequest(user_id="alice", revoke=True), metadata=bearer(keys.service())
    )
    assert (await stream.ended()).code() == grpc.StatusCode.PERMISSION_DENIED
    (await open_stream(stub, token)).cancel()


async def test_revoking_a_service_token(keys: Keys, stub: pb_grpc.EventRouterServiceStub) -> None:
    admin = bearer(keys.service("admin"))
    leaked = bearer(keys.service("leaky", token_id="svc-leaked"))
    await stub.Emit(marker_emit("alice", "x"), metadata=leaked)
    await stub.Disconnect(pb.DisconnectRequest(token_id="svc-leaked", revoke=True), metadata=admin)
    await expect_status(
        stub.Emit(marker_emit("alice", "x"), metadata=leaked),
        grpc.StatusCode.PERMISSION_DENIED,
        "revoked",
    )


async def test_configured_revoked_token_ids(keys: Keys, keys_file: Path) -> None:
    async with (
        secure_server(keys_file, revoked_token_ids=" t-1 ,t-2,, svc-9") as server,
        connect(server) as stub,
    ):
        for jti in ("t-1", "t-2"):
            error = await subscribe_error(stub, keys.user("alice", token_id=jti))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        await expect_status(
            stub.Emit(marker_emit("alice", "x"), metadata=bearer(keys.service(token_id="svc-9"))),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        assert server.service.security_stats.auth_failures == {"revoked": 3}
        assert len(server.router.registry) == 0
        (await open_stream(stub, keys.user("alice", token_id="t-3"))).cancel()


INVALID: dict[str, tuple[pb.DisconnectRequest, str]] = {
    "no selector": (pb.DisconnectRequest(reason="why", revoke=True), "selector"),
    "empty user_id": (pb.DisconnectRequest(user_id=""), "user_id"),
    "empty connection_id": (pb.DisconnectRequest(connection_id=""), "connection_id"),
    "empty token_id": (pb.DisconnectRequest(token_id="", revoke=True), "token_id"),
    "machine without user": (
        pb.DisconnectRequest(machine=pb.MachineSelector(machine_id="m1")),
        "machine.user_id",
    ),
    "machine without machine_id": (
        pb.DisconnectRequest(machine=pb.MachineSelector(user_id="alice")),
        "machine.machine_id",
    ),
    "session without user": (
        pb.DisconnectRequest(session=pb.SessionSelector(session_id="s1")),
        "session.user_id",
    ),
    "session without session_id": (
        pb.DisconnectRequest(session=pb.SessionSelector(user_id="alice")),
        "session.session_id",
    ),
    "user_id too long": (pb.DisconnectRequest(user_id="a" * 257), "user_id"),
    "token_id with whitespace": (pb.DisconnectRequest(token_id="a b", revoke=True), "token_id"),
}


@pytest.mark.parametrize("case", list(INVALID))
async def test_invalid_disconnect_names_the_field(
    case: str,
    keys: Keys,
    server: RouterServer,
    stub: pb_grpc.EventRouterServiceStub,
    fleet: Fleet,
) -> None:
    request, field = INVALID[case]
    assert request.WhichOneof("selector") == (None if field == "selector" else field.split(".")[0])
    error = await expect_status(
        stub.Disconnect(request, metadata=bearer(keys.service())),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert (error.details() or "").startswith(f"{field}: "), error.details()
    assert len(server.router.registry) == len(fleet.streams)
    await _survivors_still_receive(stub, keys, fleet.streams)


async def test_disconnect_interrupts_a_writer_blocked_by_flow_control(
    keys: Keys, server: RouterServer
) -> None:
    """A subscriber that stops reading: Disconnect still ends its stream with the reason."""
    # No BDP probing: the receive window stays at its 64 KiB default.
    async with (
        connect(server) as stub,
        grpc.aio.insecure_channel(
            f"127.0.0.1:{server.port}", options=[("grpc.http2.bdp_probe", 0)]
        ) as slow_channel,
    ):
        slow = await open_stream(pb_grpc.EventRouterServiceStub(slow_channel), keys.user("alice"))
        service = bearer(keys.service())
        for i in range(3):
            sent = await stub.Emit(update_emit("alice", f"big-{i}", size=200_000), metadata=service)
            assert sent.reached == 1
        writers = server.service.state.writers
        await eventually(
            lambda: writers[slow.connection_id].writing, "writer blocked in a write", 5.0
        )
        done = await stub.Disconnect(
            pb.DisconnectRequest(connection_id=slow.connection_id, reason="too quiet"),
            metadata=service,
        )
        assert done.disconnected == 1
        error = await slow.ended()
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "too quiet" in (error.details() or "")
        await eventually(lambda: len(server.router.registry) == 0, "stream unregistered")


async def test_a_revocation_lasts_its_ttl_or_until_the_token_seen_expires(
    keys: Keys, keys_file: Path
) -> None:
    async with (
        secure_server(keys_file, revocation_ttl_s=60.0) as server,
        connect(server) as stub,
    ):
        admin = bearer(keys.service())
        held_token = keys.user("alice", token_id="jti-held", ttl_s=7200)
        held = await open_stream(stub, held_token)
        before = time.time()
        for jti in ("jti-held", "jti-unseen"):
            request = pb.DisconnectRequest(token_id=jti, revoke=True)
            await stub.Disconnect(request, metadata=admin)
        await held.ended()
        auth = server.service.state.auth
        assert isinstance(auth, TokenAuthenticator)
        revoked = auth.revoked_token_ids
        # Seen in a stream: until the token expires (plus the verifier's leeway).
        assert before + 7200 <= revoked["jti-held"] <= time.time() + 7200 + LEEWAY_S
        # Never seen: revocation_ttl_s.
        assert before + 60 <= revoked["jti-unseen"] <= time.time() + 60
        # A revocation past its time lapses; a later expiry is never shortened.
        auth.revoke("jti-held", time.time() - 1)
        assert revoked["jti-held"] > time.time() + 7000
        auth.revoked_token_ids["jti-unseen"] = time.time() - 1
        (await open_stream(stub, keys.user("alice", token_id="jti-unseen"))).cancel()
        assert "jti-unseen" not in revoked
        error = await subscribe_error(stub, held_token)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
