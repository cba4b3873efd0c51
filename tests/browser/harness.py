"""The browser tests' machinery: the bundled page, the origins serving it, the driven chromium.

- ``bundle_page``: page.mjs bundled for browsers by esbuild (the TypeScript
  client's devDependency) at test time, from a folder where
  ``@eventrouter/client`` is the built package, as ``npm i`` of its tarball
  would make it: the page imports ``@eventrouter/client/web``, resolved
  through the package's ``exports`` to ``dist/esm/web.js``.
- ``Origin``: a static HTTP server on its own loopback port serving that
  page: one port, one web origin (``http://127.0.0.1:PORT``).
- ``Cable``: a TCP forwarder between the browser and the web listener that
  the test cuts, as a network would.
- ``Browser``: driver.mjs (playwright-core, Debian's chromium) and its line
  protocol.  Its calls are awaitable from any event loop (the browser
  outlives each test's loop: one browser per test module).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import http.server
import itertools
import json
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventrouter.client import EventRouterClient, build_delete_session_update
from eventrouter.server import RouterServer
from tests.polyglot.typescript import PACKAGE, TypeScriptPackage, output
from tests.security.helpers import Keys
from tests.support.model import wait_until

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "driver.mjs"
PROTOCOLS = ("connect", "grpc-web")
SESSION = "sess_1"
Log = list[dict[str, Any]]
# How long one driver command may take (the page's own waits are shorter).
COMMAND_TIMEOUT_S = 30.0
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>eventrouter browser test</title>
<link rel="icon" href="data:,"><script type="module" src="/page.js"></script></head>
<body><p>eventrouter browser test page</p></body></html>
"""


