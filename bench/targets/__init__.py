"""The benchmark's targets: one module per target, found here by itself.

A module of this package that defines ``TARGET = SomeTarget()`` (a
base.Target) adds a target to ``make bench`` (see bench/README.md, "Adding a
target"); ``grpc_clients`` holds the load generators every gRPC target shares.
"""

from __future__ import annotations

from plugins import modules

from targets.base import ROLES, Options, Target
from targets.grpc_clients import CLIENTS, clients_note, node_clients_installed

_found: list[Target] = [m.TARGET for m in modules(__name__, __path__, {"base", "grpc_clients"})]
REGISTRY: dict[str, Target] = {t.name: t for t in sorted(_found, key=lambda t: t.order)}


def resolve(name: str) -> tuple[Target, list[str]]:
    """``eventrouter+gc+yield`` -> (the eventrouter target, ["gc", "yield"])."""
    base, *variants = name.split("+")
    if base not in REGISTRY:
        raise KeyError(f"unknown target {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[base], variants


__all__ = [
    "CLIENTS",
    "REGISTRY",
    "ROLES",
    "Options",
    "Target",
    "clients_note",
    "node_clients_installed",
    "resolve",
]
