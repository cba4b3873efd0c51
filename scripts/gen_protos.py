"""Regenerate the Python code and typed stubs for protos/ (``make gen``).

Generated modules land in ``client/eventrouter/v1`` because the proto package
``eventrouter.v1`` is also the Python package: ``from eventrouter.v1 import
events_pb2`` works with no import rewriting.  The test suite calls
``generate(tmpdir)`` and compares the result with the committed files, so a
.proto edited without ``make gen`` fails the build.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = Path("eventrouter") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / PACKAGE).glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Generate into ``out_root/eventrouter/v1``; return the generated files."""
    (out_root / PACKAGE).mkdir(parents=True, exist_ok=True)
    well_known = Path(protoc.__file__).parent / "_proto"
    # The mypy-protobuf plugins live beside this interpreter (the venv's bin/).
    bindir = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in (out_root / PACKAGE).iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "client")
    out: Path = parser.parse_args().out
    target = out / PACKAGE
    # Drop stale outputs of protos that were removed.
    if target.exists():
        for old in target.iterdir():
            if old.name.endswith(GENERATED_SUFFIXES):
                old.unlink()
    for path in generate(out):
        print(path.relative_to(out))
    shutil.rmtree(target / "__pycache__", ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
