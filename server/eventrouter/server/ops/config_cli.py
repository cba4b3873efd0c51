"""``eventrouter config``: print the effective configuration as TOML.

Takes the same flags as ``eventrouter serve`` and reads the same environment
and ``--config`` file, so it shows exactly what ``serve`` would run with:
one ``field = value`` line per setting with a comment saying where the value
came from (default, flag, environment variable or config file).  The output
is a valid config file.  Values of fields whose names mark secret material
(secret, token, key, password, credential) are replaced by ``"<redacted>"``
unless the field holds a file path (``keys_file``, ``tls_key``, ...): the
secrets themselves always live in files.

Exit status: 0, or 2 with every problem listed when the configuration is wrong.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import TextIO

from eventrouter.server.config import (
    ConfigError,
    ResolvedConfig,
    ServerConfig,
    add_serve_arguments,
    resolve_config,
)

REDACTED = "<redacted>"
# Fields that hold a path to a file (the secret is in the file, not the value).
PATH_FIELDS = frozenset({"keys_file", "tls_cert", "tls_key", "tls_client_ca", "hash_key_file"})
_SECRET_WORDS = frozenset(
    {"secret", "secrets", "token", "tokens", "key", "keys", "password", "credential", "credentials"}
)


def is_secret(field_name: str) -> bool:
    """Whether a field's value must not be printed (its name marks secret material)."""
    if field_name in PATH_FIELDS or field_name.endswith(("_file", "_path", "_dir")):
        return False
    return bool(_SECRET_WORDS.intersection(field_name.split("_")))


def toml_value(value: object) -> str:
    """A TOML literal for a bool, int, float or str."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string (same escapes, \\uXXXX included).
        return json.dumps(value)
    raise TypeError(f"no TOML literal for {type(value).__name__}")


def render_config(resolved: ResolvedConfig) -> str:
    """The effective configuration as TOML, a comment per line naming the value's source."""
    lines = [
        "# eventrouter: effective configuration",
        "# precedence: flag > environment (EVENTROUTER_<FIELD>) > config file > default",
        f"# config file: {resolved.config_file or '(none)'}",
        "",
    ]
    config = resolved.config
    for f in fields(ServerConfig):
        value = getattr(config, f.name)
        source = str(resolved.sources[f.name])
        if is_secret(f.name) and value not in ("", None):
            literal, source = toml_value(REDACTED), source + " (redacted)"
        else:
            literal = toml_value(value)
        lines.append(f"{f.name} = {literal}  # {source}")
    return "\n".join(lines) + "\n"


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``eventrouter serve`` (so both read the same settings)."""
    add_serve_arguments(parser)


def run(
    args: argparse.Namespace,
    out: TextIO | None = None,
    err: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Print the configuration ``args`` (plus environment and file) resolve to; exit code."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        resolved = resolve_config(args, environ)
    except ConfigError as e:
        print("eventrouter config: invalid configuration:", file=err)
        for problem in e.problems:
            print(f"  - {problem}", file=err)
        return 2
    out.write(render_config(resolved))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="eventrouter config",
        description="Print the effective configuration of `eventrouter serve` as TOML, with"
        " the source of each value and secrets redacted.",
    )
    add_config_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
