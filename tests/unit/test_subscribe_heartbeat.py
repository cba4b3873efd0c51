"""The stream's heartbeat timer (handlers/subscribe.py): due an interval after the wait began.

One timer per stream replaces a timeout per wait; these pin what the timeout
did: the heartbeat comes ``interval`` after the last wait began (activity
moves it), and a cancellation from elsewhere is never absorbed as a heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from eventrouter.server.handlers.subscribe import _Heartbeat

INTERVAL_MS = 100


async def _wait_for_beat(beat: _Heartbeat) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    beat.idle()
    try:
        await loop.create_future()  # as the queue's wait: a fresh future each time
    except asyncio.CancelledError:
        if not beat.was_due():
            raise
        return loop.time() - start
    raise AssertionError("the wait ended without a heartbeat")


async def test_heartbeat_comes_an_interval_after_the_wait_began() -> None:
    async def stream() -> tuple[float, float]:
        beat = _Heartbeat(INTERVAL_MS)
        try:
            first = await _wait_for_beat(beat)
            second = await _wait_for_beat(beat)  # and again on the next wait
            return first, second
        finally:
            beat.stop()

    first, second = await stream()
    for elapsed in (first, second):
        assert INTERVAL_MS / 1000 - 0.01 <= elapsed < INTERVAL_MS / 1000 + 0.5


async def test_activity_moves_the_heartbeat() -> None:
    async def stream() -> float:
        beat = _Heartbeat(INTERVAL_MS)
        try:
            beat.idle()  # arms the timer for t0 + interval
            await asyncio.sleep(INTERVAL_MS / 1000 * 0.6)
            beat.waiting = False  # a message arrived and was written
            return await _wait_for_beat(beat)
        finally:
            beat.stop()

    elapsed = await stream()
    # Measured from the second wait: the first timer fired early and moved on.
    assert INTERVAL_MS / 1000 - 0.01 <= elapsed < INTERVAL_MS / 1000 + 0.5


async def test_a_cancellation_from_elsewhere_is_not_a_heartbeat() -> None:
    loop = asyncio.get_running_loop()
    beats: list[float] = []

    async def stream() -> None:
        beat = _Heartbeat(INTERVAL_MS)
        try:
            beats.append(await _wait_for_beat(beat))
        finally:
            beat.stop()

    task = asyncio.create_task(stream())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert beats == []

    # The same when the heartbeat falls due in the same turn as the cancellation.
    async def racing() -> None:
        beat = _Heartbeat(INTERVAL_MS)
        forever = loop.create_future()
        beat.idle()
        task = asyncio.current_task()
        assert task is not None
        loop.call_at(loop.time() + INTERVAL_MS / 1000, task.cancel)
        try:
            await forever
        except asyncio.CancelledError:
            if beat.was_due():
                beats.append(0.0)
            raise
        finally:
            beat.stop()

    task = asyncio.create_task(racing())
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert beats == []
