"""How setting values are checked: one ``Problem`` per wrong value, naming its fields.

``problems`` checks a full set of values in four passes, and reports every
problem it finds (never only the first):

1. each value has its setting's type (bool, int, float or str; an int is a
   fine float, a bool is not a number);
2. each number is finite and not negative;
3. each setting's own ``check`` (declared with its field in ``settings``);
4. the rules ``between`` settings (one value makes another wrong or useless).

A value of the wrong type is left out of passes 2-4: the checks that
involve it would only add noise.  Where the values came from is for the
caller to say (``sources.resolve_config`` prefixes each problem with it).

This module is the floor of the package: it imports nothing of it.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eventrouter.server.broker.redis_config import MEMORY_URL, check_broker_url

# A setting's own check: why its value is wrong, or None when it is fine.
Check = Callable[[Any], str | None]

# How a type is named in a problem ("expected an integer, got ...").
KIND_NAMES: dict[type, str] = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One wrong value (or combination of values): the fields involved and why."""

    fields: tuple[str, ...]
    message: str

    def __str__(self) -> str:
        return f"{', '.join(self.fields)}: {self.message}"


# -- checks of one value (a field's ``check=``) -------------------------------


def _is_host_port(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 <= int(port) <= 65535)


def host_port(value: str) -> str | None:
    return None if _is_host_port(value) else f"expected HOST:PORT, got {value!r}"


def host_port_or_off(value: str) -> str | None:
    """An address to listen on, or empty: that listener is off."""
    if value == "" or _is_host_port(value):
        return None
    return f"expected HOST:PORT or empty (off), got {value!r}"


def one_of(choices: Sequence[str], *, fold_case: bool = False) -> Check:
    """The value is one of ``choices`` (compared in lower case with ``fold_case``)."""

    def check(value: str) -> str | None:
        if (value.lower() if fold_case else value) in choices:
            return None
        return f"expected one of {', '.join(choices)}, got {value!r}"

    return check


def at_least(low: int) -> Check:
    """A count of at least ``low`` (a negative one is reported by pass 2 already)."""

    def check(value: int) -> str | None:
        return None if value < 0 or value >= low else f"must be at least {low}, got {value}"

    return check


def more_than(low: int) -> Check:
    """A number above ``low`` (reported even when pass 2 found it negative or not finite)."""

    def check(value: float) -> str | None:
        return None if value > low else f"must be more than {low}, got {value}"

    return check


def all_of(*checks: Check) -> Check:
    """The first problem any of ``checks`` finds."""

    def check(value: Any) -> str | None:
        for each in checks:
            message = each(value)
            if message is not None:
                return message
        return None

    return check


def broker_url(value: str) -> str | None:
    try:
        check_broker_url(value)
    except ValueError as e:
        return str(e).removeprefix("broker: ")
    return None


def cpu_cores() -> int:
    """The cores this process may run on (``workers = "auto"``).

    ``os.process_cpu_count()`` (Python 3.13+), else the affinity mask it
    reads, else ``os.cpu_count()``.
    """
    counter = getattr(os, "process_cpu_count", None)
    if counter is not None:
        return int(counter() or 1)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def worker_count(value: str) -> int:
    """How many workers ``workers`` asks for: ``auto`` (the cores) or a whole number."""
    return cpu_cores() if value.strip().lower() == "auto" else int(value)


# Workers share a port through SO_REUSEPORT, which spreads connections over
# its listeners on Linux only (elsewhere one listener would take them all).
SHARED_PORTS = sys.platform == "linux"


def workers_value(value: str) -> str | None:
    """``auto`` or a whole number of at least 1; more than 1 on Linux only."""
    word = value.strip().lower()
    if word != "auto" and not (word.isdigit() and int(word) >= 1):
        return f"expected a number of workers (1 or more) or auto, got {value!r}"
    if not SHARED_PORTS and worker_count(value) > 1:
        return f"more than 1 worker needs Linux (SO_REUSEPORT), got {value!r} on {sys.platform}"
    return None


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def loop_available(value: str) -> str | None:
    """The event loop named can run here: uvloop must be installed to be asked for."""
    if value == "uvloop" and not uvloop_installed():
        return "uvloop is not installed (pip install 'eventrouter[server]'; not on Windows)"
    return None


# -- rules between settings ------------------------------------------------------


