"""The README's runnable examples run: a README that lies fails the suite."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE = re.compile(r"<!-- readme-example: (\S+) -->\n```python\n(.*?)```", re.DOTALL)


def examples() -> dict[str, str]:
    return dict(EXAMPLE.findall(README.read_text()))


def test_readme_has_the_codec_example() -> None:
    assert "codec" in examples()


@pytest.mark.parametrize("name", sorted(examples()))
def test_readme_example_runs(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(examples()[name], f"README.md:{name}", "exec"), {})
    assert "sess_1" in capsys.readouterr().out
