"""buf lint and buf breaking over the contract in protos/.

The breaking-change baseline is the released contract in contract/released
(snapshotted by scripts/release_contract.py); it is outside protos/ so buf
never lints it as part of the module.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.contract._support import BASELINE, PROTO_ROOT

BUF_TIMEOUT_S = 120


@dataclass(frozen=True)
class BufResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return f"{self.stdout}{self.stderr}".strip()

    def annotations(self) -> list[dict[str, object]]:
        """buf's findings from ``--error-format=json``: one JSON object per line."""
        found: list[dict[str, object]] = []
        for line in self.stdout.splitlines():
            if line.strip().startswith("{"):
                found.append(json.loads(line))
        return found


def run_buf(buf: Path, *args: str, cwd: Path = PROTO_ROOT) -> BufResult:
    result = subprocess.run(
        [str(buf), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=BUF_TIMEOUT_S,
        check=False,
    )
    return BufResult(result.returncode, result.stdout, result.stderr)


def breaking(buf: Path, module: Path = PROTO_ROOT) -> BufResult:
    return run_buf(buf, "breaking", "--against", str(BASELINE), "--error-format=json", cwd=module)


def test_buf_lint(buf: Path) -> None:
    result = run_buf(buf, "lint")
    assert result.returncode == 0, f"buf lint failed in protos/:\n{result.output}"


def test_baseline_is_a_released_contract() -> None:
    protos = sorted(BASELINE.rglob("*.proto"))
    assert protos, f"no released contract in {BASELINE}: run scripts/release_contract.py"
    assert (BASELINE / "VERSION").read_text(encoding="utf-8").strip(), (
        "contract/released/VERSION is empty"
    )
    assert not BASELINE.is_relative_to(PROTO_ROOT), "the baseline must live outside protos/"


def test_no_breaking_change_against_release(buf: Path) -> None:
    result = breaking(buf)
    assert result.returncode == 0, (
        "protos/ breaks the released contract in contract/released "
        f"(a breaking change needs a new package, e.g. eventrouter.v2):\n{result.output}"
    )


# --- the check catches breaking changes --------------------------------------


def _edit_message(text: str, message: str, old: str, new: str) -> str:
    """Replace ``old`` (exactly once) inside the body of ``message <name> { ... }``."""
    match = re.search(rf"^message {message} \{{\n.*?^\}}\n", text, flags=re.M | re.S)
    assert match is not None, f"message {message} not found: update this test"
    body = match.group(0)
    assert body.count(old) == 1, f"{old!r} not found once in message {message}: update this test"
    return text[: match.start()] + body.replace(old, new) + text[match.end() :]


def _renumber_field(text: str) -> str:
    return _edit_message(text, "UpdatePayload", "int64 seq = 2;", "int64 seq = 20;")


def _delete_field(text: str) -> str:
    return _edit_message(
        text, "MachineStatus", "  // Whether the daemon is online.\n  bool online = 2;\n", ""
    )


def _rename_message(text: str) -> str:
    assert text.count("message VersionedString {") == 1, "update this test"
    renamed = re.sub(r"\bVersionedString\b", "VersionedText", text)
    assert renamed != text
    return renamed


@dataclass(frozen=True)
class BreakingCase:
    file: str
    edit: Callable[[str], str]
    rule: str  # the buf rule that must report it


CASES = {
    "renumber-field": BreakingCase("events.proto", _renumber_field, "FIELD_NO_DELETE"),
    "delete-field": BreakingCase("events.proto", _delete_field, "FIELD_NO_DELETE"),
    "rename-message": BreakingCase("events.proto", _rename_message, "MESSAGE_NO_DELETE"),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_breaking_change_is_detected(buf: Path, tmp_path: Path, case: BreakingCase) -> None:
    module = tmp_path / "protos"
    shutil.copytree(PROTO_ROOT, module)
    target = module / "eventrouter" / "v1" / case.file
    target.write_text(case.edit(target.read_text(encoding="utf-8")), encoding="utf-8")

    result = breaking(buf, module)
    assert result.returncode != 0, f"buf breaking accepted a breaking change:\n{result.output}"
    rules = {str(a.get("type")) for a in result.annotations()}
    assert "COMPILE" not in rules, f"the edited copy does not compile:\n{result.output}"
    assert case.rule in rules, f"expected {case.rule} from buf breaking, got:\n{result.output}"


def test_unchanged_copy_is_not_breaking(buf: Path, tmp_path: Path) -> None:
    """Control for the cases above: copying protos/ elsewhere alone breaks nothing."""
    module = tmp_path / "protos"
    shutil.copytree(PROTO_ROOT, module)
    result = breaking(buf, module)
    assert result.returncode == 0, result.output
