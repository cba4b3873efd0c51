"""Fixtures of the contract tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.contract._support import BUF, ROOT, missing_tool


@pytest.fixture(scope="session")
def buf() -> Path:
    """The buf CLI from the npm package @bufbuild/buf."""
    if not BUF.exists():
        missing_tool(
            f"buf not found at {BUF.relative_to(ROOT)}: install @bufbuild/buf with `make node-deps`"
        )
    return BUF
