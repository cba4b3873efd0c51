"""Hypothesis fuzzing against one live server: raw bytes and semantically wrong messages.

One secure server serves the whole module from its own thread and event loop,
so that Hypothesis can drive it with plain (synchronous) gRPC calls, thousands
of examples reusing one server.  Throughout, a well-behaved subscriber holds a
stream and a control emitter sends it well-formed events; at the end of each
test it must have received exactly those, the server must still serve, and no
connection of the fuzzed users may be left behind.

CI runs ``FUZZ_EXAMPLES`` examples per test; set ``HYPOTHESIS_FUZZ_EXAMPLES``
for a longer run (``make fuzz``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from eventrouter.server import RouterServer, ServerConfig
from eventrouter.server.handlers import SERVICE_NAME
from eventrouter.v1 import events_pb2 as ev
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import routing_pb2 as rt
from tests.security.helpers import Keys, bearer, marker_emit, no_fixed_ports

FUZZ_EXAMPLES = int(os.environ.get("HYPOTHESIS_FUZZ_EXAMPLES", "1500"))
CALL_TIMEOUT_S = 10.0
# The only users fuzzed Subscribe calls can open streams for.
FUZZ_USERS = ("fuzz-a", "fuzz-b")
CONTROL_USER = "control-" + secrets.token_hex(4)
CONTROL_EVERY = 25

T = TypeVar("T")

FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

REQUEST_TYPES: dict[str, type[Message]] = {
    "Subscribe": pb.SubscribeRequest,
    "Emit": pb.EmitRequest,
    "EmitBatch": pb.EmitBatchRequest,
    "GetConnections": pb.GetConnectionsRequest,
    "Disconnect": pb.DisconnectRequest,
}
# What a well-formed (parseable) request may end with; never INTERNAL, UNKNOWN or a hang.
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
}
# What the server answers a request that does not parse: INVALID_ARGUMENT,
# without logging anything (grpc alone would answer UNKNOWN and log a traceback).
UNPARSEABLE = {grpc.StatusCode.INVALID_ARGUMENT}


class _ErrorLog(logging.Handler):
    """Collects ERROR records (a servicer exception is logged by grpc at ERROR).

    A DecodeError logged at ERROR is counted apart: the server must refuse
    requests that do not parse itself, so the count must stay zero.
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.decode_errors = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is not None and isinstance(record.exc_info[1], DecodeError):
            self.decode_errors += 1
        else:
            self.records.append(record)


@dataclass
class Control:
    """A well-behaved subscriber (read on a thread) and what the control emitter sent it."""

    user_id: str
    call: Any
    received: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    ended: list[BaseException] = field(default_factory=list)
    thread: threading.Thread | None = None

    def read_forever(self) -> None:
        try:
            for raw in self.call:
                message = pb.SubscribeResponse.FromString(raw)
                for event in message.events:
                    if event.WhichOneof("event") == "ephemeral":
                        self.received.append(event.ephemeral.activity.session_id)
        except grpc.RpcError as e:
            self.ended.append(e)


