"""How figures are written in the report: "n/a" for what was not measured, never an estimate."""

from __future__ import annotations

from typing import Any


def f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def mib(value: float | None) -> float | None:
    return None if value is None else value / (1024 * 1024)


def kib(value: float | None) -> float | None:
    return None if value is None else value / 1024


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b
