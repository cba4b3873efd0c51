"""``serve``, ``config`` and ``token``: the commands that need the server installed.

They parse their own arguments and are imported only when called, so that
the client commands never import the server (a client-only install has none).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from eventrouter.client._cli.common import PROG, HelpFormatter

SERVER_COMMANDS = ("serve", "config", "token")


def _serve() -> Callable[[Sequence[str]], int]:
    from eventrouter.server.__main__ import run
    from eventrouter.server.config import add_serve_arguments

    def serve(argv: Sequence[str]) -> int:
        parser = argparse.ArgumentParser(
            prog=f"{PROG} serve",
            description="Run an eventrouter node until SIGTERM/SIGINT.",
            formatter_class=HelpFormatter,
        )
        add_serve_arguments(parser)
        run(parser.parse_args(argv))
        return 0

    return serve


def _config() -> Callable[[Sequence[str]], int]:
    from eventrouter.server.ops.config_cli import main

    return main


def _token() -> Callable[[Sequence[str]], int]:
    from eventrouter.server.security.token_cli import add_token_arguments, run_token

    def token(argv: Sequence[str]) -> int:
        parser = argparse.ArgumentParser(
            prog=f"{PROG} token",
            formatter_class=HelpFormatter,
            description="Mint a token signed with the server's keys file (the embedded default):"
            " a subscriber token for --user (optionally restricted to one --session or"
            " --machine) or a --service token for Emit, GetConnections and Disconnect.",
        )
        add_token_arguments(parser)
        return run_token(parser.parse_args(argv))

    return token


_LOAD: dict[str, Callable[[], Callable[[Sequence[str]], int]]] = {
    "serve": _serve,
    "config": _config,
    "token": _token,
}


def run_server_command(name: str, argv: Sequence[str]) -> int:
    try:
        command = _LOAD[name]()
    except ImportError as e:  # a client-only install: the server extra is missing
        print(f"{PROG} {name}: the server is not installed ({e})", file=sys.stderr)
        return 2
    return command(argv)


def add_placeholders(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """List them in ``eventrouter --help``; ``main`` runs them before this parser."""
    summaries = {
        "serve": "run a router node",
        "config": "print the effective server configuration as TOML",
        "token": "mint a subscriber or service token",
    }
    for name in SERVER_COMMANDS:
        commands.add_parser(
            name, help=f"{summaries[name]} (see 'eventrouter {name} --help')", add_help=False
        )