@dataclass
class Live:
    keys: Keys
    server: RouterServer
    loop: asyncio.AbstractEventLoop
    channel: grpc.Channel
    control: Control
    baseline: int
    errors: _ErrorLog
    tokens: dict[str, list[tuple[str, str]]]
    counter: list[int] = field(default_factory=lambda: [0])
    outcomes: Counter[tuple[str, grpc.StatusCode]] = field(default_factory=Counter)

    def on_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop (its state is only touched there)."""

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(CALL_TIMEOUT_S)

    def unary(self, method: str, request: bytes, metadata: list[tuple[str, str]]) -> Any:
        """(status, response bytes or None) of a raw unary call."""
        stub = self.channel.unary_unary(f"/{SERVICE_NAME}/{method}")
        try:
            response = stub(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as e:
            return e.code(), None
        return grpc.StatusCode.OK, response

    def subscribe(self, request: bytes, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
        """Status of a raw Subscribe; an opened stream must start with `opened` (then cancel)."""
        stub = self.channel.unary_stream(f"/{SERVICE_NAME}/Subscribe")
        call = stub(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
        try:
            first = next(call)
        except grpc.RpcError as e:
            return e.code()
        except StopIteration:
            raise AssertionError("Subscribe ended with OK and no event") from None
        finally:
            call.cancel()
        events = pb.SubscribeResponse.FromString(first).events
        assert events[0].WhichOneof("event") == "opened", events
        return grpc.StatusCode.OK

    def control_emit(self) -> None:
        """Every CONTROL_EVERY calls, a well-formed event for the control subscriber."""
        self.counter[0] += 1
        if self.counter[0] % CONTROL_EVERY:
            return
        marker = f"control-{len(self.control.sent)}"
        code, response = self.unary(
            "Emit",
            marker_emit(self.control.user_id, marker).SerializeToString(),
            self.tokens["service"],
        )
        assert code == grpc.StatusCode.OK
        assert pb.EmitResponse.FromString(response).reached == 1
        self.control.sent.append(marker)

    def assert_healthy(self) -> None:
        """The control stream got exactly what was sent; nothing of the fuzz is left."""
        self.control_emit_now("final")
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while len(self.control.received) < len(self.control.sent) and not self.control.ended:
            assert time.monotonic() < deadline, "control subscriber stopped receiving"
            time.sleep(0.01)
        assert not self.control.ended, self.control.ended
        assert self.control.received == self.control.sent
        service = self.tokens["service"]
        for user in FUZZ_USERS:
            while True:
                code, raw = self.unary(
                    "GetConnections",
                    pb.GetConnectionsRequest(user_id=user).SerializeToString(),
                    service,
                )
                assert code == grpc.StatusCode.OK
                if not pb.GetConnectionsResponse.FromString(raw).connections:
                    break
                assert time.monotonic() < deadline, f"connections of {user} left behind"
                time.sleep(0.01)
        while self.on_loop(lambda: len(self.server.router.registry)) != self.baseline:
            assert time.monotonic() < deadline, "registry did not return to its baseline"
            time.sleep(0.01)
        assert self.on_loop(lambda: self.server.service.state.handshakes) == 0
        assert self.errors.records == [], [r.getMessage() for r in self.errors.records]
        assert self.errors.decode_errors == 0, "a request that does not parse was logged"

    def control_emit_now(self, marker: str) -> None:
        code, _ = self.unary(
            "Emit",
            marker_emit(self.control.user_id, marker).SerializeToString(),
            self.tokens["service"],
        )
        assert code == grpc.StatusCode.OK
        self.control.sent.append(marker)


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


def _submit(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, loop)
    return future.result(CALL_TIMEOUT_S)


@pytest.fixture(scope="module")
def live(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    keys_file = keys.write(tmp_path_factory.mktemp("fuzz-keys") / "keys.json")
    errors = _ErrorLog()
    logging.getLogger().addHandler(errors)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=_run_loop, args=(loop,), name="fuzz-server", daemon=True)
    thread.start()

    async def start() -> RouterServer:
        config = ServerConfig(listen="127.0.0.1:0", keys_file=str(keys_file), **no_fixed_ports())
        server = RouterServer(config)
        await server.start()
        return server

    server = _submit(loop, start())
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    control_user = CONTROL_USER
    tokens = {
        "none": [],
        "service": bearer(keys.service("fuzzer")),
        "user": bearer(keys.user("fuzz-a")),
        "machine": bearer(keys.user("fuzz-a", machine_id="m1")),
        "session": bearer(keys.user("fuzz-b", session_id="s1")),
        "garbage": [("authorization", "Bearer x.y.z")],
    }
    call = channel.unary_stream(f"/{SERVICE_NAME}/Subscribe")(
        pb.SubscribeRequest(scope=rt.ConnectionScope(user=rt.UserScope())).SerializeToString(),
        metadata=bearer(keys.user(control_user)),
    )
    opened = pb.SubscribeResponse.FromString(next(call)).events[0]
    assert opened.WhichOneof("event") == "opened"
    control = Control(control_user, call)
    control.thread = threading.Thread(target=control.read_forever, name="control", daemon=True)
    control.thread.start()
    baseline = _submit(loop, _len_registry(server))
    assert baseline == 1
    try:
        yield Live(keys, server, loop, channel, control, baseline, errors, tokens)
    finally:
        call.cancel()
        control.thread.join(CALL_TIMEOUT_S)
        channel.close()
        _submit(loop, server.stop(grace_s=0))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(CALL_TIMEOUT_S)
        loop.close()
        logging.getLogger().removeHandler(errors)


async def _len_registry(server: RouterServer) -> int:
    return len(server.router.registry)


# -- strategies ----------------------------------------------------------------

# Two thirds well-formed ids, one third empty, blank, control characters, unicode, huge.
_good_ids = st.sampled_from(["fuzz-a", "fuzz-b", "u1", "s1", "m1", "é-ü"])
_bad_ids = st.one_of(
    st.sampled_from(["", " ", "a b", "\x00", "\u200b", "\n", "tab\t"]),
    st.text(max_size=12),
    st.integers(250, 3000).map(lambda n: "x" * n),
)
ids = st.one_of(_good_ids, _good_ids, _bad_ids).filter(lambda s: s != CONTROL_USER)
ints64 = st.integers(-(2**63), 2**63 - 1)

recipient_filters = st.one_of(
    st.none(),
    st.just(rt.RecipientFilter()),
    st.just(
        rt.RecipientFilter(all_user_authenticated_connections=rt.AllUserAuthenticatedConnections())
    ),
    st.just(rt.RecipientFilter(user_scoped_only=rt.UserScopedOnly())),
    ids.map(
        lambda i: rt.RecipientFilter(
            all_interested_in_session=rt.AllInterestedInSession(session_id=i)
        )
    ),
    ids.map(lambda i: rt.RecipientFilter(machine_scoped_only=rt.MachineScopedOnly(machine_id=i))),
    ids.map(lambda i: rt.RecipientFilter(machine_only=rt.MachineOnly(machine_id=i))),
)

update_events = st.one_of(
    st.just(ev.UpdateEvent()),
    st.builds(
        lambda uid, status, ts: ev.UpdateEvent(
            relationship_updated=ev.RelationshipUpdated(uid=uid, status=status, timestamp_ms=ts)
        ),
        ids,
        st.integers(-3, 12),  # UNSPECIFIED and values outside the enum included
        ints64,
    ),
    ids.map(lambda i: ev.UpdateEvent(delete_session=ev.DeleteSession(session_id=i))),
    st.lists(st.tuples(st.text(max_size=8), st.none() | st.text(max_size=8)), max_size=4).map(
        lambda kv: ev.UpdateEvent(
            kv_batch_update=ev.KvBatchUpdate(
                changes=[ev.KvChange(key=k, value=v, version=1) for k, v in kv]
            )
        )
    ),
    st.integers(0, 3000).map(
        lambda n: ev.UpdateEvent(new_feed_post=ev.NewFeedPost(id="p", cursor="c" * n))
    ),
)

updates = st.builds(
    lambda uid, seq, body, at: ev.UpdatePayload(id=uid, seq=seq, body=body, created_at_ms=at),
    st.one_of(st.just(""), st.text(min_size=1, max_size=10), st.text(min_size=1, max_size=10)),
    ints64,
    update_events,
    ints64,
)

usage_entries = st.lists(
    st.builds(
        lambda k, v: ev.UsageEntry(key=k, value=v),
        st.sampled_from(["a", "b", ""]),  # duplicates are invalid
        st.floats(allow_nan=True, allow_infinity=True),
    ),
    max_size=4,
)

ephemerals = st.one_of(
    st.just(ev.EphemeralPayload()),
    st.builds(
        lambda s, t: ev.EphemeralPayload(
            activity=ev.SessionActivity(session_id=s, active=True, thinking=t)
        ),
        ids,
        st.none() | st.booleans(),
    ),
    ids.map(lambda m: ev.EphemeralPayload(machine_activity=ev.MachineActivity(machine_id=m))),
    st.builds(
        lambda s, tokens, cost: ev.EphemeralPayload(
            usage=ev.Usage(session_id=s, key="k", tokens=tokens, cost=cost)
        ),
        ids,
        usage_entries,
        usage_entries,
    ),
    ids.map(lambda m: ev.EphemeralPayload(machine_status=ev.MachineStatus(machine_id=m))),
)


def _emit(
    user: str,
    payload: ev.UpdatePayload | ev.EphemeralPayload | None,
    recipient_filter: rt.RecipientFilter | None,
    skip: str,
    key: str,
) -> pb.EmitRequest:
    request = pb.EmitRequest(user_id=user, skip_connection_id=skip, idempotency_key=key)
    if isinstance(payload, ev.UpdatePayload):
        request.update.CopyFrom(payload)
    elif isinstance(payload, ev.EphemeralPayload):
        request.ephemeral.CopyFrom(payload)
    if recipient_filter is not None:
        request.recipient_filter.CopyFrom(recipient_filter)
    return request


emits = st.builds(
    _emit,
    ids,
    st.one_of(st.none(), updates, ephemerals, ephemerals),
    recipient_filters,
    st.one_of(st.just(""), st.text(max_size=10)),
    st.one_of(st.just(""), st.text(max_size=10)),
)

scopes = st.one_of(
    st.just(rt.ConnectionScope()),
    st.just(rt.ConnectionScope(user=rt.UserScope())),
    ids.map(lambda i: rt.ConnectionScope(session=rt.SessionScope(session_id=i))),
    ids.map(lambda i: rt.ConnectionScope(machine=rt.MachineScope(machine_id=i))),
)


def _subscribe(
    scope: rt.ConnectionScope, resume: tuple[int, str] | None, heartbeat: int
) -> pb.SubscribeRequest:
    request = pb.SubscribeRequest(scope=scope, heartbeat_interval_ms=heartbeat)
    if resume is not None:
        request.resume_from.offset, request.resume_from.epoch = resume
    return request


subscribes = st.builds(
    _subscribe,
    scopes,
    st.none() | st.tuples(st.integers(0, 2**64 - 1), st.text(max_size=12)),
    st.integers(0, 2**32 - 1),
)


def _finish(request: pb.DisconnectRequest, reason: str, revoke: bool) -> pb.DisconnectRequest:
    request.reason, request.revoke = reason, revoke
    return request


disconnects = st.builds(
    _finish,
    st.one_of(
        st.just(pb.DisconnectRequest()),
        ids.map(lambda u: pb.DisconnectRequest(user_id=u)),
        ids.map(lambda c: pb.DisconnectRequest(connection_id=c)),
        st.builds(
            lambda u, m: pb.DisconnectRequest(machine=pb.MachineSelector(user_id=u, machine_id=m)),
            ids,
            ids,
        ),
        st.builds(
            lambda u, s: pb.DisconnectRequest(session=pb.SessionSelector(user_id=u, session_id=s)),
            ids,
            ids,
        ),
        ids.map(lambda t: pb.DisconnectRequest(token_id=t)),
    ),
    st.text(max_size=20),
    st.booleans(),
)

messages: st.SearchStrategy[tuple[str, Message]] = st.one_of(
    subscribes.map(lambda m: ("Subscribe", m)),
    emits.map(lambda m: ("Emit", m)),
    st.lists(emits, max_size=5).map(lambda e: ("EmitBatch", pb.EmitBatchRequest(emits=e))),
    ids.map(lambda u: ("GetConnections", pb.GetConnectionsRequest(user_id=u))),
    disconnects.map(lambda m: ("Disconnect", m)),
)


def _mutate(data: bytes, index: int, value: int) -> bytes:
    if not data:
        return bytes([value])
    index %= len(data)
    return data[:index] + bytes([value]) + data[index + 1 :]


raw_requests = st.one_of(
    st.binary(max_size=256),
    # Some valid message (of any request type: type confusion), as is or with a byte replaced.
    messages.map(lambda m: m[1].SerializeToString()),
    st.builds(
        _mutate,
        messages.map(lambda m: m[1].SerializeToString()),
        st.integers(0, 255),
        st.integers(0, 255),
    ),
)

# "right": the credential kind the RPC expects; the rest are wrong for most RPCs.
CREDENTIALS = st.sampled_from(
    ["right"] * 6 + ["none", "garbage", "user", "service", "machine", "session"]
)


def _metadata(live: Live, method: str, credential: str, pick: int) -> list[tuple[str, str]]:
    if credential != "right":
        return live.tokens[credential]
    if method == "Subscribe":
        return live.tokens[("user", "machine", "session")[pick % 3]]
    return live.tokens["service"]


def _parses(kind: type[Message], data: bytes) -> bool:
    try:
        kind.FromString(data)
    except DecodeError:
        return False
    return True


# -- (a) arbitrary bytes -----------------------------------------------------


def test_arbitrary_bytes_to_every_rpc(live: Live) -> None:
    @FUZZ_SETTINGS
    @given(data=raw_requests, credential=CREDENTIALS, pick=st.integers(0, 2))
    def fuzz(data: bytes, credential: str, pick: int) -> None:
        for method, kind in REQUEST_TYPES.items():
            metadata = _metadata(live, method, credential, pick)
            if method == "Subscribe":
                code = live.subscribe(data, metadata)
            else:
                code, _ = live.unary(method, data, metadata)
            event(f"{method}: {code.name}")
            live.outcomes[(method, code)] += 1
            assert code != grpc.StatusCode.DEADLINE_EXCEEDED, method
            if _parses(kind, data):
                assert code in ALLOWED, (method, code, data)
            else:
                # The server refuses what does not parse, precisely and quietly.
                assert code in UNPARSEABLE, (method, code, data)
            live.control_emit()

    live.outcomes.clear()
    fuzz()
    live.assert_healthy()
    if FUZZ_EXAMPLES >= 1000:
        # The strategies reach past the parser into the service, for every RPC.
        for method in REQUEST_TYPES:
            assert live.outcomes[(method, grpc.StatusCode.INVALID_ARGUMENT)] > 0, method


# -- (b) structurally valid, semantically wrong ------------------------------


def test_semantically_wrong_messages(live: Live) -> None:
    @FUZZ_SETTINGS
    @given(message=messages, credential=CREDENTIALS, pick=st.integers(0, 2))
    def fuzz(message: tuple[str, Message], credential: str, pick: int) -> None:
        method, request = message
        metadata = _metadata(live, method, credential, pick)
        raw = request.SerializeToString()
        if method == "Subscribe":
            code = live.subscribe(raw, metadata)
        else:
            code, _ = live.unary(method, raw, metadata)
        event(f"{method}: {code.name}")
        live.outcomes[(method, code)] += 1
        assert code in ALLOWED, (method, code, request)
        if credential in ("none", "garbage"):
            assert code == grpc.StatusCode.UNAUTHENTICATED
        live.control_emit()

    live.outcomes.clear()
    fuzz()
    live.assert_healthy()
    if FUZZ_EXAMPLES >= 1000:
        for method in REQUEST_TYPES:
            for code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT):
                assert live.outcomes[(method, code)] > 0, (method, code)
