"""The README's runnable examples run: a README that lies fails the suite.

The examples that need a server run in tests/e2e/test_readme_clients.py and
tests/polyglot/test_readme_node.py; this module runs the others and checks
that none is left out.
"""

from __future__ import annotations

import pytest

from tests.support.readme import CONFIGS, OFFLINE, SERVED, configs, examples, outputs


def test_every_example_is_run_somewhere() -> None:
    assert set(examples()) == OFFLINE | SERVED
    assert set(outputs()) <= set(examples())
    assert {examples()[name].language for name in SERVED} == {"python", "js"}
    assert set(configs()) == CONFIGS


@pytest.mark.parametrize("name", sorted(OFFLINE))
def test_readme_example_runs(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    example = examples()[name]
    assert example.language == "python"
    exec(compile(example.code, f"README.md:{name}", "exec"), {})
    assert "sess_1" in capsys.readouterr().out
