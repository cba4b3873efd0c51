"""``--baseline-rev REV``: the eventrouter of another commit, in the same run.

The commit is checked out as a ``git worktree`` (detached, in the run's
temporary folder, removed afterwards) and its server runs on this venv's
interpreter with the worktree's ``server/`` and ``client/`` first on
``PYTHONPATH`` (ahead of this checkout's editable install), so it is that
commit's code with today's dependencies.  The target is named
``eventrouter@REV``; the report divides the eventrouter by it
(report/compare.py).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from targets import REGISTRY, Options, Target
from targets.base import ROOT
from targets.eventrouter import EventRouter


class EventRouterAt(EventRouter):
    """The ``eventrouter`` target on another commit's code."""

    tree: Path

    def server_cmd(
        self, port: int, variants: list[str], broker: str | None, node: int, opts: Options
    ) -> list[str]:
        if variants:
            raise ValueError("an eventrouter@REV target takes no +variants")
        path = f"PYTHONPATH={self.tree / 'server'}:{self.tree / 'client'}"
        # env execs the server: the process measured is the server itself.
        return ["env", path, *super().server_cmd(port, variants, broker, node, opts)]


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


@contextmanager
def baseline_target(rev: str, tmp: Path) -> Iterator[Target]:
    """Registers ``eventrouter@REV`` (a worktree of REV under ``tmp``) while in the block."""
    commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    tree = tmp / f"rev-{commit[:12]}"
    _git("worktree", "add", "--detach", str(tree), commit)
    name = f"eventrouter@{rev}"
    target = type("EventRouterAtRev", (EventRouterAt,), {"name": name, "order": 4})()
    target.tree = tree
    REGISTRY[name] = target
    try:
        yield target
    finally:
        REGISTRY.pop(name, None)
        _git("worktree", "remove", "--force", str(tree))
