"""Server configuration: one dataclass, filled from flags, environment and a TOML file.

Every field of ``ServerConfig`` can be set four ways; the first that names it wins:

1. a command-line flag, ``--queue-max-events 64`` (booleans: ``--insecure`` /
   ``--no-insecure``);
2. an environment variable ``EVENTROUTER_<FIELD>`` in upper snake case,
   ``EVENTROUTER_QUEUE_MAX_EVENTS=64`` (booleans: true/false, 1/0, yes/no, on/off);
3. a TOML file given by ``--config FILE`` (or ``EVENTROUTER_CONFIG``), with flat
   keys named like the fields, ``queue_max_events = 64``;
4. the default below.

Everything is checked before the server starts, and every wrong value is
reported at once with where it came from and which field it is: a TOML key
or an ``EVENTROUTER_`` variable that names no field is an error too (a typo
must not silently leave the default in force).  ``eventrouter config`` prints
the result (see ``eventrouter.server.ops.config_cli``).
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from eventrouter.server.broker.redis_config import check_broker_url
from eventrouter.server.core.history import HistoryLimits
from eventrouter.server.core.queue import QueueLimits
from eventrouter.server.core.router import RouterLimits
from eventrouter.server.core.validation import IdRules
from eventrouter.server.security.limits import SecurityLimits
from eventrouter.server.security.tokens import default_keys_path

MiB = 1024 * 1024

ENV_PREFIX = "EVENTROUTER_"
CONFIG_FILE_ENV = "EVENTROUTER_CONFIG"
# Read by the ``eventrouter`` client commands, not by the server: allowed in
# the environment of ``eventrouter serve`` without being an error.
CLIENT_ENV_VARS = frozenset({"EVENTROUTER_TARGET", "EVENTROUTER_TOKEN"})

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json", "logfmt")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything ``eventrouter serve`` can be told; defaults are safe for production."""

    listen: str = "127.0.0.1:50051"
    log_level: str = "info"
    # Per-connection queue (slow consumers).
    queue_max_events: int = 1024
    queue_max_bytes: int = 8 * MiB
    queue_overflow_grace_ms: int = 1000
    # Per-user update history (resume).
    history_max_updates: int = 1000
    history_max_age_s: float = 600.0
    idempotency_window_s: float = 300.0
    # Input limits.
    max_event_bytes: int = 1 * MiB
    max_request_bytes: int = 16 * MiB
    # Liveness.
    heartbeat_ms: int = 0
    keepalive_time_s: float = 20.0
    keepalive_timeout_s: float = 10.0
    min_client_ping_interval_s: float = 10.0
    max_connection_age_s: float = 0.0
    max_connection_age_grace_s: float = 30.0
    shutdown_grace_s: float = 10.0
    node_id: str = ""
    # memory:// (one node) or redis://HOST:PORT/DB | redis+cluster://HOST:PORT (many).
    broker: str = "memory://"
    # Security.
    insecure: bool = False
    keys_file: str = ""
    revoked_token_ids: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    service_subjects: str = ""
    # Limits.
    max_streams_per_user: int = 100
    max_streams_per_node: int = 100_000
    max_concurrent_handshakes: int = 1000
    emit_rate_per_service: float = 0.0
    emit_burst_per_service: int = 10_000
    id_max_length: int = 256
    # Operability.
    log_format: str = "text"
    hash_user_ids: bool = False
    hash_key_file: str = ""
    metrics_listen: str = "127.0.0.1:9464"
    health_interval_s: float = 1.0
    # Runtime.
    event_loop: str = "auto"

    def __post_init__(self) -> None:
        problems = validate({f.name: getattr(self, f.name) for f in fields(self)})
        if problems:
            raise ValueError("; ".join(str(p) for p in problems))

    def keys_path(self) -> Path:
        return Path(self.keys_file) if self.keys_file else default_keys_path()

    def security_limits(self) -> SecurityLimits:
        return SecurityLimits(
            max_streams_per_user=self.max_streams_per_user,
            max_streams_per_node=self.max_streams_per_node,
            max_concurrent_handshakes=self.max_concurrent_handshakes,
            emit_rate_per_service=self.emit_rate_per_service,
            emit_burst_per_service=self.emit_burst_per_service,
        )

    def router_limits(self) -> RouterLimits:
        return RouterLimits(
            queue=QueueLimits(
                max_events=self.queue_max_events,
                max_bytes=self.queue_max_bytes,
                max_write_bytes=min(self.queue_max_bytes, 1 * MiB),
                overflow_grace_s=self.queue_overflow_grace_ms / 1000,
            ),
            history=HistoryLimits(self.history_max_updates, self.history_max_age_s),
            idempotency_window_s=self.idempotency_window_s,
            max_event_bytes=self.max_event_bytes,
            ids=IdRules(max_length=self.id_max_length),
        )

    def grpc_options(self) -> list[tuple[str, int]]:
        options = [
            ("grpc.keepalive_time_ms", int(self.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            # Clients pinging more often than this are sent GOAWAY (abuse guard).
            (
                "grpc.http2.min_ping_interval_without_data_ms",
                int(self.min_client_ping_interval_s * 1000),
            ),
            ("grpc.http2.max_ping_strikes", 2),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_receive_message_length", self.max_request_bytes),
            ("grpc.so_reuseport", 0),
        ]
        if self.max_connection_age_s:
            options += [
                ("grpc.max_connection_age_ms", int(self.max_connection_age_s * 1000)),
                ("grpc.max_connection_age_grace_ms", int(self.max_connection_age_grace_s * 1000)),
            ]
        return options


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One wrong value (or combination of values): the fields involved and why."""

    fields: tuple[str, ...]
    message: str

    def __str__(self) -> str:
        return f"{', '.join(self.fields)}: {self.message}"


@cache
def _field_types() -> dict[str, type]:
    """Field name -> its type (that of its default: bool, int, float or str)."""
    return {f.name: type(f.default) for f in fields(ServerConfig)}


def _host_port(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 <= int(port) <= 65535)


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def validate(values: Mapping[str, Any]) -> list[Problem]:
    """Every problem with a full set of field values (empty when they are fine)."""
    problems: list[Problem] = []
    types = _field_types()
    wrong_type: set[str] = set()
    for name, kind in types.items():
        value = values[name]
        ok = (
            isinstance(value, bool)
            if kind is bool
            else isinstance(value, int | float) and not isinstance(value, bool)
            if kind is float
            else isinstance(value, kind) and not isinstance(value, bool)
        )
        if not ok:
            wrong_type.add(name)
            problems.append(Problem((name,), f"expected {_KIND_NAMES[kind]}, got {value!r}"))
    v = {name: value for name, value in values.items() if name not in wrong_type}

    def check(condition: bool, names: tuple[str, ...], message: str) -> None:
        if not all(n in v for n in names):
            return  # already reported as the wrong type
        if not condition:
            problems.append(Problem(names, message))

    for name, kind in types.items():
        if name in wrong_type or kind not in (int, float):
            continue
        value = v[name]
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(Problem((name,), f"must be a finite number, got {value}"))
        elif value < 0:
            problems.append(Problem((name,), f"must not be negative, got {value}"))
    if "listen" in v:
        check(_host_port(v["listen"]), ("listen",), f"expected HOST:PORT, got {v['listen']!r}")
    if "broker" in v:
        try:
            check_broker_url(v["broker"])
        except ValueError as e:
            problems.append(Problem(("broker",), str(e).removeprefix("broker: ")))
    if "metrics_listen" in v:
        check(
            v["metrics_listen"] == "" or _host_port(v["metrics_listen"]),
            ("metrics_listen",),
            f"expected HOST:PORT or empty (off), got {v['metrics_listen']!r}",
        )
    for name in ("queue_max_events", "queue_max_bytes", "id_max_length"):
        if name in v and v[name] >= 0:  # negatives are reported above
            check(v[name] >= 1, (name,), f"must be at least 1, got {v[name]}")
    if "health_interval_s" in v:
        check(
            v["health_interval_s"] > 0,
            ("health_interval_s",),
            f"must be more than 0, got {v['health_interval_s']}",
        )
    if "max_event_bytes" in v and "max_request_bytes" in v:
        check(
            v["max_event_bytes"] <= v["max_request_bytes"],
            ("max_event_bytes", "max_request_bytes"),
            f"max_event_bytes ({v['max_event_bytes']}) must not exceed"
            f" max_request_bytes ({v['max_request_bytes']})",
        )
    if "max_event_bytes" in v and "queue_max_bytes" in v:
        # Otherwise one large update would close even an idle subscriber as "too slow".
        check(
            v["max_event_bytes"] <= v["queue_max_bytes"],
            ("max_event_bytes", "queue_max_bytes"),
            f"max_event_bytes ({v['max_event_bytes']}) must not exceed"
            f" queue_max_bytes ({v['queue_max_bytes']})",
        )
    if "log_level" in v:
        check(
            v["log_level"].lower() in LOG_LEVELS,
            ("log_level",),
            f"expected one of {', '.join(LOG_LEVELS)}, got {v['log_level']!r}",
        )
    if "event_loop" in v:
        check(
            v["event_loop"] in EVENT_LOOPS,
            ("event_loop",),
            f"expected one of {', '.join(EVENT_LOOPS)}, got {v['event_loop']!r}",
        )
        check(
            v["event_loop"] != "uvloop" or uvloop_installed(),
            ("event_loop",),
            "uvloop is not installed (pip install 'eventrouter[server]'; not on Windows)",
        )
    if "log_format" in v:
        check(
            v["log_format"] in LOG_FORMATS,
            ("log_format",),
            f"expected one of {', '.join(LOG_FORMATS)}, got {v['log_format']!r}",
        )
    if "tls_cert" in v and "tls_key" in v:
        check(
            bool(v["tls_cert"]) == bool(v["tls_key"]),
            ("tls_cert", "tls_key"),
            "tls_cert and tls_key go together",
        )
    if "tls_client_ca" in v and "tls_cert" in v:
        check(
            not (v["tls_client_ca"] and not v["tls_cert"]),
            ("tls_client_ca", "tls_cert"),
            "tls_client_ca needs tls_cert and tls_key",
        )
    if v.get("insecure"):
        key_fields = tuple(n for n in ("keys_file", "revoked_token_ids") if v.get(n))
        check(
            not key_fields,
            ("insecure", *key_fields),
            f"insecure mode ignores keys: drop {' and '.join(key_fields)}",
        )
    if "hash_key_file" in v and "hash_user_ids" in v:
        check(
            not (v["hash_key_file"] and not v["hash_user_ids"]),
            ("hash_key_file", "hash_user_ids"),
            "hash_key_file has no effect without hash_user_ids",
        )
    return problems


_KIND_NAMES: dict[type, str] = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
}


# ---------------------------------------------------------------------------
# Sources: flags > environment > TOML file > defaults
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """Where a value came from: kind is flag, env, file or default."""

    kind: str
    name: str = ""

    def __str__(self) -> str:
        match self.kind:
            case "flag":
                return f"flag {self.name}"
            case "env":
                return f"environment variable {self.name}"
            case "file":
                return f"config file {self.name}"
        return "default"


DEFAULT_SOURCE = Source("default")


class ConfigError(ValueError):
    """Wrong configuration: ``problems`` says, for each, its source and field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ResolvedConfig:
    """The effective configuration, and where each field's value came from."""

    config: ServerConfig
    sources: dict[str, Source]
    config_file: str | None = None


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _parse_env(kind: type, text: str) -> Any:
    """An environment string as a value of ``kind``; ValueError says what was expected."""
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"expected true or false (1/0, yes/no, on/off), got {text!r}")
    if kind is int:
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
    if kind is float:
        try:
            return float(text.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
    return text


def _check_toml_value(kind: type, value: Any) -> Any:
    """A TOML value checked against ``kind`` (ints are accepted for numbers)."""
    toml_type = _toml_type_name(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, str):
        return value
    raise ValueError(f"expected {_KIND_NAMES[kind]}, got {toml_type} {value!r}")


def _toml_type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return "a date/time"


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def load_toml(path: str) -> tuple[dict[str, Any], list[str], set[str]]:
    """The file's settings (checked against the fields), its problems, the fields they hit."""
    source = Source("file", path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        return {}, [f"{source}: cannot read it: {e.strerror or e}"], set()
    except tomllib.TOMLDecodeError as e:
        return {}, [f"{source}: not valid TOML: {e}"], set()
    types = _field_types()
    values: dict[str, Any] = {}
    problems: list[str] = []
    failed: set[str] = set()
    for key, raw in data.items():
        if key not in types:
            problems.append(
                f"{source}: unknown key {key!r}{_suggest(key, list(types))};"
                " keys are the field names listed by `eventrouter config`"
            )
            continue
        try:
            values[key] = _check_toml_value(types[key], raw)
        except ValueError as e:
            failed.add(key)
            problems.append(f"{source}: {key}: {e}")
    return values, problems, failed


def _load_env(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str], set[str]]:
    types = _field_types()
    by_env = {env_name(name): name for name in types}
    values: dict[str, Any] = {}
    problems: list[str] = []
    failed: set[str] = set()
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var in CLIENT_ENV_VARS or var == CONFIG_FILE_ENV:
            continue
        name = by_env.get(var)
        if name is None:
            problems.append(
                f"environment variable {var}: unknown setting{_suggest(var, list(by_env))}"
            )
            continue
        try:
            values[name] = _parse_env(types[name], environ[var])
        except ValueError as e:
            failed.add(name)
            problems.append(f"environment variable {var}: {name}: {e}")
    return values, problems, failed


def resolve_config(
    flags: Mapping[str, Any] | argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> ResolvedConfig:
    """Merge flags > environment > TOML file > defaults, and validate the result.

    ``flags`` holds only the options given on the command line (field name ->
    value; ``config_flags.add_serve_arguments`` leaves the others out of its namespace).
    ``config_file`` overrides ``EVENTROUTER_CONFIG``; ``environ`` defaults to
    ``os.environ``.  Raises ``ConfigError`` listing every problem, each with
    the source and the field it concerns.
    """
    given = dict(vars(flags) if isinstance(flags, argparse.Namespace) else (flags or {}))
    environ = os.environ if environ is None else environ
    flag_file = given.pop("config", None)
    path = flag_file or config_file or environ.get(CONFIG_FILE_ENV) or None
    types = _field_types()
    problems: list[str] = []
    unknown = sorted(set(given) - set(types))
    if unknown:
        raise TypeError(f"not configuration fields: {', '.join(unknown)}")

    file_values: dict[str, Any] = {}
    failed: set[str] = set()
    if path:
        file_values, file_problems, failed = load_toml(path)
        problems += file_problems
    env_values, env_problems, env_failed = _load_env(environ)
    problems += env_problems
    failed |= env_failed

    defaults = ServerConfig()
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for name in types:
        if name in given:
            values[name], sources[name] = given[name], Source("flag", flag_name(name))
        elif name in env_values:
            values[name], sources[name] = env_values[name], Source("env", env_name(name))
        elif name in file_values:
            values[name], sources[name] = file_values[name], Source("file", str(path))
        else:
            values[name], sources[name] = getattr(defaults, name), DEFAULT_SOURCE
    for problem in validate(values):
        if failed.intersection(problem.fields):
            # A value that did not parse is missing, its default stands in:
            # checks that involve it would only add noise.
            continue
        if len(problem.fields) == 1:
            name = problem.fields[0]
            problems.append(f"{sources[name]}: {name}: {problem.message}")
        else:
            where = ", ".join(f"{n} ({sources[n]})" for n in problem.fields)
            problems.append(f"{where}: {problem.message}")
    if problems:
        raise ConfigError(problems)
    return ResolvedConfig(ServerConfig(**values), sources, str(path) if path else None)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """The effective ``ServerConfig``; raises ``ConfigError`` (a ValueError) when wrong."""
    return resolve_config(args, environ).config


__all__ = [
    "CONFIG_FILE_ENV",
    "ConfigError",
    "Problem",
    "ResolvedConfig",
    "ServerConfig",
    "Source",
    "config_from_args",
    "env_name",
    "flag_name",
    "resolve_config",
    "validate",
]
