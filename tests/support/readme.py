"""The README's runnable examples, their expected output and its config files, by name.

A block marked ``<!-- readme-example: NAME -->`` is code the suite runs as
written; one marked ``<!-- readme-output: NAME -->`` is what example NAME
must print; one marked ``<!-- readme-config: NAME -->`` is a configuration
file a test runs (``nginx``: tests/browser/test_proxy.py). A README that lies
fails the suite. docs/deploy.md marks its own the same way, as
``<!-- deploy-example: NAME -->``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DEPLOY = ROOT / "docs" / "deploy.md"
_BLOCK = r"<!-- {prefix}-(example|output|config): (\S+) -->\n```(\w*)\n(.*?)```"

# Where each example runs: unit (no server) or against a real server (ts-browser: bundled
# for browsers, and run against the web listener once `serve` has one).
OFFLINE = frozenset({"codec", "forward-compat"})
SERVED = frozenset({"clients", "node", "ts-node", "ts-browser"})
# Configuration files the suite runs: the nginx in front of the web listener.
CONFIGS = frozenset({"nginx"})


@dataclass(frozen=True)
class Example:
    language: str
    code: str


def _blocks(path: Path, prefix: str) -> list[tuple[str, str, str, str]]:
    pattern = re.compile(_BLOCK.format(prefix=prefix), re.DOTALL)
    return pattern.findall(path.read_text())


def examples(path: Path = README, prefix: str = "readme") -> dict[str, Example]:
    return {
        name: Example(language, body)
        for kind, name, language, body in _blocks(path, prefix)
        if kind == "example"
    }


def outputs() -> dict[str, str]:
    return _bodies("output")


def configs() -> dict[str, str]:
    return _bodies("config")


def _bodies(kind: str) -> dict[str, str]:
    return {name: body for found, name, _lang, body in _blocks(README, "readme") if found == kind}
