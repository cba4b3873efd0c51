"""Fixtures of the browser tests: the package built, the page bundled, one chromium per module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from eventrouter.client import EventRouterClient
from eventrouter.server import RouterServer
from tests.browser.harness import Browser, Origin, Page, Stage, bundle_page, open_page, origins
from tests.polyglot.typescript import TypeScriptPackage, build_dist
from tests.security.helpers import Keys, secure_server
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
def browser(node: str) -> Iterator[Browser]:
    """One chromium for the whole module (tabs are cheap, launches are not)."""
    driven = Browser(node)
    try:
        yield driven
    finally:
        driven.close()


@pytest.fixture(scope="module")
def sites(www: Path) -> Iterator[tuple[Origin, Origin]]:
    """The page on origin A (the servers allow it) and on origin B (they do not)."""
    with origins(www, 2) as (a, b):
        yield a, b


@pytest.fixture
async def server(keys_file: Path, sites: tuple[Origin, Origin]) -> AsyncIterator[RouterServer]:
    """A secure server (JWTs) with its web listener on, allowing origin A's pages."""
    allowed, _ = sites
    async with secure_server(
        keys_file, web_listen="127.0.0.1:0", web_cors_origins=allowed.url
    ) as server:
        yield server


@pytest.fixture
async def router(server: RouterServer, keys: Keys) -> AsyncIterator[EventRouterClient]:
    """The Python client over gRPC, as Happy Server: it emits."""
    async with EventRouterClient(f"127.0.0.1:{server.port}", token=keys.service()) as client:
        yield client


@pytest.fixture
async def page(browser: Browser, sites: tuple[Origin, Origin]) -> AsyncIterator[Page]:
    """A tab on the allowed origin A."""
    tab = await open_page(browser, sites[0])
    yield tab
    await tab.close()


@pytest.fixture
def stage(page: Page, server: RouterServer, router: EventRouterClient, keys: Keys) -> Stage:
    return Stage(page, server, router, keys)