def bundle_page(ts_package: TypeScriptPackage, folder: Path) -> Path:
    """The page (index.html + page.js) in ``folder``, bundled by esbuild; returns ``folder``."""
    scope = folder / "node_modules" / "@eventrouter"
    scope.mkdir(parents=True)
    (scope / "client").symlink_to(PACKAGE, target_is_directory=True)
    (folder / "page.mjs").write_text((HERE / "page.mjs").read_text())
    www = folder / "www"
    www.mkdir()
    esbuild = PACKAGE / "node_modules" / ".bin" / "esbuild"
    result = subprocess.run(
        [
            str(esbuild),
            "page.mjs",
            "--bundle",
            "--platform=browser",
            "--format=esm",
            f"--outfile={www / 'page.js'}",
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, output(result)
    bundled = (www / "page.js").read_text()
    # The browser build of the package: connect-web's fetch, nothing of Node's.
    assert "connect-node" not in bundled
    assert 'from "node:' not in bundled
    (www / "index.html").write_text(PAGE)
    return www


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class Origin:
    """``folder`` served over HTTP on a loopback port of its own: a web origin."""

    def __init__(self, folder: Path) -> None:
        handler = functools.partial(_Quiet, directory=str(folder))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class Cable:
    """A TCP path to 127.0.0.1:``port`` that the test can cut, as a network would.

    ``cut()`` resets every connection through it (the browser's stream
    breaks, the server sees its client vanish) and refuses new ones, as an
    unreachable network does, until ``mend()``.
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._refusing = False

    async def __aenter__(self) -> Cable:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        self._refusing = True
        for ends in self._links:
            for end in ends:
                end.transport.abort()
        self._links.clear()

    def mend(self) -> None:
        self._refusing = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self._refusing:
                writer.transport.abort()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
            except OSError:
                writer.transport.abort()
                return
            link = (writer, up_writer)
            self._links.add(link)
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
            self._links.discard(link)
        finally:
            self._tasks.discard(task)


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until the source ends (then end the sink too) or the link is cut."""
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, OSError):
        sink.transport.abort()
    else:
        sink.close()


class DriverError(Exception):
    """A driver command failed (its message is the page's or playwright's error)."""


class Browser:
    """driver.mjs running one chromium; ``await browser.call(...)`` from any test."""

    def __init__(self, node: str, chromium_flags: Sequence[str] = ()) -> None:
        self._process = subprocess.Popen(
            [node, str(DRIVER), *chromium_flags],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            cwd=HERE,
        )
        self._ids = itertools.count(1)
        self._pending: dict[int, concurrent.futures.Future[Any]] = {}
        self._lock = threading.Lock()
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_answers, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_answers(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            answer = json.loads(line)
            with self._lock:
                future = self._pending.pop(answer["id"], None)
            if future is None or not future.set_running_or_notify_cancel():
                continue  # nobody waits for it any more (the test timed out)
            if answer["ok"]:
                future.set_result(answer["value"])
            else:
                future.set_exception(DriverError(answer["error"]))
        # The driver exited: nothing more will be answered.
        with self._lock:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            if future.set_running_or_notify_cancel():
                future.set_exception(DriverError(f"the driver exited\n{''.join(self._stderr)}"))

    def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self._stderr.append(line)

    async def request(self, op: str, **fields: Any) -> Any:
        """Send one command; its answer's value (raises DriverError when it failed)."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            command_id = next(self._ids)
            self._pending[command_id] = future
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"id": command_id, "op": op, **fields}) + "\n")
        self._process.stdin.flush()
        return await asyncio.wrap_future(future)

    async def open(self, page: str, url: str) -> Page:
        await asyncio.wait_for(self.request("open", page=page, url=url), COMMAND_TIMEOUT_S)
        return Page(self, page)

    async def offline(self, value: bool) -> None:
        await self.request("offline", value=value)

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        if self._process.stdout is not None:
            self._process.stdout.close()
        if self._process.stderr is not None:
            self._process.stderr.close()


class Page:
    """One tab of the driven browser, showing the test page."""

    def __init__(self, browser: Browser, name: str) -> None:
        self.browser = browser
        self.name = name

    async def call(self, fn: str, *args: Any) -> Any:
        """``window.harness[fn](...args)`` in the page."""
        request = self.browser.request("call", page=self.name, fn=fn, args=list(args))
        return await asyncio.wait_for(request, COMMAND_TIMEOUT_S)

    async def subscribe(self, name: str, **options: Any) -> dict[str, Any]:
        """Open subscription ``name``; its first record (``opened``, or the error)."""
        first: dict[str, Any] = await self.call("subscribe", name, options)
        return first

    async def start(self, name: str, **options: Any) -> None:
        """Start subscription ``name`` without waiting for its stream to open."""
        await self.call("subscribe", name, {**options, "wait": False})

    async def logs(self) -> dict[str, Log]:
        """Every subscription's log, by name."""
        logs: dict[str, Log] = await self.call("logs")
        return logs

    async def until(
        self, name: str, kind: str, count: int = 1, timeout_ms: int = 10_000
    ) -> list[dict[str, Any]]:
        """The log of subscription ``name`` once it holds ``count`` records of ``kind``."""
        log: list[dict[str, Any]] = await self.call("until", name, kind, count, timeout_ms)
        return log

    async def close_subscription(self, name: str) -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = await self.call("close", name)
        return log

    async def reload(self) -> None:
        """Reload the page: every connection it holds drops, its script starts again."""
        await asyncio.wait_for(self.browser.request("reload", page=self.name), COMMAND_TIMEOUT_S)

    async def console(self) -> list[str]:
        lines: list[str] = await self.browser.request("console", page=self.name)
        return lines

    async def protocols(self) -> dict[str, str]:
        """The HTTP version (``h2``, ``http/1.1``) each response this page received came over."""
        seen: dict[str, str] = await self.browser.request("protocols", page=self.name)
        return seen

    async def close(self) -> None:
        await self.browser.request("close", page=self.name)


_tabs = itertools.count(1)


async def open_page(browser: Browser, origin: Origin) -> Page:
    """A new tab showing the test page from ``origin``."""
    return await browser.open(f"page-{next(_tabs)}", origin.url + "/")


@contextmanager
def origins(folder: Path, count: int) -> Iterator[list[Origin]]:
    """``count`` origins serving ``folder``, closed on exit."""
    served = [Origin(folder) for _ in range(count)]
    try:
        yield served
    finally:
        for origin in served:
            origin.close()


# -- steps the tests share ---------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """What a browser test works with (the ``stage`` fixture).

    A tab on the allowed origin, the secure server, the Python client that
    emits to it over gRPC, and the keys its tokens are signed with.
    """

    page: Page
    server: RouterServer
    router: EventRouterClient
    keys: Keys


def web_url(server: RouterServer) -> str:
    """The web listener of ``server``, straight (HTTP/1.1)."""
    return f"http://127.0.0.1:{server.web_port}"


async def emit(router: EventRouterClient, user: str, *ids: str) -> list[int]:
    """Emit one update per id to ``user`` (through gRPC); the offsets they were given."""
    offsets = []
    for seq, update_id in enumerate(ids, 1):
        result = await router.emit_update(
            user, build_delete_session_update(SESSION, seq, update_id)
        )
        assert result.position is not None
        offsets.append(result.position.offset)
    return offsets


async def until_connections(router: EventRouterClient, user: str, count: int) -> list[str]:
    """Wait until the server holds ``count`` connections of ``user``; their ids."""
    ids: list[str] = []

    async def holds() -> bool:
        ids[:] = [c.connection_id for c in await router.get_connections(user)]
        return len(ids) == count

    await wait_until(holds, what=f"{count} connections of {user} on the server")
    return ids


def updates(log: Log) -> list[tuple[str, int]]:
    """(update id, offset) of every update a subscription received, in order."""
    return [(e["id"], int(e["offset"])) for e in log if e["type"] == "update"]


def of_type(log: Log, kind: str) -> Log:
    return [e for e in log if e["type"] == kind]
