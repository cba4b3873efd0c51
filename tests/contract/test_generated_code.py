"""The committed generated code in client/eventrouter/v1 is exactly what `make gen` makes."""

from __future__ import annotations

import difflib
from pathlib import Path

from tests.contract._support import ROOT, load_script

COMMITTED = ROOT / "client" / "eventrouter" / "v1"
STALE = "generated code is stale: run `make gen`"


def _diff(committed: Path, fresh: Path, limit: int = 40) -> str:
    old = committed.read_text(encoding="utf-8", errors="replace").splitlines()
    new = fresh.read_text(encoding="utf-8", errors="replace").splitlines()
    lines = list(
        difflib.unified_diff(
            old, new, f"committed/{committed.name}", f"fresh/{fresh.name}", lineterm=""
        )
    )
    more = f"\n... ({len(lines) - limit} more diff lines)" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    gen = load_script("gen_protos")
    suffixes: tuple[str, ...] = tuple(gen.GENERATED_SUFFIXES)
    generated: list[Path] = gen.generate(tmp_path)
    assert generated, "scripts/gen_protos.py generated nothing"

    fresh = {p.name: p for p in generated}
    committed = {p.name: p for p in COMMITTED.iterdir() if p.name.endswith(suffixes)}
    problems: list[str] = []
    problems += [
        f"missing (not committed): {name}" for name in sorted(fresh.keys() - committed.keys())
    ]
    problems += [
        f"extra (committed, no longer generated): {name}"
        for name in sorted(committed.keys() - fresh.keys())
    ]
    for name in sorted(fresh.keys() & committed.keys()):
        if fresh[name].read_bytes() != committed[name].read_bytes():
            problems.append(f"differs: {name}\n{_diff(committed[name], fresh[name])}")
    assert not problems, f"{STALE}\n" + "\n".join(problems)
