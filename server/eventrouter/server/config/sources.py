"""Where setting values come from, which one wins, and which source gave each value.

Every field of ``ServerConfig`` can be set four ways; the first that names it wins:

1. a command-line flag, ``--queue-max-events 64`` (booleans: ``--insecure`` /
   ``--no-insecure``);
2. an environment variable ``EVENTROUTER_<FIELD>`` in upper snake case,
   ``EVENTROUTER_QUEUE_MAX_EVENTS=64`` (booleans: true/false, 1/0, yes/no, on/off);
3. a TOML file given by ``--config FILE`` (or ``EVENTROUTER_CONFIG``), with flat
   keys named like the fields, ``queue_max_events = 64``;
4. the default.

Everything is checked before the server starts, and every wrong value is
reported at once with where it came from and which field it is: a TOML key
or an ``EVENTROUTER_`` variable that names no field is an error too (a typo
must not silently leave the default in force).  ``eventrouter config`` prints
the result (see ``eventrouter.server.ops.config_cli``).
"""

from __future__ import annotations

import argparse
import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eventrouter.server.config.checks import KIND_NAMES
from eventrouter.server.config.settings import (
    ServerConfig,
    field_types,
    int_text_fields,
    validate,
)

ENV_PREFIX = "EVENTROUTER_"
CONFIG_FILE_ENV = "EVENTROUTER_CONFIG"
# Read by the ``eventrouter`` client commands, not by the server: allowed in
# the environment of ``eventrouter serve`` without being an error.
CLIENT_ENV_VARS = frozenset({"EVENTROUTER_TARGET", "EVENTROUTER_TOKEN"})


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
    raise ValueError(f"expected {KIND_NAMES[kind]}, got {toml_type} {value!r}")


# How a TOML value's type is named in a problem; bool before int (a bool is an int).
_TOML_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (dict, "a table"),
    (list, "an array"),
)


def _toml_type_name(value: Any) -> str:
    return next((name for kind, name in _TOML_TYPE_NAMES if isinstance(value, kind)), "a date/time")


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
    types = field_types()
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
        if key in int_text_fields() and isinstance(raw, int) and not isinstance(raw, bool):
            raw = str(raw)  # workers = 4, as well as workers = "auto"
        try:
            values[key] = _check_toml_value(types[key], raw)
        except ValueError as e:
            failed.add(key)
            problems.append(f"{source}: {key}: {e}")
    return values, problems, failed


def _load_env(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str], set[str]]:
    types = field_types()
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
    value; ``flags.add_serve_arguments`` leaves the others out of its namespace).
    ``config_file`` overrides ``EVENTROUTER_CONFIG``; ``environ`` defaults to
    ``os.environ``.  Raises ``ConfigError`` listing every problem, each with
    the source and the field it concerns.
    """
    given = dict(vars(flags) if isinstance(flags, argparse.Namespace) else (flags or {}))
    environ = os.environ if environ is None else environ
    flag_file = given.pop("config", None)
    path = flag_file or config_file or environ.get(CONFIG_FILE_ENV) or None
    types = field_types()
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


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """The effective ``ServerConfig``; raises ``ConfigError`` (a ValueError) when wrong."""
    return resolve_config(args, environ).config


__all__ = [
    "CLIENT_ENV_VARS",
    "CONFIG_FILE_ENV",
    "DEFAULT_SOURCE",
    "ENV_PREFIX",
    "ConfigError",
    "ResolvedConfig",
    "Source",
    "config_from_args",
    "env_name",
    "flag_name",
    "load_toml",
    "resolve_config",
]
