"""The routing rule on the embedded ``EventRouter``: the full matrix, a stateful
property test against the reference model, and the index's cost (structurally).

No sockets: events are read by draining each connection's queue and parsing
the frames with the generated ``SubscribeResponse``.
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from eventrouter.server.core.connections import ClientConnection, MachineScopedConnection
from eventrouter.server.core.filters import AllInterestedInSession, MachineOnly
from eventrouter.server.core.queue import ConnectionQueue
from eventrouter.server.core.router import EventRouter, ResumeStatus
from tests.support.model import (
    MATRIX_FILTERS,
    MATRIX_SCOPES,
    MATRIX_SPEC,
    USER,
    Delivered,
    Filter,
    RoutingModel,
    Scope,
    core_connection,
    core_filter,
    ephemeral_payload,
    machine,
    proto_filter,
    routes,
    session,
    update_payload,
)
from tests.support.model import take_queued as take

SCOPES, FILTERS, SPEC = MATRIX_SCOPES, MATRIX_FILTERS, MATRIX_SPEC


# ---------------------------------------------------------------------------
# The matrix
# ---------------------------------------------------------------------------


def test_model_agrees_with_the_table() -> None:
    for flt, scope in itertools.product(FILTERS, SCOPES):
        assert routes(flt, scope) == (str(scope) in SPEC[flt.kind]), (flt, scope)


@pytest.mark.parametrize("target", ["u1", "u2"])
@pytest.mark.parametrize("skip_mode", ["none", "itself", "another"])
@pytest.mark.parametrize("flt", FILTERS, ids=str)
@pytest.mark.parametrize("scope_index", range(len(SCOPES)), ids=[str(s) for s in SCOPES])
def test_routing_matrix(scope_index: int, flt: Filter, skip_mode: str, target: str) -> None:
    scope = SCOPES[scope_index]
    router = EventRouter()
    model = RoutingModel()
    conns: dict[str, list[ClientConnection]] = {}
    for user in ("u1", "u2"):
        conns[user] = []
        for sc in SCOPES:
            conn = core_connection(user, sc)
            router.add_connection(user, conn)
            model.add(user, conn.connection_id, sc)
            conns[user].append(conn)
    other = "u2" if target == "u1" else "u1"
    recipient = conns[target][scope_index]
    skip = {
        "none": None,
        "itself": recipient.connection_id,
        "another": conns[target][(scope_index + 1) % len(SCOPES)].connection_id,
    }[skip_mode]

    # The update goes through the core filter, the ephemeral through the proto one.
    update = router.emit_update(target, update_payload("upd"), core_filter(flt), skip)
    ephemeral = router.emit_ephemeral(target, ephemeral_payload("eph"), proto_filter(flt), skip)

    expected = str(scope) in SPEC[flt.kind] and skip_mode != "itself"
    got = take(recipient)
    assert got == (
        [Delivered("update", "upd", 1), Delivered("ephemeral", "eph")] if expected else []
    )
    assert take(conns[other][scope_index]) == [], "an event crossed users"

    model_reached, model_offset = model.emit_update(target, "upd", flt, skip)
    assert update.reached == model_reached == ephemeral.reached
    assert update.offset == model_offset == 1
    assert not update.duplicate
    assert not ephemeral.duplicate
    # Every other connection of both users too: exactly the model's recipients.
    reached_ids = {c.connection_id for c in conns[target] if c is not recipient and take(c)}
    if expected:
        reached_ids.add(recipient.connection_id)
    assert reached_ids == set(model.recipients(target, flt, skip))
    assert all(take(c) == [] for c in conns[other])


# ---------------------------------------------------------------------------
# Stateful property test against the model
# ---------------------------------------------------------------------------

USERS = ("ua", "ub", "uc")
SCOPE_POOL = [USER, session("s1"), session("s2"), machine("m1"), machine("m2")]
FILTER_POOL = [
    Filter("all"),
    Filter("user_scoped_only"),
    *(Filter("interested_in_session", s) for s in ("s1", "s2", "s3")),
    *(Filter("machine_scoped_only", m) for m in ("m1", "m2", "m3")),
    *(Filter("machine_only", m) for m in ("m1", "m2", "m3")),
]


class RouterVersusModel(RuleBasedStateMachine):
    """Random add/remove/emit/resume sequences; the router must do what the model does."""

    def __init__(self) -> None:
        super().__init__()
        self.router = EventRouter()
        self.model = RoutingModel()
        self.live: dict[str, ClientConnection] = {}
        self.removed: dict[str, ClientConnection] = {}
        self.got: dict[str, list[Delivered]] = {}
        self.epochs: dict[str, str] = {}
        self.counter = itertools.count()

    def _epoch(self, user: str, epoch: str) -> None:
        assert self.epochs.setdefault(user, epoch) == epoch, "epoch changed without a restart"

    def _pick_skip(self, data: st.DataObject) -> str | None:
        mode = data.draw(st.sampled_from(["none", "live", "removed", "unknown"]))
        if mode == "live" and self.live:
            return str(data.draw(st.sampled_from(sorted(self.live))))
        if mode == "removed" and self.removed:
            return str(data.draw(st.sampled_from(sorted(self.removed))))
        if mode == "unknown":
            return "c_unknown"
        return None

    @rule(
        user=st.sampled_from(USERS),
        scope=st.sampled_from(SCOPE_POOL),
        back=st.none() | st.integers(0, 6),
    )
    def add(self, user: str, scope: Scope, back: int | None) -> None:
        conn = core_connection(user, scope)
        resume: tuple[int, str] | None = None
        if back is not None and user in self.epochs:
            resume = (max(0, self.model.head(user) - back), self.epochs[user])
        opened = self.router.add_connection(user, conn, resume)
        replay = self.model.add(
            user, conn.connection_id, scope, resume[0] if resume is not None else None
        )
        self._epoch(user, opened.epoch)
        # A resumed stream starts at the position asked for, a fresh one at the head.
        expected_offset = resume[0] if resume is not None else self.model.head(user)
        assert opened.offset == expected_offset
        if resume is None:
            assert opened.status is ResumeStatus.NOT_REQUESTED
        else:
            assert opened.status is ResumeStatus.RESUMED, opened
            assert opened.replayed == len(replay)
        self.live[conn.connection_id] = conn
        self.got[conn.connection_id] = []

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.live)))
        conn = self.live.pop(cid)
        self.got[cid] += take(conn)
        self.router.remove_connection(conn.user_id, conn)
        self.router.remove_connection(conn.user_id, conn)  # idempotent
        self.model.remove(cid)
        self.removed[cid] = conn

    @rule(
        user=st.sampled_from(USERS),
        flt=st.sampled_from(FILTER_POOL),
        as_proto=st.booleans(),
        data=st.data(),
    )
    def emit_update(self, user: str, flt: Filter, as_proto: bool, data: st.DataObject) -> None:
        skip = self._pick_skip(data)
        event_id = f"u{next(self.counter)}"
        target = proto_filter(flt) if as_proto else core_filter(flt)
        result = self.router.emit_update(user, update_payload(event_id), target, skip)
        reached, offset = self.model.emit_update(user, event_id, flt, skip)
        assert (result.reached, result.offset, result.duplicate) == (reached, offset, False)
        self._epoch(user, result.epoch)

    @rule(user=st.sampled_from(USERS), flt=st.sampled_from(FILTER_POOL), data=st.data())
    def emit_ephemeral(self, user: str, flt: Filter, data: st.DataObject) -> None:
        skip = self._pick_skip(data)
        event_id = f"e{next(self.counter)}"
        result = self.router.emit_ephemeral(
            user, ephemeral_payload(event_id), core_filter(flt), skip
        )
        assert result.reached == self.model.emit_ephemeral(user, event_id, flt, skip)
        assert (result.offset, result.epoch) == (0, "")

    @invariant()
    def connections_receive_what_the_model_says(self) -> None:
        for cid, conn in self.live.items():
            self.got[cid] += take(conn)
            assert self.got[cid] == self.model.received[cid], cid
        for cid, conn in self.removed.items():
            assert conn.queue is not None
            assert not conn.queue.has_pending(), "routed after removal"
            assert self.got[cid] == self.model.received[cid], cid
        for user in USERS:
            listed = [c.connection_id for c in self.router.get_connections(user)]
            assert listed == [c.connection_id for c in self.model.connections(user)]

    @invariant()
    def offsets_count_updates_per_user(self) -> None:
        for cid, got in self.got.items():
            offsets = [d.offset for d in got if d.kind == "update"]
            assert offsets == sorted(set(offsets)), f"{cid} got offsets out of order: {offsets}"


RouterVersusModel.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_router_matches_model = RouterVersusModel.TestCase


# ---------------------------------------------------------------------------
# Index cost, asserted structurally
# ---------------------------------------------------------------------------


class CountingQueue(ConnectionQueue):
    """Counts the frames offered to it."""

    __slots__ = ("offered",)

    def __init__(self) -> None:
        super().__init__()
        self.offered = 0

    def push_update(self, *args: Any, **kwargs: Any) -> int:
        self.offered += 1
        return super().push_update(*args, **kwargs)

    def push_ephemeral(self, *args: Any, **kwargs: Any) -> int:
        self.offered += 1
        return super().push_ephemeral(*args, **kwargs)


class SpyMachine(MachineScopedConnection):
    """A daemon connection that records every attribute read while armed."""

    armed: ClassVar[bool] = False
    touched: ClassVar[set[int]] = set()

    def __getattribute__(self, name: str) -> Any:
        if SpyMachine.armed:
            SpyMachine.touched.add(id(self))
        return object.__getattribute__(self, name)


def test_session_emit_touches_only_its_buckets() -> None:
    router = EventRouter()
    daemons = [SpyMachine("u", machine_id=f"m{i}", queue=CountingQueue()) for i in range(10_000)]
    for d in daemons:
        router.add_connection("u", d)
    viewer = core_connection("u", session("s1"))
    viewer.queue = CountingQueue()
    app = core_connection("u", USER)
    app.queue = CountingQueue()
    router.add_connection("u", viewer)
    router.add_connection("u", app)
    queues = [c.queue for c in (*daemons, viewer, app)]

    def offered() -> int:
        return sum(q.offered for q in queues if isinstance(q, CountingQueue))

    def emit(target: Any) -> tuple[int, set[int]]:
        SpyMachine.touched = set()
        before = offered()
        SpyMachine.armed = True
        try:
            reached = router.emit_update("u", update_payload(f"x{before}"), target).reached
        finally:
            SpyMachine.armed = False
        assert reached == offered() - before
        return reached, SpyMachine.touched

    # A session emit: the viewer and the app are offered the frame, and not one
    # of the 10,000 daemons is even looked at.
    reached, touched = emit(AllInterestedInSession("s1"))
    assert reached == 2
    assert isinstance(viewer.queue, CountingQueue)
    assert viewer.queue.offered == 1
    assert touched == set()
    # A machine-only emit looks at exactly that machine's daemon.
    reached, touched = emit(MachineOnly("m4321"))
    assert reached == 1
    assert touched == {id(daemons[4321])}
    # Sanity check of the spy: the default filter does touch every daemon.
    reached, touched = emit(None)
    assert reached == 10_002
    assert len(touched) == 10_000
