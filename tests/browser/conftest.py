"""Fixtures of the browser tests: the package built, the page bundled, one chromium per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.harness import Browser, bundle_page
from tests.polyglot.typescript import TypeScriptPackage, build_dist
from tests.security.helpers import Keys
from tests.support.browser import require_browser


@pytest.fixture(scope="module")
def node() -> str:
    return require_browser()


@pytest.fixture(scope="module")
def ts_package(node: str) -> TypeScriptPackage:
    """client/typescript built for npm (once per run, shared with the polyglot tests)."""
    return build_dist()


@pytest.fixture(scope="module")
def www(ts_package: TypeScriptPackage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test page and its script, bundled by esbuild from @eventrouter/client/web."""
    return bundle_page(ts_package, tmp_path_factory.mktemp("page"))


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture
def keys_file(keys: Keys, tmp_path: Path) -> Path:
    return keys.write(tmp_path / "keys" / "signing-keys.json")


@pytest.fixture(scope="module")
def browser(node: str) -> Iterator[Browser]:
    """One chromium for the whole module (tabs are cheap, launches are not)."""
    driven = Browser(node)
    try:
        yield driven
    finally:
        driven.close()
