"""Who may subscribe and who may emit, through real gRPC calls on a secure server.

Every refusal is checked three ways: the status code, the matching
``security_stats`` counter (and no other), and that nothing was left behind
(GetConnections is empty and an emit to the user reaches no connection).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from eventrouter.server import RouterServer
from eventrouter.server.auth import USER_ID_METADATA_KEY
from eventrouter.server.security.tokens import LEEWAY_S
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from eventrouter.v1 import routing_pb2 as rt
from tests.security.helpers import (
    ED,
    ES,
    HS,
    READ_TIMEOUT_S,
    Keys,
    Metadata,
    bearer,
    connect,
    counters,
    eventually,
    expect_markers,
    expect_status,
    final_error,
    machine_scope,
    marker_emit,
    moved,
    open_stream,
    secure_server,
    session_scope,
    subscribe_error,
    user_scope,
    write_jwks,
)

UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
USER = "alice"


async def assert_nothing_left(
    stub: pb_grpc.EventRouterServiceStub, keys: Keys, user_id: str = USER
) -> None:
    """No connection of ``user_id`` is registered, and an emit to it reaches nobody."""
    service = bearer(keys.service())
    listed = await stub.GetConnections(pb.GetConnectionsRequest(user_id=user_id), metadata=service)
    assert list(listed.connections) == []
    reached = await stub.Emit(marker_emit(user_id, "probe"), metadata=service)
    assert reached.reached == 0


def _other_ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def _alg_confusion(keys: Keys) -> str:
    # HS256 "signed" with the Ed25519 public key bytes, naming the Ed25519 kid.
    public = keys.ed_private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return jwt.encode(
        {"sub": USER, "aud": "eventrouter:subscriber", "exp": int(time.time()) + 60},
        public,
        algorithm="HS256",
        headers={"kid": keys.kids[ED]},
    )


def _no_kid(keys: Keys) -> str:
    claims = {"sub": USER, "aud": "eventrouter:subscriber", "exp": int(time.time()) + 60}
    return jwt.encode(claims, keys.hs_secret, algorithm="HS256")


def _unsigned(keys: Keys) -> str:
    return jwt.encode(
        {"sub": USER, "aud": "eventrouter:subscriber", "exp": int(time.time()) + 60},
        "",
        algorithm="none",
        headers={"kid": keys.kids[HS]},
    )


# (metadata for user alice, expected code, auth_failures reason)
REFUSALS: dict[str, tuple[Callable[[Keys], Metadata], grpc.StatusCode, str]] = {
    "no credentials": (lambda k: [], UNAUTH, "missing"),
    "only the insecure user-id header": (
        lambda k: [(USER_ID_METADATA_KEY, USER)],
        UNAUTH,
        "missing",
    ),
    "token without Bearer": (lambda k: [("authorization", k.user(USER))], UNAUTH, "malformed"),
    "Basic scheme": (lambda k: [("authorization", "Basic YWxpY2U6cHc=")], UNAUTH, "malformed"),
    "Bearer and nothing": (lambda k: [("authorization", "Bearer")], UNAUTH, "malformed"),
    "garbage token": (lambda k: bearer("not-a-jwt"), UNAUTH, "malformed"),
    "garbage segments": (lambda k: bearer("aaa.bbb.ccc"), UNAUTH, "malformed"),
    "HS256 bad signature": (
        lambda k: bearer(k.user(USER, sign_with=b"\x01" * 32)),
        UNAUTH,
        "bad_signature",
    ),
    "EdDSA bad signature": (
        lambda k: bearer(k.user(USER, key=ED, sign_with=_other_ed_key())),
        UNAUTH,
        "bad_signature",
    ),
    "unknown kid": (lambda k: bearer(k.user(USER, kid="nobody")), UNAUTH, "unknown_key"),
    "empty kid": (lambda k: bearer(k.user(USER, kid="")), UNAUTH, "unknown_key"),
    "no kid with several keys": (lambda k: bearer(_no_kid(k)), UNAUTH, "unknown_key"),
    "expired": (lambda k: bearer(k.user(USER, exp=time.time() - 60)), UNAUTH, "expired"),
    "no exp": (lambda k: bearer(k.user(USER, omit=["exp"])), UNAUTH, "invalid"),
    "no sub": (lambda k: bearer(k.mint(None)), UNAUTH, "invalid"),
    "empty sub": (lambda k: bearer(k.mint("")), UNAUTH, "invalid"),
    "no audience": (lambda k: bearer(k.mint(USER, audience=None)), UNAUTH, "invalid"),
    "alg none": (lambda k: bearer(_unsigned(k)), UNAUTH, "invalid"),
    "HS256 with the Ed25519 public key": (lambda k: bearer(_alg_confusion(k)), UNAUTH, "invalid"),
    "both session and machine": (
        lambda k: bearer(k.user(USER, session_id="s1", machine_id="m1")),
        UNAUTH,
        "malformed",
    ),
    "non-string session claim": (
        lambda k: bearer(k.user(USER, extra={"session_id": 5})),
        UNAUTH,
        "invalid",
    ),
    "service token": (lambda k: bearer(k.service(USER)), DENIED, "wrong_audience"),
    "foreign audience": (
        lambda k: bearer(k.mint(USER, audience="someone-else")),
        DENIED,
        "wrong_audience",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_subscribe_refused(
    case: str, keys: Keys, server: RouterServer, stub: pb_grpc.EventRouterServiceStub
) -> None:
    make_metadata, code, reason = REFUSALS[case]
    metadata = make_metadata(keys)
    auth_before, limits_before = counters(server)
    error = await subscribe_error(stub, None, metadata=metadata)
    assert error.code() == code, (error.code(), error.details())
    auth_after, limits_after = counters(server)
    assert moved(auth_before, auth_after) == {reason: 1}
    assert moved(limits_before, limits_after) == {}
    assert len(server.router.registry) == 0
    await assert_nothing_left(stub, keys)


async def test_secure_mode_ignores_the_user_id_header(
    keys: Keys, stub: pb_grpc.EventRouterServiceStub
) -> None:
    stream = await open_stream(stub, keys.user(USER), metadata=[(USER_ID_METADATA_KEY, "bob")])
    assert stream.opened.user_id == USER
    stream.cancel()


async def test_a_user_receives_only_its_own_events(
    keys: Keys, server: RouterServer, stub: pb_grpc.EventRouterServiceStub
) -> None:
    service = bearer(keys.service())
    alice = await open_stream(stub, keys.user("alice"))
    bob = await open_stream(stub, keys.user("bob"))
    assert (alice.opened.user_id, bob.opened.user_id) == ("alice", "bob")
    for i in range(3):
        sent = await stub.Emit(marker_emit("bob", f"bob-{i}"), metadata=service)
        assert sent.reached == 1
    sent = await stub.Emit(marker_emit("alice", "alice-marker"), metadata=service)
    assert sent.reached == 1
    # alice's first event is her own marker: none of bob's three came before it.
    await expect_markers(alice, ["alice-marker"])
    await expect_markers(bob, ["bob-0", "bob-1", "bob-2"])
    alice.cancel()
    bob.cancel()


@pytest.mark.parametrize(
    ("claim", "allowed", "refused"),
    [
        (
            {"machine_id": "m1"},
            machine_scope("m1"),
            [machine_scope("m2"), user_scope(), session_scope("s1")],
        ),
        (
            {"session_id": "s1"},
            session_scope("s1"),
            [session_scope("s2"), user_scope(), machine_scope("m1")],
        ),
    ],
    ids=["machine-restricted", "session-restricted"],
)
async def test_restricted_token_opens_only_its_scope(
    claim: dict[str, str],
    allowed: rt.ConnectionScope,
    refused: list[rt.ConnectionScope],
    keys: Keys,
    server: RouterServer,
    stub: pb_grpc.EventRouterServiceStub,
) -> None:
    token = keys.user(USER, **claim)
    for scope in refused:
        auth_before, _ = counters(server)
        error = await subscribe_error(stub, token, scope)
        assert error.code() == DENIED, (scope, error.details())
        assert next(iter(claim.values())) in (error.details() or "")
        assert moved(auth_before, counters(server)[0]) == {"scope_not_allowed": 1}
        await assert_nothing_left(stub, keys)
    stream = await open_stream(stub, token, allowed)
    assert stream.opened.scope == allowed
    stream.cancel()


SERVICE_CALLS: dict[str, Callable[[pb_grpc.EventRouterServiceStub, Metadata], object]] = {
    "Emit": lambda s, md: s.Emit(marker_emit(USER, "forged"), metadata=md),
    "EmitBatch": lambda s, md: s.EmitBatch(
        pb.EmitBatchRequest(emits=[marker_emit(USER, "forged")]), metadata=md
    ),
    "GetConnections": lambda s, md: s.GetConnections(
        pb.GetConnectionsRequest(user_id=USER), metadata=md
    ),
    "Disconnect": lambda s, md: s.Disconnect(pb.DisconnectRequest(user_id=USER), metadata=md),
}

CALLER_REFUSALS: dict[str, tuple[Callable[[Keys], Metadata], grpc.StatusCode, str]] = {
    "user token": (lambda k: bearer(k.user(USER)), DENIED, "wrong_audience"),
    "machine-restricted user token": (
        lambda k: bearer(k.user(USER, machine_id="m1")),
        DENIED,
        "wrong_audience",
    ),
    "no credentials": (lambda k: [], UNAUTH, "missing"),
    "insecure user-id header": (lambda k: [(USER_ID_METADATA_KEY, USER)], UNAUTH, "missing"),
    "forged service token": (
        lambda k: bearer(k.service(sign_with=b"\x02" * 32)),
        UNAUTH,
        "bad_signature",
    ),
    "expired service token": (
        lambda k: bearer(k.service(exp=time.time() - 60)),
        UNAUTH,
        "expired",
    ),
}


@pytest.mark.parametrize("rpc", list(SERVICE_CALLS))
@pytest.mark.parametrize("caller", list(CALLER_REFUSALS))
async def test_service_rpcs_refuse_non_service_callers(
    rpc: str,
    caller: str,
    keys: Keys,
    server: RouterServer,
    stub: pb_grpc.EventRouterServiceStub,
) -> None:
    make_metadata, code, reason = CALLER_REFUSALS[caller]
    # A live subscriber: the refused call must neither reach nor end it.
    stream = await open_stream(stub, keys.user(USER))
    auth_before, _ = counters(server)
    call = SERVICE_CALLS[rpc](stub, make_metadata(keys))
    await expect_status(call, code)  # type: ignore[arg-type]
    assert moved(auth_before, counters(server)[0]) == {reason: 1}
    sent = await stub.Emit(marker_emit(USER, "marker"), metadata=bearer(keys.service()))
    assert sent.reached == 1
    await expect_markers(stream, ["marker"])
    stream.cancel()


@pytest.mark.parametrize("key", [HS, ED, ES])
async def test_every_algorithm_verifies(
    key: str, keys: Keys, stub: pb_grpc.EventRouterServiceStub
) -> None:
    stream = await open_stream(stub, keys.user(USER, key=key))
    sent = await stub.Emit(marker_emit(USER, f"via-{key}"), metadata=bearer(keys.service(key=key)))
    assert sent.reached == 1
    await expect_markers(stream, [f"via-{key}"])
    stream.cancel()


async def test_key_rotation_by_kid(tmp_path: Path) -> None:
    old, new = Keys(), Keys()
    path = tmp_path / "rotating.json"
    # Two HS256 secrets told apart only by kid, plus an ES256 key.
    write_jwks(path, {"keys": [old.jwk(HS), new.jwk(HS), new.jwk(ES)]})
    async with secure_server(path) as server, connect(server) as stub:
        for token in (old.user(USER), new.user(USER), new.user(USER, key=ES)):
            (await open_stream(stub, token)).cancel()
        stream = await open_stream(stub, new.user(USER))
        for i, service in enumerate((old.service(), new.service())):
            sent = await stub.Emit(marker_emit(USER, f"m{i}"), metadata=bearer(service))
            assert sent.reached == 1
        await expect_markers(stream, ["m0", "m1"])
        stream.cancel()
        # A token naming one kid but signed with the other key does not verify.
        forged = old.user(USER, kid=new.kids[HS])
        assert (await subscribe_error(stub, forged)).code() == UNAUTH

    write_jwks(path, {"keys": [new.jwk(HS)]})
    async with secure_server(path) as server, connect(server) as stub:
        error = await subscribe_error(stub, old.user(USER))
        assert error.code() == UNAUTH
        assert server.service.security_stats.auth_failures == {"unknown_key": 1}
        await expect_status(
            stub.Emit(marker_emit(USER, "m"), metadata=bearer(old.service())), UNAUTH
        )
        (await open_stream(stub, new.user(USER))).cancel()


async def test_token_without_kid_uses_the_only_key(keys: Keys, tmp_path: Path) -> None:
    path = keys.write(tmp_path / "one.json", [HS])
    async with secure_server(path) as server, connect(server) as stub:
        (await open_stream(stub, _no_kid(keys))).cancel()
        # Still verified against that key.
        forged = jwt.encode(
            {"sub": USER, "aud": "eventrouter:subscriber", "exp": int(time.time()) + 60},
            b"\x03" * 32,
            algorithm="HS256",
        )
        assert (await subscribe_error(stub, forged)).code() == UNAUTH
        assert server.service.security_stats.auth_failures == {"bad_signature": 1}


async def test_stream_ends_unauthenticated_when_its_token_expires(
    keys: Keys, server: RouterServer, stub: pb_grpc.EventRouterServiceStub
) -> None:
    # The verifier accepts a token LEEWAY_S past its exp (clock skew), and the
    # stream lives exactly as long: here it ends about 2 s from now.
    token = keys.user(USER, exp=time.time() - LEEWAY_S + 2)
    stream = await open_stream(stub, token)
    sent = await stub.Emit(marker_emit(USER, "before-expiry"), metadata=bearer(keys.service()))
    assert sent.reached == 1
    await expect_markers(stream, ["before-expiry"])
    error = await stream.ended()
    assert error.code() == UNAUTH
    assert "expired" in (error.details() or "")
    await eventually(lambda: len(server.router.registry) == 0, "expired stream unregistered")
    await assert_nothing_left(stub, keys)
    # The user reconnects with a fresh token.
    (await open_stream(stub, keys.user(USER))).cancel()


async def test_token_within_leeway_is_treated_consistently(
    keys: Keys, server: RouterServer, stub: pb_grpc.EventRouterServiceStub
) -> None:
    # exp is 2-3 s in the past: inside the verifier's leeway (5 s).
    assert LEEWAY_S > 3
    token = keys.user(USER, exp=time.time() - 2)
    auth_before, _ = counters(server)
    call = stub.Subscribe(pb.SubscribeRequest(scope=user_scope()), metadata=bearer(token))
    refused: grpc.aio.AioRpcError | None = None
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            first = await call.read()
    except grpc.aio.AioRpcError as e:
        refused = e
    if refused is not None:
        # Consistent option 1: refused at Subscribe, counted as expired.
        assert refused.code() == UNAUTH
        assert moved(auth_before, counters(server)[0]) == {"expired": 1}
        return
    # Consistent option 2: the stream lives until exp + leeway, so it gets events now.
    assert first.events[0].WhichOneof("event") == "opened"
    try:
        sent = await stub.Emit(marker_emit(USER, "alive"), metadata=bearer(keys.service()))
        assert sent.reached == 1
    finally:
        call.cancel()


async def test_stream_closed_during_first_write_gets_a_status(
    keys: Keys, server: RouterServer, stub: pb_grpc.EventRouterServiceStub
) -> None:
    # Verifies now, and its stream's expiry (exp + leeway) fires right after
    # the `opened` write: the first write is never interrupted, so the closure
    # is reported with a status instead of leaving the client hanging.
    token = keys.user(USER, exp=time.time() - LEEWAY_S + 0.5)
    call = stub.Subscribe(
        pb.SubscribeRequest(scope=user_scope()), metadata=bearer(token), timeout=10
    )
    error = await final_error(call)  # bounded by the call's own deadline
    assert error.code() == UNAUTH, error.details()
    await eventually(lambda: len(server.router.registry) == 0, "connection unregistered")
