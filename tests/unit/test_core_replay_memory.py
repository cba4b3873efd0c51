"""Resume shares the history's bytes: N streams resuming from far back cost N lists of
references, not N copies, and the memory returns when they end (measured with tracemalloc)."""

from __future__ import annotations

import gc
import tracemalloc

from eventrouter.server.core.connections import UserScopedConnection
from eventrouter.server.core.history import HistoryLimits
from eventrouter.server.core.queue import QueueLimits
from eventrouter.server.core.router import EventRouter, RouterLimits
from tests.support.model import update_payload

UPDATES, PAD, STREAMS = 200, 50_000, 10
HISTORY_BYTES = UPDATES * PAD  # about 10 MB
WRITE_BYTES = 256 * 1024


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_resuming_streams_share_the_history_and_give_memory_back() -> None:
    router = EventRouter(
        RouterLimits(
            queue=QueueLimits(max_write_bytes=WRITE_BYTES),
            history=HistoryLimits(max_updates=UPDATES),
        )
    )
    first = router.emit_update("u", update_payload("u0", PAD))
    for i in range(1, UPDATES):
        router.emit_update("u", update_payload(f"u{i}", PAD))
    tracemalloc.start()
    try:
        before = traced()
        streams = [UserScopedConnection("u") for _ in range(STREAMS)]
        for stream in streams:
            opened = router.add_connection("u", stream, resume_from=(0, first.epoch))
            assert opened.replayed == UPDATES
        opened_cost = traced() - before
        # References to shared entries, not copies of the history (one copy
        # would already be HISTORY_BYTES).
        assert opened_cost < HISTORY_BYTES / 20, opened_cost

        # Every stream's writer takes one write: frames are built then, one
        # write's worth each.
        writes = [stream.queue.drain() for stream in streams if stream.queue is not None]
        assert all(sum(map(len, w)) <= WRITE_BYTES + PAD + 100 for w in writes)
        del writes
        # What stays is at most the frame each built for its next write.
        assert traced() - before < opened_cost + STREAMS * (PAD + 1024)

        for stream in streams:
            router.remove_connection("u", stream)
        del streams, stream
        # Memory returns after the streams end (within a few KiB of the start).
        assert traced() - before < 64 * 1024
    finally:
        tracemalloc.stop()
