"""Fixtures of the end-to-end suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.cli_helpers import serve


@pytest.fixture(scope="module")
def cli_target() -> Iterator[str]:
    """``eventrouter serve --insecure`` as its own process, shared by a module's CLI tests."""
    with serve("--insecure", "--log-level", "warning") as address:
        yield address
