"""Keys, tokens, secure servers and small gRPC helpers for the security suite.

Everything here talks to real ``grpc.aio`` servers on free loopback ports:
the keyset is written to a JWKS file (mode 0600) that the server loads the
way ``eventrouter serve --keys-file`` does, and the tokens are minted here
with PyJWT, independently of the server's own ``KeySet.mint``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm

from eventrouter.server import RouterServer, ServerConfig
from eventrouter.server.auth import AUTHORIZATION_METADATA_KEY
from eventrouter.server.security.tokens import SERVICE_AUDIENCE, SUBSCRIBER_AUDIENCE
from eventrouter.v1 import events_pb2 as ev
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from eventrouter.v1 import routing_pb2 as rt
from tests.support.servers import running_server

__all__ = [
    "SERVICE_AUDIENCE",
    "SUBSCRIBER_AUDIENCE",
    "Keys",
    "Stream",
    "bearer",
    "connect",
    "counters",
    "eventually",
    "expect_markers",
    "expect_status",
    "final_error",
    "machine_scope",
    "marker_emit",
    "moved",
    "no_fixed_ports",
    "open_stream",
    "secure_server",
    "session_scope",
    "subscribe_error",
    "update_emit",
    "user_scope",
    "write_jwks",
]

READ_TIMEOUT_S = 5.0
Metadata = list[tuple[str, str]]

HS = "hs"
ED = "ed"
ES = "es"


def _kid(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@dataclass
class Keys:
    """One HS256 secret, one Ed25519 and one P-256 key pair, each with its own kid.

    ``kids`` maps the short names ``hs`` / ``ed`` / ``es`` to the kids written
    in the JWKS.  The JWKS the server gets holds the HS256 secret and only the
    *public* halves of the asymmetric keys (an issuer keeps its private key).
    """

    hs_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    ed_private: ed25519.Ed25519PrivateKey = field(
        default_factory=ed25519.Ed25519PrivateKey.generate
    )
    es_private: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    kids: dict[str, str] = field(
        default_factory=lambda: {HS: _kid("hs"), ED: _kid("ed"), ES: _kid("es")}
    )

    def jwk(self, name: str) -> dict[str, Any]:
        if name == HS:
            jwk: dict[str, Any] = dict(HMACAlgorithm.to_jwk(self.hs_secret, as_dict=True))
            jwk["alg"] = "HS256"
        elif name == ED:
            jwk = dict(OKPAlgorithm.to_jwk(self.ed_private.public_key(), as_dict=True))
            jwk["alg"] = "EdDSA"
        elif name == ES:
            jwk = dict(ECAlgorithm.to_jwk(self.es_private.public_key(), as_dict=True))
            jwk["alg"] = "ES256"
        else:
            raise KeyError(name)
        jwk["kid"] = self.kids[name]
        jwk["use"] = "sig"
        return jwk

    def jwks(self, names: Iterable[str] = (HS, ED, ES)) -> dict[str, Any]:
        return {"keys": [self.jwk(n) for n in names]}

    def write(self, path: Path, names: Iterable[str] = (HS, ED, ES)) -> Path:
        """Write the JWKS to ``path`` with mode 0600 (replacing any earlier file)."""
        return write_jwks(path, self.jwks(names))

    def signing_key(self, name: str) -> tuple[Any, str]:
        if name == HS:
            return self.hs_secret, "HS256"
        if name == ED:
            return self.ed_private, "EdDSA"
        if name == ES:
            return self.es_private, "ES256"
        raise KeyError(name)

    def mint(
        self,
        subject: str | None,
        *,
        audience: str | None = SUBSCRIBER_AUDIENCE,
        key: str = HS,
        ttl_s: float = 3600,
        exp: float | None = None,
        session_id: str | None = None,
        machine_id: str | None = None,
        token_id: str | None = None,
        kid: str | None = None,
        sign_with: Any = None,
        extra: Mapping[str, Any] | None = None,
        omit: Iterable[str] = (),
    ) -> str:
        """A JWT; ``None``/``omit`` leave claims out, ``sign_with`` forges with another key."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iat": now,
            "exp": int(exp) if exp is not None else now + int(ttl_s),
            "jti": token_id or secrets.token_hex(8),
        }
        if subject is not None:
            claims["sub"] = subject
        if audience is not None:
            claims["aud"] = audience
        if session_id is not None:
            claims["session_id"] = session_id
        if machine_id is not None:
            claims["machine_id"] = machine_id
        claims.update(extra or {})
        for name in omit:
            claims.pop(name, None)
        signing_key, algorithm = self.signing_key(key)
        if sign_with is not None:
            signing_key = sign_with
        headers = {"kid": kid if kid is not None else self.kids[key]}
        return jwt.encode(claims, signing_key, algorithm=algorithm, headers=headers)

    def user(self, user_id: str, **kwargs: Any) -> str:
        return self.mint(user_id, audience=SUBSCRIBER_AUDIENCE, **kwargs)

    def service(self, name: str = "svc-test", **kwargs: Any) -> str:
        return self.mint(name, audience=SERVICE_AUDIENCE, **kwargs)


