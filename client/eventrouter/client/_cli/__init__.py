"""The ``eventrouter`` command: run a node, subscribe, emit, list and end connections.

Output is JSON, one object per line, flushed line by line so that scripts can
follow it; the shapes ``subscribe`` prints are in its ``--help``. The client
commands use the blocking client, so a Ctrl-C or a closed pipe ends them at
once. Messages (errors, reconnects) go to stderr, one line each.

Exit status: 0 success, 1 an RPC failed or the command gave up (the gRPC
status and what to do go to stderr), 2 a usage error (bad flags or input
that does not parse), 130 when interrupted.

Modules: ``common`` (output, connection options), ``subscribe``,
``service`` (emit, connections, disconnect, health), ``server`` (serve,
config, token), ``keys`` (signing keys for token issuers), ``diagnose``
(hints for the errors newcomers meet).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from eventrouter.client._calls import EventRouterError
from eventrouter.client._cli import keys, server, service, subscribe
from eventrouter.client._cli.common import PROG, CommandFailed, HelpFormatter, UsageError
from eventrouter.client._cli.diagnose import explain
from eventrouter.v1 import router_service_pb2 as pb

__all__ = ["build_parser", "main", "version_line"]


def version_line() -> str:
    """``eventrouter X.Y.Z (contract eventrouter.v1)``.

    The package version is the installed distribution's; the contract is
    the protobuf package the generated code of this install speaks (a v2
    would be another package, see docs/versioning.md).
    """
    try:
        version = importlib.metadata.version("eventrouter")
    except importlib.metadata.PackageNotFoundError:
        version = "(not installed)"
    return f"{PROG} {version} (contract {pb.DESCRIPTOR.package})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=HelpFormatter,
        description="Happy's event router: run a node, subscribe, emit, list and end connections.",
        epilog="Exit status: 0 ok, 1 RPC error or gave up (reason on stderr), 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=version_line())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    server.add_placeholders(commands)
    subscribe.add_parser(commands)
    service.add_parsers(commands)
    keys.add_parser(commands)
    return parser


def _fail(code: int, message: str) -> NoReturn:
    print(message, file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in server.SERVER_COMMANDS:
        raise SystemExit(server.run_server_command(argv[0], argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "subscribe" and not (args.user or args.token):
        parser.error("subscribe: pass --user (insecure dev mode) or --token")
    try:
        code = args.handler(args)
    except UsageError as e:
        _fail(2, f"{PROG} {args.command}: error: {e}")
    except CommandFailed as e:
        _fail(1, f"{PROG} {args.command}: {e}")
    except EventRouterError as e:
        _fail(1, f"{PROG} {args.command}: {explain(e, args)}")
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
    raise SystemExit(code)
