"""Regenerate the lock files under requirements/ from pyproject.toml (``make lock``).

Each install set gets one lock, with every package pinned and hashed, for
every platform and Python >= 3.11 (``uv pip compile --universal``):

    runtime.txt  the client library        (pyproject ``dependencies``)
    server.txt   ``eventrouter serve``      (+ the ``server`` extra)
    dev.txt      what ``make test`` needs   (+ the ``dev`` extra)
    bench.txt    what ``make bench`` needs  (+ the ``dev`` and ``bench`` extras)
    build.txt    pip and the build backend (``[build-system] requires``)

Every lock starts with a fingerprint of the dependency lists it was made
from; ``tests/packaging/test_lock.py`` fails with "run ``make lock``" when
pyproject.toml has changed since.  ``--upgrade`` moves every pin to the
newest release the ranges allow; without it, pins that still satisfy
pyproject.toml are kept (uv reads the existing output file).  bench.txt, the
largest set, is resolved first and constrains the others, so a package has
the same pin in every lock.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
LOCK_DIR = ROOT / "requirements"
FINGERPRINT_PREFIX = "# pyproject-fingerprint: "
# The oldest Python the project supports: a universal lock holds for it and every newer one.
PYTHON_FLOOR = "3.11"

# Lock file -> the extras it installs (None: the build-system requirements).
# The largest set is resolved first and constrains the others, so a package
# has the same pin in every lock that holds it (bench.txt installs over dev.txt).
LARGEST = "bench.txt"
LOCK_SETS: dict[str, tuple[str, ...] | None] = {
    LARGEST: ("dev", "bench"),
    "dev.txt": ("dev",),
    "server.txt": ("server",),
    "runtime.txt": (),
    "build.txt": None,
}
# pip itself is pinned with the build backend, so a fresh venv's pip is the same everywhere.
BUILD_EXTRA = ("pip",)


def load_pyproject(path: Path = PYPROJECT) -> dict[str, object]:
    with path.open("rb") as f:
        return tomllib.load(f)


def requirements_of(pyproject: dict[str, object], lock_name: str) -> list[str]:
    """The requirement strings a lock set is made from, as pyproject.toml states them."""
    extras = LOCK_SETS[lock_name]
    if extras is None:
        build = pyproject["build-system"]
        assert isinstance(build, dict)
        return [*build["requires"], *BUILD_EXTRA]
    project = pyproject["project"]
    assert isinstance(project, dict)
    name = project["name"]
    optional = project.get("optional-dependencies", {})
    requirements = list(project.get("dependencies", []))
    pending = list(extras)
    seen: set[str] = set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in optional[extra]:
            # A self-reference such as "eventrouter[server]" pulls in that extra.
            head = requirement.split(";")[0].strip()
            if head.startswith(f"{name}[") and head.endswith("]"):
                pending.extend(part.strip() for part in head[len(name) + 1 : -1].split(","))
            else:
                requirements.append(requirement)
    return requirements


def fingerprint(requirements: Iterable[str]) -> str:
    """A digest of a set's requirement strings (order and spacing do not matter)."""
    normalized = sorted({"".join(r.split()) for r in requirements})
    return hashlib.sha256(json.dumps(normalized).encode()).hexdigest()[:16]


def _uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if found is None:
        raise SystemExit("make lock: uv is missing; it is in the dev extra (make venv)")
    return found


def compile_lock(lock_name: str, upgrade: bool) -> None:
    pyproject = load_pyproject()
    out = LOCK_DIR / lock_name
    extras = LOCK_SETS[lock_name]
    command = [
        _uv(),
        "pip",
        "compile",
        "--quiet",
        "--universal",
        "--python-version",
        PYTHON_FLOOR,
        "--generate-hashes",
        "--no-header",
        "--output-file",
        str(out),
    ]
    if lock_name == LARGEST:
        if upgrade:
            command.append("--upgrade")
    else:
        command += ["--constraint", str(LOCK_DIR / LARGEST)]
    source: Path | None = None
    if extras is None:
        source = LOCK_DIR / "build.in"
        source.write_text("\n".join(requirements_of(pyproject, lock_name)) + "\n")
        command.append(str(source))
    else:
        command.append(str(PYPROJECT))
        for extra in extras:
            command += ["--extra", extra]
    try:
        subprocess.run(command, check=True, cwd=ROOT)
    finally:
        if source is not None:
            source.unlink()
    body = out.read_text()
    header = (
        "# Generated by `make lock` (scripts/lock.py, uv pip compile --universal"
        " --generate-hashes); do not edit.\n"
        f"# Set: {lock_name.removesuffix('.txt')}"
        f"{' (extras: ' + ', '.join(extras) + ')' if extras else ''}\n"
        f"{FINGERPRINT_PREFIX}{fingerprint(requirements_of(pyproject, lock_name))}\n"
    )
    out.write_text(header + body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--upgrade", action="store_true", help="move every pin to the newest allowed release"
    )
    args = parser.parse_args()
    LOCK_DIR.mkdir(exist_ok=True)
    for lock_name in LOCK_SETS:
        compile_lock(lock_name, args.upgrade)
        print(f"lock: requirements/{lock_name}")


if __name__ == "__main__":
    main()
