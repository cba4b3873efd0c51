"""Running the TypeScript client's checks and tests (client/typescript) from the suite.

The package's npm dependencies come from its own lock (``make ts-deps`` runs
``npm ci`` there); the fixture builds it once per run (``npm run build``: the
ESM and CommonJS builds, type-checked by strict ``tsc``) and compiles its tests
(``npm run build:test``). Without node, npm or those dependencies the tests
skip on a user's machine and fail under CI=true.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "client" / "typescript"
BUILD_TIMEOUT_S = 300.0
TEST_TIMEOUT_S = 240.0
_COUNT = re.compile(r"^# (pass|fail|skipped|cancelled|todo) (\d+)$", re.MULTILINE)


@dataclass(frozen=True)
class TypeScriptPackage:
    """The built package: run npm scripts and node's test runner in it."""

    node: str
    npm: str
    root: Path = PACKAGE

    def npm_run(
        self, script: str, timeout: float = BUILD_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        return run([self.npm, "run", "--silent", script], self.root, timeout=timeout)

    def node_tests(
        self, pattern: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``node --test`` over the compiled test files matching ``pattern`` (under build/test)."""
        files = sorted(str(p.relative_to(self.root)) for p in (self.root / "build").glob(pattern))
        assert files, f"no compiled tests match build/{pattern}"
        command = [self.node, "--test", "--test-reporter=tap", *files]
        return run(command, self.root, env=env, timeout=TEST_TIMEOUT_S)


def run(
    command: Sequence[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = TEST_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command),
        cwd=cwd,
        env=dict(env if env is not None else os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"


def counts(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """The summary node's TAP reporter ends with: pass, fail, skipped, cancelled, todo."""
    return {name: int(number) for name, number in _COUNT.findall(result.stdout)}


def build_package() -> TypeScriptPackage:
    """Check the tools, build the package and its tests; skip or fail when they are missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    require_tool(node is not None and npm is not None, "node and npm (Node.js)")
    assert node is not None
    assert npm is not None
    require_tool(
        (PACKAGE / "node_modules" / "typescript" / "package.json").exists(),
        "client/typescript/node_modules (run `make ts-deps`)",
    )
    package = TypeScriptPackage(node, npm)
    for script in ("build", "build:test"):
        result = package.npm_run(script)
        assert result.returncode == 0, f"npm run {script} failed\n{output(result)}"
    return package
