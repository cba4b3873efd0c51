"""Fixtures of the polyglot suite."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.polyglot.typescript import TypeScriptPackage, build_package

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` binary, once the npm packages the suite uses are installed.

    Skips on a user's machine without them; fails under CI=true.
    """
    path = shutil.which("node")
    require_tool(path is not None, "node (Node.js)")
    assert path is not None
    for package in ("@grpc/grpc-js", "@grpc/proto-loader"):
        require_tool(
            (ROOT / "node_modules" / package / "package.json").exists(),
            f"node_modules/{package} (run `make node-deps`)",
        )
    return path


@pytest.fixture(scope="session")
def ts_package() -> TypeScriptPackage:
    """client/typescript built once per run (strict ``tsc``: ESM, CommonJS and the tests)."""
    return build_package()
