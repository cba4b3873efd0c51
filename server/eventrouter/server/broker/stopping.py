"""Ending a broker's background tasks for good."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("eventrouter.server.broker")

# Cancellations per task before giving up on it.
ATTEMPTS = 3


async def cancel_all(tasks: Iterable[asyncio.Future[Any]], patience_s: float) -> None:
    """Cancel ``tasks`` and wait until they have ended.

    A task can take a cancellation and carry on: under load, a task cancelled
    while inside a redis-py call was seen afterwards waiting in an
    ``asyncio.sleep`` or a socket read with its cancellation spent, and a
    plain ``gather`` after ``cancel()`` then waited forever (a broker's close
    hung).  So a task still running ``patience_s`` after being cancelled is
    cancelled again, up to ``ATTEMPTS`` times, and then left (logged).
    """
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    for _ in range(ATTEMPTS):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=patience_s)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: ending is all that was asked of it
    if pending:
        log.warning("%d background tasks did not end when cancelled", len(pending))
