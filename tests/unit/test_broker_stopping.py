"""stopping.cancel_all: a broker's close ends its tasks even when one lets a cancellation go."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from eventrouter.server.broker.stopping import ATTEMPTS, cancel_all


async def test_a_task_that_lets_a_cancellation_go_is_cancelled_again() -> None:
    started = asyncio.Event()

    async def lets_one_go() -> None:
        started.set()
        # What a task inside a redis-py call was seen to end up doing:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        await asyncio.sleep(3600)

    task = asyncio.create_task(lets_one_go())
    await started.wait()
    await cancel_all([task], patience_s=0.05)
    assert task.cancelled()


async def test_a_task_that_never_ends_is_left_after_the_attempts_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cancels = 0
    stop = asyncio.Event()

    async def never_ends() -> None:
        nonlocal cancels
        while not stop.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancels += 1

    task = asyncio.create_task(never_ends())
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="eventrouter.server.broker"):
        await cancel_all([task], patience_s=0.01)
    assert cancels == ATTEMPTS
    assert not task.done()
    assert "1 background tasks did not end when cancelled" in caplog.text
    stop.set()
    task.cancel()
    await asyncio.wait({task})
    assert task.done()


async def test_ended_tasks_and_their_errors_are_taken_quietly() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fails())
    await asyncio.wait({failed})
    await cancel_all([failed], patience_s=0.01)
    assert isinstance(failed.exception(), RuntimeError)
