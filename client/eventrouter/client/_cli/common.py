"""What every client command of the CLI shares: output, connection options, the client."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from eventrouter.client._blocking import BlockingEventRouterClient
from eventrouter.client._calls import DEFAULT_TARGET, DEFAULT_TIMEOUT_S
from eventrouter.v1 import router_service_pb2 as pb

PROG = "eventrouter"


class UsageError(Exception):
    """Input that does not parse; reported like an argparse error (exit 2)."""


class HelpFormatter(argparse.HelpFormatter):
    """Wider option column, so that ``--flag METAVAR`` and its help share a line more often."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


class RawHelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """``HelpFormatter`` that keeps the description's own line breaks (examples, shapes)."""


def new_command(
    commands: Any,
    name: str,
    summary: str,
    description: str,
    handler: Callable[[argparse.Namespace], int],
    formatter: type[argparse.HelpFormatter] = HelpFormatter,
) -> argparse.ArgumentParser:
    """A subcommand's parser: ``summary`` in ``eventrouter --help``, ``handler`` runs it."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=summary, description=description, formatter_class=formatter
    )
    parser.set_defaults(handler=handler)
    return parser


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def print_json(value: Any) -> None:
    """One JSON object per line on stdout, flushed at once (scripts follow it live)."""
    line = json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n"
    sys.stdout.buffer.write(line.encode())
    sys.stdout.buffer.flush()


def warn(command: str, message: str) -> None:
    print(f"{PROG} {command}: {message}", file=sys.stderr, flush=True)


def proto_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def position_dict(position: pb.StreamPosition) -> dict[str, Any]:
    return {"offset": position.offset, "epoch": position.epoch}


# ---------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------


def read_arg(value: str) -> str:
    return sys.stdin.read() if value == "-" else value


def parse_json(text: str, flag: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{flag}: not valid JSON: {e}") from None


def nonnegative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


# ---------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------


def add_client_options(parser: argparse.ArgumentParser, token: bool = True) -> None:
    """``--target``, ``--token`` (unless ``token`` is False), ``--tls-ca``, ``--timeout``."""
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--target",
        metavar="HOST:PORT",
        default=os.environ.get("EVENTROUTER_TARGET", DEFAULT_TARGET),
        help=f"router address (default: $EVENTROUTER_TARGET, else {DEFAULT_TARGET})",
    )
    if token:
        group.add_argument(
            "--token",
            default=os.environ.get("EVENTROUTER_TOKEN", ""),
            help="bearer token sent as 'authorization: Bearer <token>' "
            "(default: $EVENTROUTER_TOKEN; prefer the variable: flags show in ps)",
        )
    group.add_argument(
        "--tls-ca", metavar="FILE", help="PEM CA bundle: connect with TLS, trusting this CA"
    )
    group.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=DEFAULT_TIMEOUT_S,
        help="deadline of each call attempt (default: %(default)s)",
    )


def channel_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    if not args.tls_ca:
        return None
    try:
        with open(args.tls_ca, "rb") as f:
            return grpc.ssl_channel_credentials(root_certificates=f.read())
    except OSError as e:
        raise UsageError(f"--tls-ca: cannot read {args.tls_ca}: {e.strerror}") from None


def make_client(args: argparse.Namespace) -> BlockingEventRouterClient:
    return BlockingEventRouterClient(
        args.target,
        token=args.token or None,
        channel_credentials=channel_credentials(args),
        timeout=args.timeout,
    )


class CommandFailed(Exception):
    """A command cannot go on; its message is printed after the command's name (exit 1)."""
