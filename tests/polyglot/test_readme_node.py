"""The README's Node snippet, run as written against a real server.

The README has the reader make a folder of their own, ``npm i @grpc/grpc-js
@grpc/proto-loader`` there and save the snippet as ``emit.mjs``; here the
folder is a temporary one whose ``node_modules`` links to the repository's,
which holds both packages (``make node-deps``). The server is ``eventrouter
serve`` in its secure default mode, the token comes from ``eventrouter
token --service``, and a subscriber of alice's must receive the update.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from eventrouter.client import EventRouterClient, user_scope
from tests.e2e.cli_helpers import ENV, needs_console_script, run, serve
from tests.support.nodejs import TIMEOUT_S, node_emit_reaches
from tests.support.readme import examples

pytestmark = needs_console_script

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """The reader's own folder: the packages installed, the snippet saved as emit.mjs."""
    folder = tmp_path / "emit-demo"
    folder.mkdir()
    (folder / "node_modules").symlink_to(ROOT / "node_modules", target_is_directory=True)
    (folder / "emit.mjs").write_text(examples()["node"].code)
    return folder


async def test_the_node_snippet_emits_to_alice(node: str, demo: Path, tmp_path: Path) -> None:
    env = {**ENV, "XDG_STATE_HOME": str(tmp_path / "state")}
    with serve("--log-level", "warning", env=env) as target:
        service = run("token", "--service", env=env).stdout.strip()
        alice = run("token", "--user", "alice", env=env).stdout.strip()
        async with (
            EventRouterClient(target, token=alice) as client,
            client.subscribe(user_scope()) as subscription,
        ):
            env |= {"EVENTROUTER_PROTOS": str(ROOT / "protos"), "EVENTROUTER_TARGET": target}
            event = await node_emit_reaches(
                node, demo, env | {"SERVICE_TOKEN": service}, subscription
            )
    assert event.payload.body.delete_session.session_id == "sess_1"
    assert event.position.offset == 1


def test_the_snippet_exits_1_on_an_error(node: str, demo: Path, tmp_path: Path) -> None:
    """``process.exitCode`` follows the error (no token here), so a script can tell."""
    env = {**ENV, "XDG_STATE_HOME": str(tmp_path / "state")}
    with serve("--log-level", "warning", env=env) as target:
        result = subprocess.run(
            [node, "emit.mjs"],
            cwd=demo,
            env={**env, "EVENTROUTER_PROTOS": str(ROOT / "protos"), "EVENTROUTER_TARGET": target},
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    assert result.returncode == 1
    assert "UNAUTHENTICATED" in result.stdout