def between(v: Mapping[str, Any]) -> Iterator[Problem]:
    """Problems of combinations: one value that makes another wrong or useless.

    ``v`` holds the values of the right type only: a rule whose fields are
    not all in it is skipped (``has``).
    """

    def has(*names: str) -> bool:
        return all(name in v for name in names)

    if has("max_event_bytes", "max_request_bytes") and (
        v["max_event_bytes"] > v["max_request_bytes"]
    ):
        yield Problem(
            ("max_event_bytes", "max_request_bytes"),
            f"max_event_bytes ({v['max_event_bytes']}) must not exceed"
            f" max_request_bytes ({v['max_request_bytes']})",
        )
    # Otherwise one large update would close even an idle subscriber as "too slow".
    if has("max_event_bytes", "queue_max_bytes") and v["max_event_bytes"] > v["queue_max_bytes"]:
        yield Problem(
            ("max_event_bytes", "queue_max_bytes"),
            f"max_event_bytes ({v['max_event_bytes']}) must not exceed"
            f" queue_max_bytes ({v['queue_max_bytes']})",
        )
    if has("web_cors_origins", "web_listen") and v["web_cors_origins"] and not v["web_listen"]:
        yield Problem(
            ("web_cors_origins", "web_listen"), "web_cors_origins needs web_listen (it is off)"
        )
    if has("tls_cert", "tls_key") and bool(v["tls_cert"]) != bool(v["tls_key"]):
        yield Problem(("tls_cert", "tls_key"), "tls_cert and tls_key go together")
    if has("tls_client_ca", "tls_cert") and v["tls_client_ca"] and not v["tls_cert"]:
        yield Problem(("tls_client_ca", "tls_cert"), "tls_client_ca needs tls_cert and tls_key")
    if v.get("insecure"):
        key_fields = tuple(n for n in ("keys_file", "revoked_token_ids") if v.get(n))
        if key_fields:
            yield Problem(
                ("insecure", *key_fields),
                f"insecure mode ignores keys: drop {' and '.join(key_fields)}",
            )
    # Each worker routes through the broker: with memory:// it would route only
    # its own connections, and the others' would silently miss events.
    if (
        has("workers", "broker")
        and workers_value(v["workers"]) is None
        and v["broker"] == MEMORY_URL
    ):
        count = worker_count(v["workers"])
        if count > 1:
            yield Problem(
                ("workers", "broker"),
                f"{count} workers need a shared broker: add --broker redis://HOST:PORT/DB"
                " (with memory:// each worker would route only its own connections)",
            )
    if has("hash_key_file", "hash_user_ids") and v["hash_key_file"] and not v["hash_user_ids"]:
        yield Problem(
            ("hash_key_file", "hash_user_ids"),
            "hash_key_file has no effect without hash_user_ids",
        )


# -- all of it -------------------------------------------------------------------


def _has_type(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, kind) and not isinstance(value, bool)


def problems(
    values: Mapping[str, Any], specs: Sequence[tuple[str, type, Check | None]]
) -> list[Problem]:
    """Every problem with ``values``, one for each of ``specs`` (name, type, check).

    ``settings.validate`` calls it with ``ServerConfig``'s fields.
    """
    found: list[Problem] = []
    wrong_type: set[str] = set()
    for name, kind, _ in specs:
        value = values[name]
        if not _has_type(value, kind):
            wrong_type.add(name)
            found.append(Problem((name,), f"expected {KIND_NAMES[kind]}, got {value!r}"))
    v = {name: value for name, value in values.items() if name not in wrong_type}
    for name, kind, _ in specs:
        if name in wrong_type or kind not in (int, float):
            continue
        value = v[name]
        if isinstance(value, float) and not math.isfinite(value):
            found.append(Problem((name,), f"must be a finite number, got {value}"))
        elif value < 0:
            found.append(Problem((name,), f"must not be negative, got {value}"))
    for name, _, check in specs:
        if check is not None and name in v:
            message = check(v[name])
            if message is not None:
                found.append(Problem((name,), message))
    found.extend(between(v))
    return found


__all__ = [
    "KIND_NAMES",
    "SHARED_PORTS",
    "Check",
    "Problem",
    "all_of",
    "at_least",
    "between",
    "broker_url",
    "cpu_cores",
    "host_port",
    "host_port_or_off",
    "loop_available",
    "more_than",
    "one_of",
    "problems",
    "uvloop_installed",
    "worker_count",
    "workers_value",
]
