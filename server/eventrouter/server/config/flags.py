"""The flags of ``eventrouter serve`` and ``eventrouter config``: one per ``ServerConfig`` field.

Each flag's help says what the field means (the help its field was declared
with in ``settings``), its default (as a value, or in words where an empty
default stands for something: a random node id, the default keys file) and
its environment variable; its metavar says what to write (``HOST:PORT``,
``SECONDS``, ``N``, ``FILE``): declared with the field, or told by its name.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from eventrouter.server.config.settings import ServerConfig, setting_of
from eventrouter.server.config.sources import CONFIG_FILE_ENV, env_name, flag_name

__all__ = ["add_serve_arguments"]


def _metavar(name: str, default: object, declared: str | None) -> str:
    """A metavar that says what to write (HOST:PORT, SECONDS, N, FILE), not the field's name."""
    if declared is not None:
        return declared
    if name.endswith("listen"):
        return "HOST:PORT"
    if name.endswith("_file") or name.startswith("tls_"):
        return "FILE"
    if name.endswith("_s"):
        return "SECONDS"
    if name.endswith("_ms"):
        return "MS"
    if isinstance(default, int | float):
        return "N"
    return name.upper()


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field, plus ``--config FILE``.

    Flags that are not given stay out of the namespace (``SUPPRESS``), so the
    environment and the TOML file can fill them in ``config_from_args``.
    """
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"TOML file of settings (keys = field names; default: ${CONFIG_FILE_ENV})."
        " Precedence: flag > EVENTROUTER_<FIELD> environment variable > file > default",
    )
    defaults = ServerConfig()
    for f in fields(ServerConfig):
        default = getattr(defaults, f.name)
        declared = setting_of(f)
        flag = flag_name(f.name)
        shown = repr(default) if declared.shown is None else declared.shown
        help_text = f"{declared.help} (default: {shown}; env {env_name(f.name)})"
        if isinstance(default, bool):
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
            continue
        parser.add_argument(
            flag,
            dest=f.name,
            type=type(default),
            default=argparse.SUPPRESS,
            metavar=_metavar(f.name, default, declared.metavar),
            help=help_text,
        )
