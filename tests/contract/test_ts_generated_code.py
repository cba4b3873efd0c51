"""The committed TypeScript code in client/typescript/src/gen is exactly what `make ts-gen` makes.

buf runs the package's own buf.gen.yaml (protoc-gen-es from the package's
lock) with its output redirected to a temporary folder; any difference, a
missing or an extra file fails with the command that fixes it.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from tests.contract._support import ROOT, missing_tool
from tests.polyglot.typescript import PACKAGE, run

COMMITTED = PACKAGE / "src" / "gen"
PLUGIN = PACKAGE / "node_modules" / ".bin" / "protoc-gen-es"
STALE = "generated TypeScript code is stale: run `make ts-gen`"


def _files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*.ts"))}


def test_generated_typescript_matches_protos(buf: Path, tmp_path: Path) -> None:
    if not PLUGIN.exists():
        missing_tool(f"{PLUGIN.relative_to(ROOT)} not found: run `make ts-deps`")
    result = run(
        [str(buf), "generate", "--template", "buf.gen.yaml", "--output", str(tmp_path)], PACKAGE
    )
    assert result.returncode == 0, result.stderr
    fresh = _files(tmp_path / "src" / "gen")
    committed = _files(COMMITTED)
    assert fresh, "buf generated nothing"
    problems = [f"missing (not committed): {n}" for n in sorted(fresh.keys() - committed.keys())]
    problems += [f"extra (not generated): {n}" for n in sorted(committed.keys() - fresh.keys())]
    for name in sorted(fresh.keys() & committed.keys()):
        old, new = committed[name].read_text(), fresh[name].read_text()
        if old != new:
            diff = difflib.unified_diff(old.splitlines(), new.splitlines(), name, name, lineterm="")
            problems.append(f"differs: {name}\n" + "\n".join(list(diff)[:40]))
    assert not problems, f"{STALE}\n" + "\n".join(problems)
