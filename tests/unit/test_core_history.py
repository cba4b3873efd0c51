"""Resume: replay of exactly the gap, every failure reason, eviction; idempotency."""

from __future__ import annotations

import os

import pytest

from eventrouter.server.core.connections import ClientConnection
from eventrouter.server.core.filters import (
    AllInterestedInSession,
    MachineOnly,
    MachineScopedOnly,
    RecipientFilter,
    UserScopedOnly,
)
from eventrouter.server.core.history import HistoryLimits, MemoryHistory, ResumeFailure
from eventrouter.server.core.idempotency import IdempotencyCache
from eventrouter.server.core.router import EventRouter, ResumeStatus, RouterLimits
from tests.support.model import (
    USER,
    Delivered,
    core_connection,
    ephemeral_payload,
    machine,
    session,
    take_queued,
    update_payload,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def take(connection: ClientConnection) -> list[Delivered]:
    out = take_queued(connection)
    assert all(d.kind == "update" for d in out)
    return out


def router_with_clock(
    clock: FakeClock, max_updates: int = 1000, max_age_s: float = 600.0
) -> EventRouter:
    router = EventRouter(RouterLimits(history=HistoryLimits(max_updates, max_age_s)))
    # Same limits, an injected clock (the router builds its history with the real one).
    router.history = MemoryHistory(router.limits.history, clock=clock)
    return router


def emit_n(router: EventRouter, user: str, n: int, start: int = 1) -> str:
    epoch = ""
    for i in range(start, start + n):
        result = router.emit_update(user, update_payload(f"e{i}"))
        assert result.offset == i
        epoch = result.epoch
    return epoch


def test_replay_is_exactly_the_gap_and_honours_filters_and_skip() -> None:
    router = EventRouter()
    resumer = core_connection("u", session("s1"))
    emits: list[tuple[str, RecipientFilter | None, str | None]] = [
        ("a", None, None),
        ("b", None, None),
        ("c", AllInterestedInSession("s1"), None),
        ("d", AllInterestedInSession("s2"), None),
        ("e", UserScopedOnly(), None),
        ("f", MachineScopedOnly("m1"), None),
        ("g", MachineOnly("m1"), None),
        ("h", None, resumer.connection_id),  # sent by the resumer itself
        ("i", None, "c_someone_else"),
        ("j", AllInterestedInSession("s1"), None),
    ]
    epoch = ""
    for event_id, flt, skip in emits:
        epoch = router.emit_update("u", update_payload(event_id), flt, skip).epoch
    opened = router.add_connection("u", resumer, (2, epoch))
    assert opened.status is ResumeStatus.RESUMED
    assert opened.failure is None
    assert opened.replayed == 3
    # A resumed stream starts at the position asked for; the replay moves it on.
    assert (opened.offset, opened.epoch) == (2, epoch)
    # Offsets 3.. that a watcher of s1 would have been sent live, nothing before.
    assert take(resumer) == [
        Delivered("update", "c", 3),
        Delivered("update", "i", 9),
        Delivered("update", "j", 10),
    ]
    # Then live, in order after the replay.
    router.emit_update("u", update_payload("k"))
    assert take(resumer) == [Delivered("update", "k", 11)]


def test_replay_to_a_machine_connection() -> None:
    router = EventRouter()
    epoch = ""
    emits: list[tuple[str, RecipientFilter]] = [
        ("a", MachineOnly("m1")),
        ("b", MachineOnly("m2")),
        ("c", MachineScopedOnly("m1")),
        ("d", UserScopedOnly()),
    ]
    for event_id, flt in emits:
        epoch = router.emit_update("u", update_payload(event_id), flt).epoch
    daemon = core_connection("u", machine("m1"))
    assert router.add_connection("u", daemon, (0, epoch)).replayed == 2
    assert [d.event_id for d in take(daemon)] == ["a", "c"]
    app = core_connection("u", USER)
    assert router.add_connection("u", app, (0, epoch)).replayed == 2
    assert [d.event_id for d in take(app)] == ["c", "d"]


def test_resume_at_head_replays_nothing_and_stays_live() -> None:
    router = EventRouter()
    epoch = emit_n(router, "u", 3)
    conn = core_connection("u", USER)
    opened = router.add_connection("u", conn, (3, epoch))
    assert (opened.status, opened.replayed) == (ResumeStatus.RESUMED, 0)
    emit_n(router, "u", 1, start=4)
    assert take(conn) == [Delivered("update", "e4", 4)]


def test_resume_from_the_opened_position_of_a_fresh_user() -> None:
    router = EventRouter()
    first = core_connection("u", USER)
    opened = router.add_connection("u", first)
    assert (opened.status, opened.offset) == (ResumeStatus.NOT_REQUESTED, 0)
    router.remove_connection("u", first)
    emit_n(router, "u", 2)
    again = core_connection("u", USER)
    resumed = router.add_connection("u", again, (0, opened.epoch))
    assert (resumed.status, resumed.replayed) == (ResumeStatus.RESUMED, 2)
    assert [d.offset for d in take(again)] == [1, 2]


def test_epoch_mismatch_fails_and_the_stream_starts_live() -> None:
    router = EventRouter()
    epoch = emit_n(router, "u", 3)
    conn = core_connection("u", USER)
    opened = router.add_connection("u", conn, (2, "not-" + epoch))
    assert opened.status is ResumeStatus.FAILED
    assert opened.failure is ResumeFailure.EPOCH_CHANGED
    assert opened.replayed == 0
    assert (opened.offset, opened.epoch) == (3, epoch)
    assert take(conn) == []
    emit_n(router, "u", 1, start=4)
    assert take(conn) == [Delivered("update", "e4", 4)]
    assert router.stats.resumes_failed == 1


def test_too_old_by_count_with_exact_boundary() -> None:
    router = EventRouter(RouterLimits(history=HistoryLimits(max_updates=3)))
    epoch = emit_n(router, "u", 10)  # retained: 8, 9, 10
    old = core_connection("u", USER)
    opened = router.add_connection("u", old, (6, epoch))
    assert (opened.status, opened.failure) == (ResumeStatus.FAILED, ResumeFailure.TOO_OLD)
    assert take(old) == []
    ok = core_connection("u", USER)
    opened = router.add_connection("u", ok, (7, epoch))
    assert (opened.status, opened.replayed) == (ResumeStatus.RESUMED, 3)
    assert [d.offset for d in take(ok)] == [8, 9, 10]


def test_no_history_kept_means_only_the_head_resumes() -> None:
    router = EventRouter(RouterLimits(history=HistoryLimits(max_updates=0)))
    epoch = emit_n(router, "u", 2)
    at_head = router.add_connection("u", core_connection("u", USER), (2, epoch))
    assert at_head.status is ResumeStatus.RESUMED
    behind = router.add_connection("u", core_connection("u", USER), (1, epoch))
    assert behind.failure is ResumeFailure.TOO_OLD


def test_too_old_by_age() -> None:
    clock = FakeClock()
    router = router_with_clock(clock, max_age_s=60)
    epoch = emit_n(router, "u", 3)  # stored at t=1000
    clock.now += 50
    emit_n(router, "u", 2, start=4)  # stored at t=1050
    clock.now += 20  # t=1070: 1..3 are 70 s old, 4..5 are 20 s old
    opened = router.add_connection("u", core_connection("u", USER), (0, epoch))
    assert opened.failure is ResumeFailure.TOO_OLD
    conn = core_connection("u", USER)
    opened = router.add_connection("u", conn, (3, epoch))
    assert (opened.status, opened.replayed) == (ResumeStatus.RESUMED, 2)
    assert [d.offset for d in take(conn)] == [4, 5]
    clock.now += 41  # t=1111: everything is older than 60 s
    opened = router.add_connection("u", core_connection("u", USER), (3, epoch))
    assert opened.failure is ResumeFailure.TOO_OLD
    at_head = router.add_connection("u", core_connection("u", USER), (5, epoch))
    assert (at_head.status, at_head.replayed) == (ResumeStatus.RESUMED, 0)


def test_position_ahead_of_the_stream_is_unknown() -> None:
    router = EventRouter()
    epoch = emit_n(router, "u", 3)
    conn = core_connection("u", USER)
    opened = router.add_connection("u", conn, (4, epoch))
    assert (opened.status, opened.failure) == (
        ResumeStatus.FAILED,
        ResumeFailure.UNKNOWN_POSITION,
    )
    emit_n(router, "u", 1, start=4)
    assert take(conn) == [Delivered("update", "e4", 4)]


def test_idle_users_are_evicted_and_resume_then_fails_on_the_epoch() -> None:
    clock = FakeClock()
    router = router_with_clock(clock, max_age_s=60)
    idle_epoch = emit_n(router, "idle", 2)
    connected_epoch = emit_n(router, "connected", 2)
    holder = core_connection("connected", USER)
    router.add_connection("connected", holder)
    clock.now += 50
    recent_epoch = emit_n(router, "recent", 1)
    clock.now += 11  # idle/connected: 61 s since their last update; recent: 11 s

    assert router.sweep() == 1
    assert set(router.history.users()) == {"connected", "recent"}

    opened = router.add_connection("idle", core_connection("idle", USER), (2, idle_epoch))
    assert opened.failure is ResumeFailure.EPOCH_CHANGED
    assert opened.epoch != idle_epoch
    assert opened.offset == 0
    # The new stream numbers from 1 again, in its new epoch.
    result = router.emit_update("idle", update_payload("fresh"))
    assert (result.offset, result.epoch) == (1, opened.epoch)
    # Kept streams still resume.
    kept = router.add_connection(
        "connected", core_connection("connected", USER), (2, connected_epoch)
    )
    assert kept.status is ResumeStatus.RESUMED
    recent = router.add_connection("recent", core_connection("recent", USER), (0, recent_epoch))
    assert (recent.status, recent.replayed) == (ResumeStatus.RESUMED, 1)


# ---------------------------------------------------------------------------
# Idempotency
# ---------------------------------------------------------------------------


def test_idempotency_cache_expires_after_its_window() -> None:
    clock = FakeClock()
    cache: IdempotencyCache[int] = IdempotencyCache(window_s=10, clock=clock)
    cache.put(("u", "u", "a"), 1)
    clock.now += 10
    assert cache.get(("u", "u", "a")) == 1
    clock.now += 0.001
    assert cache.get(("u", "u", "a")) is None
    assert len(cache) == 0


def test_idempotency_cache_prunes_expired_entries_on_put() -> None:
    clock = FakeClock()
    cache: IdempotencyCache[int] = IdempotencyCache(window_s=10, clock=clock)
    for i in range(5):
        cache.put(("u", "u", str(i)), i)
    clock.now += 11
    cache.put(("u", "u", "new"), 9)
    assert len(cache) == 1


def test_idempotency_cache_max_entries_evicts_the_oldest() -> None:
    cache: IdempotencyCache[int] = IdempotencyCache(window_s=100, max_entries=3, clock=FakeClock())
    for i in range(5):
        cache.put(("u", "u", str(i)), i)
    assert len(cache) == 3
    assert [cache.get(("u", "u", str(i))) for i in range(5)] == [None, None, 2, 3, 4]


def test_idempotency_window_zero_remembers_nothing() -> None:
    cache: IdempotencyCache[int] = IdempotencyCache(window_s=0)
    cache.put(("u", "u", "a"), 1)
    assert cache.get(("u", "u", "a")) is None


def test_repeated_update_id_is_acknowledged_not_redelivered() -> None:
    router = EventRouter()
    conn = core_connection("u", USER)
    router.add_connection("u", conn)
    first = router.emit_update("u", update_payload("same"))
    again = router.emit_update("u", update_payload("same"))
    assert (first.duplicate, again.duplicate) == (False, True)
    assert (again.offset, again.epoch, again.reached) == (first.offset, first.epoch, 1)
    assert take(conn) == [Delivered("update", "same", 1)]
    # The repeat took no offset; the same id for another user is a different update.
    assert router.emit_update("u", update_payload("next")).offset == 2
    assert router.emit_update("v", update_payload("same")).duplicate is False


@pytest.mark.parametrize("key", ["k1", None])
def test_ephemeral_idempotency_key(key: str | None) -> None:
    router = EventRouter()
    conn = core_connection("u", USER)
    router.add_connection("u", conn)
    first = router.emit_ephemeral("u", ephemeral_payload("e"), idempotency_key=key)
    again = router.emit_ephemeral("u", ephemeral_payload("e"), idempotency_key=key)
    assert first.duplicate is False
    assert again.duplicate is (key is not None)
    queue = conn.queue
    assert queue is not None
    frames = queue.drain()
    assert len(frames) == (1 if key else 2)


def test_epochs_are_unique_and_a_forked_child_draws_its_own() -> None:
    from eventrouter.server.core.history import new_epoch

    epochs = {new_epoch() for _ in range(50_000)}
    assert len(epochs) == 50_000
    assert all(len(e) == 12 and int(e, 16) >= 0 for e in list(epochs)[:100])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the epochs it would propose next
        os.write(write, " ".join(new_epoch() for _ in range(1000)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    mine = {new_epoch() for _ in range(1000)}
    assert len(child) == 1000
    assert not child & (mine | epochs)  # a copied counter would repeat the parent's
