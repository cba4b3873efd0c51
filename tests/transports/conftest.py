"""A keyset on disk for the secure servers of the transport suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.security.helpers import Keys


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture
def keys_file(keys: Keys, tmp_path: Path) -> Path:
    return keys.write(tmp_path / "keys" / "signing-keys.json")
