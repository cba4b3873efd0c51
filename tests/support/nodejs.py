"""Running a Node emitter from the docs against a real server (README, docs/deploy.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from eventrouter.client import SubscriptionEvent, UpdateReceived

TIMEOUT_S = 30.0


async def node_emit_reaches(
    node: str,
    folder: Path,
    env: Mapping[str, str],
    subscription: AsyncIterator[SubscriptionEvent],
    script: str = "emit.mjs",
) -> UpdateReceived:
    """``node SCRIPT`` in ``folder`` exits 0 saying ``reached: 1``; the update it delivered."""
    process = await asyncio.create_subprocess_exec(
        node,
        script,
        cwd=folder,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(TIMEOUT_S):
        out, err = await process.communicate()
        assert process.returncode == 0, (out, err)
        assert "reached: 1" in out.decode(), out
        event = await anext(subscription)
    assert isinstance(event, UpdateReceived), event
    return event
