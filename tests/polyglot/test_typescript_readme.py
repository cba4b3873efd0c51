"""The README's TypeScript examples (also in docs/polyglot.md), run as written.

The Node program runs against ``eventrouter serve`` in its secure default mode
with tokens from ``eventrouter token``, from a folder of its own where
``@eventrouter/client`` is the built package (as ``npm i`` of its tarball
would make it). The browser module is bundled for browsers with esbuild; once
``serve`` has ``--web-listen`` it also runs, in Node (whose ``fetch`` streams),
against the web listener.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.cli_helpers import ENV, needs_console_script, run, serve
from tests.e2e.client_helpers import free_port
from tests.polyglot.test_typescript_client import WEB_LISTEN_FLAG, _has_web_listener
from tests.polyglot.typescript import PACKAGE, TypeScriptPackage, output
from tests.support.readme import examples

pytestmark = needs_console_script

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60.0
# The browser example, driven from Node: watch, emit once the stream is there, stop.
DRIVER = """
import { watchSession } from './watch.mjs';
import { buildDeleteSessionUpdate, createEventRouterClient } from '@eventrouter/client/node';

const controller = new AbortController();
const shown = [];
const watching = watchSession(process.env.WEB_URL, 'sess_1', process.env.ALICE_TOKEN,
  controller.signal, (json) => { shown.push(json); controller.abort(); });
const service = createEventRouterClient(process.env.EVENTROUTER_TARGET,
  { token: process.env.SERVICE_TOKEN });
while ((await service.getConnections('alice')).length === 0) {
  await new Promise((r) => setTimeout(r, 20));
}
await service.emitUpdate('alice', buildDeleteSessionUpdate('sess_1', 1, 'upd_web'));
await watching;
await service.close();
console.log(JSON.stringify(shown));
"""


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """The reader's folder: @eventrouter/client installed (a link to the built package)."""
    folder = tmp_path / "ts-demo"
    scope = folder / "node_modules" / "@eventrouter"
    scope.mkdir(parents=True)
    (scope / "client").symlink_to(PACKAGE, target_is_directory=True)
    return folder


def _tokens(env: dict[str, str]) -> dict[str, str]:
    return {
        "SERVICE_TOKEN": run("token", "--service", env=env).stdout.strip(),
        "ALICE_TOKEN": run("token", "--user", "alice", env=env).stdout.strip(),
    }


def test_the_examples_are_the_same_in_docs_polyglot() -> None:
    polyglot = (ROOT / "docs" / "polyglot.md").read_text()
    for name in ("ts-node", "ts-browser"):
        assert f"```js\n{examples()[name].code}```" in polyglot, name


def test_the_node_example_emits_and_prints_happys_json(
    ts_package: TypeScriptPackage, demo: Path, tmp_path: Path
) -> None:
    (demo / "alice.mjs").write_text(examples()["ts-node"].code)
    env = {**ENV, "XDG_STATE_HOME": str(tmp_path / "state")}
    with serve("--log-level", "warning", env=env) as target:
        result = subprocess.run(
            [ts_package.node, "alice.mjs"],
            cwd=demo,
            env={**env, **_tokens(env), "EVENTROUTER_TARGET": target},
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    assert result.returncode == 0, output(result)
    first, second = result.stdout.splitlines()
    assert first == "reached 1, duplicate false"
    update = json.loads(second)
    assert list(update) == ["id", "seq", "body", "createdAt"]
    assert update["seq"] == 1
    assert update["body"] == {"t": "delete-session", "sid": "sess_1"}


def test_the_browser_example_bundles_for_browsers(
    ts_package: TypeScriptPackage, demo: Path
) -> None:
    (demo / "watch.mjs").write_text(examples()["ts-browser"].code)
    esbuild = PACKAGE / "node_modules" / ".bin" / "esbuild"
    result = subprocess.run(
        [str(esbuild), "watch.mjs", "--bundle", "--platform=browser", "--format=esm"],
        cwd=demo,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, output(result)
    assert "watchSession" in result.stdout
    assert "connect-node" not in result.stdout
    assert 'from "node:' not in result.stdout


def test_the_browser_example_runs_against_the_web_listener(
    ts_package: TypeScriptPackage, demo: Path, tmp_path: Path
) -> None:
    if not _has_web_listener():
        pytest.skip(f"`eventrouter serve` has no {WEB_LISTEN_FLAG} yet (the web listener)")
    (demo / "watch.mjs").write_text(examples()["ts-browser"].code)
    (demo / "driver.mjs").write_text(DRIVER)
    env = {**ENV, "XDG_STATE_HOME": str(tmp_path / "state")}
    web_port = free_port()
    flags = ("--log-level", "warning", WEB_LISTEN_FLAG, f"127.0.0.1:{web_port}")
    with serve(*flags, env=env) as target:
        result = subprocess.run(
            [ts_package.node, "driver.mjs"],
            cwd=demo,
            env={
                **env,
                **_tokens(env),
                "EVENTROUTER_TARGET": target,
                "WEB_URL": f"http://127.0.0.1:{web_port}",
            },
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    assert result.returncode == 0, output(result)
    (shown,) = json.loads(result.stdout)
    assert shown["id"] == "upd_web"
    assert shown["body"] == {"t": "delete-session", "sid": "sess_1"}
