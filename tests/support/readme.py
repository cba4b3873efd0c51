"""The README's runnable examples and their expected output, by name.

A block marked ``<!-- readme-example: NAME -->`` is code the suite runs as
written; one marked ``<!-- readme-output: NAME -->`` is what example NAME
must print; one marked ``<!-- readme-config: NAME -->`` is a configuration
file a test runs (``nginx``: tests/browser/test_proxy.py). A README that lies
fails the suite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
_BLOCK = re.compile(
    r"<!-- readme-(example|output|config): (\S+) -->\n```(\w*)\n(.*?)```", re.DOTALL
)

# Where each example runs: unit (no server) or against a real server (ts-browser: bundled
# for browsers, and run against the web listener once `serve` has one).
OFFLINE = frozenset({"codec", "forward-compat"})
SERVED = frozenset({"clients", "node", "ts-node", "ts-browser"})
# Configuration the suite runs: nginx before the web listener (tests/browser/test_proxy.py).
CONFIGS = frozenset({"nginx"})


@dataclass(frozen=True)
class Example:
    language: str
    code: str


def examples() -> dict[str, Example]:
    return {
        name: Example(language, body)
        for kind, name, language, body in _BLOCK.findall(README.read_text())
        if kind == "example"
    }


def outputs() -> dict[str, str]:
    return _bodies("output")


def configs() -> dict[str, str]:
    return _bodies("config")


def _bodies(kind: str) -> dict[str, str]:
    return {
        name: body
        for found, name, _language, body in _BLOCK.findall(README.read_text())
        if found == kind
    }
