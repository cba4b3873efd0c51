"""Snapshot protos/ as the released contract baseline (run when cutting a release).

The snapshot lands in ``contract/released/``: a copy of ``protos/buf.yaml`` and
of every .proto under ``protos/`` at the same relative path, plus a ``VERSION``
file naming the release.  It lives outside ``protos/`` so that ``buf lint`` and
``buf build`` of the module never see it; ``make proto-check`` and
``tests/contract/test_buf.py`` run ``buf breaking --against contract/released``
from ``protos/``, so every later change must stay wire- and source-compatible
with the last release.

Before overwriting a baseline the script runs that same ``buf breaking`` check
and refuses a breaking snapshot unless ``--allow-breaking`` is given (a new
major version belongs in a new proto package, e.g. ``eventrouter.v2``).

Usage: ``python scripts/release_contract.py [--version X.Y.Z] [--allow-breaking]``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
BASELINE = ROOT / "contract" / "released"
BUF = ROOT / "node_modules" / ".bin" / "buf"


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert isinstance(version, str)
    return version


def module_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """The files of the buf module that make up the contract, relative to ``proto_root``."""
    files = sorted(p.relative_to(proto_root) for p in proto_root.rglob("*.proto"))
    return [Path("buf.yaml"), *files]


def check_not_breaking(baseline: Path = BASELINE) -> None:
    """Fail (SystemExit) if protos/ breaks the existing baseline."""
    if not BUF.exists():
        raise SystemExit(
            f"{BUF.relative_to(ROOT)} not found: install @bufbuild/buf with `make node-deps` "
            "(or pass --allow-breaking to skip the check)"
        )
    result = subprocess.run(
        [str(BUF), "breaking", "--against", str(baseline)],
        cwd=PROTO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(
            "protos/ is not compatible with the released contract; refusing to snapshot "
            f"(pass --allow-breaking to override):\n{result.stdout}{result.stderr}"
        )


def snapshot(version: str, dest: Path = BASELINE, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Replace ``dest`` with a copy of the module in ``proto_root``; return the copied files."""
    if dest.exists():
        shutil.rmtree(dest)
    copied = []
    for rel in module_files(proto_root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(proto_root / rel, target)
        copied.append(target)
    (dest / "VERSION").write_text(f"{version}\n", encoding="utf-8")
    return copied


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--version", default=None, help="release name (default: the version in pyproject.toml)"
    )
    parser.add_argument(
        "--allow-breaking",
        action="store_true",
        help="snapshot even if protos/ breaks the current baseline",
    )
    args = parser.parse_args(argv)
    version: str = args.version or project_version()
    if BASELINE.exists() and not args.allow_breaking:
        check_not_breaking()
    for path in snapshot(version):
        print(path.relative_to(ROOT))
    print(f"contract baseline is now release {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
