"""``make dist`` once per session: the sdist and the wheel the packaging tests check.

The build runs offline (``--no-isolation``: the venv's setuptools), exactly
as ``make dist`` does, on a copy of the repository, so the working tree gets
no build/, dist/ or egg-info. ``python -m build`` makes the sdist first and
the wheel from the unpacked sdist, so a file the sdist lacks fails here too.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 120

# Never copied into the build tree (big, irrelevant or build by-products).
_SKIP_TOP = {".git", ".venv", ".venv-latest", "node_modules", "build", "dist"}
_SKIP_ANY = shutil.ignore_patterns(
    "__pycache__",
    "*.pyc",
    "*.egg-info",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
)


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path


def _ignore(directory: str, names: list[str]) -> set[str]:
    skipped = set(_SKIP_ANY(directory, names))
    if Path(directory) == ROOT:
        skipped |= _SKIP_TOP & set(names)
    return skipped


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    for module in ("build", "setuptools"):
        require_tool(
            importlib.util.find_spec(module) is not None,
            f"the `{module}` package in this Python (run `make venv`)",
        )
    base = tmp_path_factory.mktemp("dist")
    src, out = base / "src", base / "dist"
    shutil.copytree(ROOT, src, ignore=_ignore, symlinks=True)
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"make dist failed:\n{result.stdout}\n{result.stderr}"
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert len(sdists) == 1, f"expected one sdist, got {sdists}"
    assert len(wheels) == 1, f"expected one wheel, got {wheels}"
    return Dist(sdists[0], wheels[0])