def write_jwks(path: Path, jwks: Mapping[str, Any]) -> Path:
    """Write a JWKS document to ``path`` with mode 0600 (replacing any earlier file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(jwks, f)
    os.chmod(path, 0o600)
    return path


def bearer(token: str) -> Metadata:
    return [(AUTHORIZATION_METADATA_KEY, f"Bearer {token}")]


def no_fixed_ports() -> dict[str, Any]:
    """Overrides that keep a test server off fixed ports (the metrics endpoint, if any)."""
    names = {f.name for f in dataclasses.fields(ServerConfig)}
    return {"metrics_listen": ""} if "metrics_listen" in names else {}


@contextlib.asynccontextmanager
async def secure_server(keys_file: Path, **overrides: Any) -> AsyncIterator[RouterServer]:
    """A started server in the secure default mode (tokens verified with ``keys_file``)."""
    options = no_fixed_ports() | {"insecure": False, "keys_file": str(keys_file)} | overrides
    async with running_server(**options) as server:
        yield server


@contextlib.asynccontextmanager
async def connect(
    server: RouterServer, credentials: grpc.ChannelCredentials | None = None
) -> AsyncIterator[pb_grpc.EventRouterServiceStub]:
    target = f"127.0.0.1:{server.port}"
    channel = (
        grpc.aio.insecure_channel(target)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials)
    )
    async with channel:
        yield pb_grpc.EventRouterServiceStub(channel)


def user_scope() -> rt.ConnectionScope:
    return rt.ConnectionScope(user=rt.UserScope())


def session_scope(session_id: str) -> rt.ConnectionScope:
    return rt.ConnectionScope(session=rt.SessionScope(session_id=session_id))


def machine_scope(machine_id: str) -> rt.ConnectionScope:
    return rt.ConnectionScope(machine=rt.MachineScope(machine_id=machine_id))


def marker_emit(user_id: str, marker: str) -> pb.EmitRequest:
    """An ephemeral event to every connection of ``user_id``, tagged with ``marker``."""
    return pb.EmitRequest(
        user_id=user_id,
        ephemeral=ev.EphemeralPayload(
            activity=ev.SessionActivity(session_id=marker, active=True, active_at_ms=1)
        ),
    )


def update_emit(user_id: str, update_id: str, size: int = 0) -> pb.EmitRequest:
    """A persistent update (a KV batch whose value pads it to about ``size`` bytes)."""
    return pb.EmitRequest(
        user_id=user_id,
        update=ev.UpdatePayload(
            id=update_id,
            seq=1,
            body=ev.UpdateEvent(
                kv_batch_update=ev.KvBatchUpdate(
                    changes=[ev.KvChange(key="k", value="x" * size, version=1)]
                )
            ),
        ),
    )


def _markers(events: Sequence[pb.StreamEvent]) -> list[str]:
    out = []
    for event in events:
        kind = event.WhichOneof("event")
        if kind == "ephemeral":
            out.append(event.ephemeral.activity.session_id)
        elif kind == "update":
            out.append("update:" + event.update.payload.id)
    return out


class Stream:
    """An open Subscribe call (its ``opened`` event already read)."""

    def __init__(self, call: Any, opened: pb.ConnectionOpened) -> None:
        self.call = call
        self.opened = opened

    @property
    def connection_id(self) -> str:
        return self.opened.connection_id

    async def next_markers(self) -> list[str]:
        """Markers (and ``update:<id>``) of the next message; heartbeats are skipped."""
        while True:
            async with asyncio.timeout(READ_TIMEOUT_S):
                message = await self.call.read()
            if message is grpc.aio.EOF:
                raise EOFError("stream ended")
            markers = _markers(message.events)
            if markers:
                return markers

    async def ended(self) -> grpc.aio.AioRpcError:
        """Read until the stream fails; the error (bounded wait)."""
        async with asyncio.timeout(READ_TIMEOUT_S):
            return await final_error(self.call)

    def cancel(self) -> None:
        self.call.cancel()


async def open_stream(
    stub: pb_grpc.EventRouterServiceStub,
    token: str | None,
    scope: rt.ConnectionScope | None = None,
    *,
    metadata: Metadata | None = None,
) -> Stream:
    """Subscribe and read the ``opened`` event (fails the test if the stream is refused)."""
    md = list(metadata or []) + (bearer(token) if token is not None else [])
    call = stub.Subscribe(pb.SubscribeRequest(scope=scope or user_scope()), metadata=md)
    async with asyncio.timeout(READ_TIMEOUT_S):
        first = await call.read()
    assert first is not grpc.aio.EOF, "stream ended before it opened"
    event = first.events[0]
    assert event.WhichOneof("event") == "opened", event
    return Stream(call, event.opened)


async def subscribe_error(
    stub: pb_grpc.EventRouterServiceStub,
    token: str | None,
    scope: rt.ConnectionScope | None = None,
    *,
    metadata: Metadata | None = None,
    request: pb.SubscribeRequest | None = None,
) -> grpc.aio.AioRpcError:
    """Subscribe expecting refusal before any event: the error status."""
    md = list(metadata or []) + (bearer(token) if token is not None else [])
    if request is None:
        request = pb.SubscribeRequest(scope=scope or user_scope())
    call = stub.Subscribe(request, metadata=md)
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            message = await call.read()
    except grpc.aio.AioRpcError as e:
        return e
    call.cancel()
    raise AssertionError(f"Subscribe was not refused; first message: {message}")


async def expect_status(
    call: Awaitable[Any], code: grpc.StatusCode, contains: str = ""
) -> grpc.aio.AioRpcError:
    """Await a unary call that must fail with ``code`` (and ``contains`` in its details)."""
    error: grpc.aio.AioRpcError | None = None
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            response = await call
    except grpc.aio.AioRpcError as e:
        error = e
    if error is None:
        raise AssertionError(f"expected {code}, the call succeeded: {response}")
    assert error.code() == code, (error.code(), error.details())
    assert contains in (error.details() or ""), error.details()
    return error


async def final_error(call: Any) -> grpc.aio.AioRpcError:
    """Read a stream until it fails; its error (a stream ending OK fails the test)."""
    try:
        while await call.read() is not grpc.aio.EOF:
            pass
    except grpc.aio.AioRpcError as e:
        return e
    raise AssertionError("stream ended with OK, expected an error status")


async def expect_markers(stream: Stream, expected: Sequence[str]) -> None:
    """The stream's next events are exactly ``expected`` (in order, possibly batched)."""
    got: list[str] = []
    while len(got) < len(expected):
        got += await stream.next_markers()
    assert got == list(expected)


async def eventually(
    predicate: Callable[[], bool], what: str, timeout_s: float = READ_TIMEOUT_S
) -> None:
    """Poll ``predicate`` until it holds (bounded); fail with ``what`` otherwise."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.01)


def counters(server: RouterServer) -> tuple[Counter[str], Counter[str]]:
    """Copies of (auth_failures, limit_rejections), to diff against later."""
    stats = server.service.security_stats
    return Counter(stats.auth_failures), Counter(stats.limit_rejections)


def moved(before: Counter[str], after: Counter[str]) -> dict[str, int]:
    """The counters that changed, with by how much."""
    return {k: after[k] - before[k] for k in after.keys() | before.keys() if after[k] != before[k]}
