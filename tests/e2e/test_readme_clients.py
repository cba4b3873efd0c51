"""The README's Python client program, run as written against a real server.

As the README says to: ``eventrouter serve`` in its secure default mode,
tokens minted with ``eventrouter token`` into ``SERVICE_TOKEN`` and
``ALICE_TOKEN``, the program saved to a file and run with this Python.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e.cli_helpers import ENV, needs_console_script, run, serve
from tests.support.readme import examples, outputs

pytestmark = needs_console_script


def test_the_clients_program_prints_what_the_readme_shows(tmp_path: Path) -> None:
    program = tmp_path / "alice.py"
    program.write_text(examples()["clients"].code)
    env = {**ENV, "XDG_STATE_HOME": str(tmp_path / "state")}
    with serve("--log-level", "warning", env=env) as target:
        tokens = {
            name: run("token", *args, env=env).stdout.strip()
            for name, args in (
                ("SERVICE_TOKEN", ["--service"]),
                ("ALICE_TOKEN", ["--user", "alice"]),
            )
        }
        assert all(tokens.values()), tokens
        result = subprocess.run(
            [sys.executable, str(program)],
            env={**env, **tokens, "EVENTROUTER_TARGET": target},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout == outputs()["clients"]
