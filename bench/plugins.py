"""Finding the modules of a package that each add something: a workload, a target."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from types import ModuleType


def modules(package: str, path: Iterable[str], helpers: set[str]) -> list[ModuleType]:
    """Every module of ``package`` (at ``path``) but the private ones and the ``helpers``."""
    return [
        importlib.import_module(f"{package}.{m.name}")
        for m in pkgutil.iter_modules(path)
        if not m.name.startswith("_") and m.name not in helpers
    ]
