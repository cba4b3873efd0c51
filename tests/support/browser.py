"""What the browser tests need: node, Debian's chromium and playwright-core.

Each test that drives chromium (with playwright-core, never a downloaded
browser build) checks these first: missing ones skip the test on a user's
machine, naming what to install, and fail it under CI=true.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def require_browser() -> str:
    """The ``node`` binary, once chromium and playwright-core are there too."""
    node = shutil.which("node")
    require_tool(node is not None, "node")
    require_tool(Path(CHROMIUM).is_file(), f"chromium at {CHROMIUM} (make browser-deps)")
    require_tool(
        (ROOT / "node_modules" / "playwright-core").is_dir(),
        "the playwright-core npm package (make node-deps)",
    )
    assert node is not None
    return node
