"""The ``eventrouter`` command: run a node, tail a subscription, emit, list connections.

Output is JSON, one object per line, flushed line by line so that scripts can
follow it; the shapes ``subscribe`` prints are in ``_SUBSCRIBE_DOC`` (its
``--help``). The client commands use the blocking client, so a Ctrl-C or a
closed pipe ends them at once.

Exit status: 0 success, 1 an RPC failed (the gRPC status and details go to
stderr), 2 a usage error (bad flags or input that does not parse), 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from google.protobuf import json_format
from google.protobuf.message import Message

from eventrouter.client import _filters
from eventrouter.client._calls import DEFAULT_TARGET, DEFAULT_TIMEOUT_S, EventRouterError
from eventrouter.client._events import (
    Connected,
    EphemeralReceived,
    Heartbeat,
    RefetchRequired,
    SubscriptionEvent,
    UpdateReceived,
)
from eventrouter.v1 import events_pb2
from eventrouter.v1 import router_service_pb2 as pb

PROG = "eventrouter"
_RESUME = {
    pb.RESUME_STATUS_NOT_REQUESTED: "not_requested",
    pb.RESUME_STATUS_RESUMED: "resumed",
    pb.RESUME_STATUS_FAILED: "failed",
}


_SUBSCRIBE_DOC = """\
Open a connection and print its events on stdout, one JSON object per line,
flushed per line. It reconnects and resumes by itself unless --no-reconnect.

--format happy (default):
  {"opened": {"connectionId": ..., "userId": ..., "scope": {...}, "resume": "not_requested",
              "position": {"offset": N, "epoch": E}, "nodeId": ..., ...}}
                                   first, and again after every reconnect
  {"update": <Happy update JSON>, "position": {"offset": N, "epoch": E}}
  {"ephemeral": <Happy ephemeral JSON>}
  {"refetchRequired": {"reason": "epoch_changed|too_old|unknown_position",
                       "position": {...}}}   resume failed: reload your state
--format proto-json:
  each StreamEvent in protobuf's JSON mapping (camelCase, 64-bit ints as strings),
  heartbeats included.

Resume after a position printed earlier with --resume-offset N --resume-epoch E.
"""


class UsageError(Exception):
    """Input that does not parse; reported like an argparse error (exit 2)."""


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def _print_json(value: Any) -> None:
    line = json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n"
    sys.stdout.buffer.write(line.encode())
    sys.stdout.buffer.flush()


def _proto_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def _position(position: pb.StreamPosition) -> dict[str, Any]:
    return {"offset": position.offset, "epoch": position.epoch}


def _opened(opened: pb.ConnectionOpened) -> dict[str, Any]:
    out: dict[str, Any] = {
        "connectionId": opened.connection_id,
        "userId": opened.user_id,
        "scope": _proto_dict(opened.scope),
        "resume": _RESUME.get(opened.resume.status, "unspecified"),
        "position": _position(opened.position),
        "nodeId": opened.node_id,
        "heartbeatIntervalMs": opened.heartbeat_interval_ms,
    }
    if opened.resume.status == pb.RESUME_STATUS_RESUMED:
        out["replayed"] = opened.resume.replayed
    return out


def _happy_line(event: SubscriptionEvent) -> dict[str, Any] | None:
    from eventrouter.client._happy_json import to_happy_json

    if isinstance(event, UpdateReceived):
        return {"update": to_happy_json(event.payload), "position": _position(event.position)}
    if isinstance(event, EphemeralReceived):
        return {"ephemeral": to_happy_json(event.payload)}
    if isinstance(event, Connected):
        return {"opened": _opened(event.opened)}
    if isinstance(event, RefetchRequired):
        return {"refetchRequired": {"reason": event.reason, "position": _position(event.position)}}
    return None  # heartbeats: a liveness signal, not data


def _proto_line(event: SubscriptionEvent) -> dict[str, Any] | None:
    if isinstance(event, UpdateReceived):
        message = pb.StreamEvent(
            update=pb.UpdateDelivery(payload=event.payload, position=event.position)
        )
    elif isinstance(event, EphemeralReceived):
        message = pb.StreamEvent(ephemeral=event.payload)
    elif isinstance(event, Connected):
        message = pb.StreamEvent(opened=event.opened)
    elif isinstance(event, Heartbeat):
        message = pb.StreamEvent(heartbeat=pb.Heartbeat(server_time_ms=event.server_time_ms))
    else:
        return None  # RefetchRequired: already in the `opened` event's `resume`
    return _proto_dict(message)


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Any:
    from eventrouter.client._blocking import BlockingEventRouterClient

    channel_credentials = None
    if args.tls_ca:
        import grpc

        with open(args.tls_ca, "rb") as f:
            channel_credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    return BlockingEventRouterClient(
        args.target,
        token=args.token or None,
        channel_credentials=channel_credentials,
        timeout=args.timeout,
    )


def _read_arg(value: str) -> str:
    return sys.stdin.read() if value == "-" else value


def _parse_json(text: str, flag: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{flag}: not valid JSON: {e}") from None


def cmd_subscribe(args: argparse.Namespace) -> int:
    if args.session is not None:
        scope = _filters.session_scope(args.session)
    elif args.machine is not None:
        scope = _filters.machine_scope(args.machine)
    else:
        scope = _filters.user_scope()
    if (args.resume_offset is None) != (args.resume_epoch is None):
        raise UsageError("--resume-offset and --resume-epoch go together")
    resume_from = None
    if args.resume_offset is not None:
        resume_from = pb.StreamPosition(offset=args.resume_offset, epoch=args.resume_epoch)
    render: Callable[[SubscriptionEvent], dict[str, Any] | None] = (
        _happy_line if args.format == "happy" else _proto_line
    )
    with (
        _client(args) as client,
        client.subscribe(
            scope,
            user_id=None if args.token else args.user,
            resume_from=resume_from,
            heartbeat_ms=args.heartbeat_ms,
            reconnect=not args.no_reconnect,
            include_control=True,
        ) as subscription,
    ):
        for event in subscription:
            try:
                line = render(event)
            except ValueError as e:  # HappyWireError: an event Happy's wire cannot carry
                detail = _proto_line(event)
                print(
                    f"{PROG} subscribe: cannot print in Happy shape: {e}: {detail}", file=sys.stderr
                )
                continue
            if line is not None:
                _print_json(line)
    return 0


def _emit_request(args: argparse.Namespace) -> pb.EmitRequest:
    if args.json is not None:
        from eventrouter.client._happy_json import from_happy_json

        data = _parse_json(_read_arg(args.json), "--json")
        if not isinstance(data, dict):
            raise UsageError("--json: expected a JSON object")
        try:
            payload = from_happy_json(data)
        except ValueError as e:
            raise UsageError(f"--json: not a Happy update or ephemeral event: {e}") from None
        request = pb.EmitRequest()
        if isinstance(payload, events_pb2.UpdatePayload):
            request.update.CopyFrom(payload)
        else:
            request.ephemeral.CopyFrom(payload)
    else:
        request = pb.EmitRequest()
        try:
            json_format.Parse(_read_arg(args.proto_json), request)
        except json_format.ParseError as e:
            raise UsageError(f"--proto-json: not an EmitRequest in protobuf JSON: {e}") from None
        if request.WhichOneof("payload") is None:
            raise UsageError('--proto-json: set "update" or "ephemeral"')
    if args.user is not None:
        request.user_id = args.user
    if not request.user_id:
        raise UsageError("--user is required (or userId in --proto-json)")
    recipient_filter = None
    if args.session_filter is not None:
        recipient_filter = _filters.all_interested_in_session(args.session_filter)
    elif args.machine_scoped_filter is not None:
        recipient_filter = _filters.machine_scoped_only(args.machine_scoped_filter)
    elif args.machine_only is not None:
        recipient_filter = _filters.machine_only(args.machine_only)
    elif args.user_scoped_only:
        recipient_filter = _filters.user_scoped_only()
    if recipient_filter is not None:
        request.recipient_filter.CopyFrom(recipient_filter)
    if args.skip:
        request.skip_connection_id = args.skip
    if args.idempotency_key:
        request.idempotency_key = args.idempotency_key
    return request


def cmd_emit(args: argparse.Namespace) -> int:
    request = _emit_request(args)
    with _client(args) as client:
        result = client.emit(request)
    out: dict[str, Any] = {"reached": result.reached, "duplicate": result.duplicate}
    if result.position is not None:
        out["position"] = _position(result.position)
    _print_json(out)
    return 0


def cmd_connections(args: argparse.Namespace) -> int:
    with _client(args) as client:
        connections = client.get_connections(args.user)
    _print_json(
        {
            "connections": [
                {
                    "connectionId": c.connection_id,
                    "scope": _proto_dict(c.scope),
                    "openedAtMs": c.opened_at_ms,
                    "nodeId": c.node_id,
                }
                for c in connections
            ]
        }
    )
    return 0


def cmd_serve(argv: Sequence[str]) -> int:
    try:
        from eventrouter.server.__main__ import run
        from eventrouter.server.config_flags import add_serve_arguments
    except ImportError as e:  # a client-only install
        print(f"{PROG} serve: the server is not installed ({e})", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(
        prog=f"{PROG} serve", description="Run an eventrouter node until SIGTERM/SIGINT."
    )
    add_serve_arguments(parser)
    run(parser.parse_args(argv))
    return 0


def cmd_config(argv: Sequence[str]) -> int:
    try:
        from eventrouter.server.ops.config_cli import main as config_main
    except ImportError as e:  # a client-only install
        print(f"{PROG} config: the server is not installed ({e})", file=sys.stderr)
        return 2
    return config_main(argv)


def cmd_token(argv: Sequence[str]) -> int:
    try:
        from eventrouter.server.security.token_cli import add_token_arguments, run_token
    except ImportError as e:  # a client-only install
        print(f"{PROG} token: the server is not installed ({e})", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(
        prog=f"{PROG} token",
        description="Mint a token signed with the server's keys file (the embedded default): "
        "a subscriber token for --user (optionally restricted to one --session or --machine) "
        "or a --service token for Emit, GetConnections and Disconnect.",
    )
    add_token_arguments(parser)
    return run_token(parser.parse_args(argv))


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------


def _client_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--target",
        default=os.environ.get("EVENTROUTER_TARGET", DEFAULT_TARGET),
        help="router address HOST:PORT (default: $EVENTROUTER_TARGET or %(default)s)",
    )
    group.add_argument(
        "--token",
        default=os.environ.get("EVENTROUTER_TOKEN", ""),
        help="bearer token sent as 'authorization: Bearer <token>' "
        "(default: $EVENTROUTER_TOKEN; prefer the variable: flags show in ps)",
    )
    group.add_argument("--tls-ca", metavar="FILE", help="PEM CA bundle: connect with TLS")
    group.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="deadline of each call attempt in seconds (default: %(default)s)",
    )


def _nonnegative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Happy's event router: run a node, subscribe, emit, list connections.",
        epilog="Exit status: 0 ok, 1 RPC error (status on stderr), 2 usage error.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "serve",
        help="run a router node (see 'eventrouter serve --help')",
        add_help=False,
    )
    commands.add_parser(
        "config",
        help="print the effective server configuration as TOML (see 'eventrouter config --help')",
        add_help=False,
    )
    commands.add_parser(
        "token",
        help="mint a subscriber or service token (see 'eventrouter token --help')",
        add_help=False,
    )

    sub = commands.add_parser(
        "subscribe",
        help="tail a user's events as JSON lines",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_SUBSCRIBE_DOC,
    )
    sub.add_argument(
        "--user", help="the user to subscribe as (insecure dev mode; with --token, from the token)"
    )
    scope = sub.add_mutually_exclusive_group()
    scope.add_argument("--session", metavar="S", help="session-scoped connection watching S")
    scope.add_argument("--machine", metavar="M", help="machine-scoped connection of machine M")
    sub.add_argument(
        "--format",
        choices=("happy", "proto-json"),
        default="happy",
        help="happy: Happy's wire JSON (default); proto-json: protobuf JSON of each StreamEvent",
    )
    sub.add_argument("--resume-offset", type=_nonnegative, metavar="N", help="resume after N")
    sub.add_argument("--resume-epoch", metavar="E", help="epoch of --resume-offset")
    sub.add_argument(
        "--heartbeat-ms", type=_nonnegative, default=0, help="ask for idle heartbeats (ms)"
    )
    sub.add_argument(
        "--no-reconnect", action="store_true", help="exit 1 when the stream ends instead"
    )
    _client_options(sub)
    sub.set_defaults(handler=cmd_subscribe)

    emit = commands.add_parser(
        "emit",
        help="emit one update or ephemeral event",
        description="Emit one event and print the EmitResponse as JSON "
        '({"reached": N, "duplicate": false, "position": {...}}).',
    )
    emit.add_argument("--user", help="the user whose connections receive the event")
    payload = emit.add_mutually_exclusive_group(required=True)
    payload.add_argument(
        "--json",
        metavar="JSON",
        help="the event in Happy's wire JSON ('-' reads stdin); update or ephemeral is "
        "detected (an update has body.t, an ephemeral has type)",
    )
    payload.add_argument(
        "--proto-json",
        metavar="JSON",
        help="an EmitRequest in protobuf JSON with its update or ephemeral ('-' reads stdin)",
    )
    target = emit.add_mutually_exclusive_group()
    target.add_argument("--session-filter", metavar="S", help="all_interested_in_session(S)")
    target.add_argument("--machine-scoped-filter", metavar="M", help="machine_scoped_only(M)")
    target.add_argument("--machine-only", metavar="M", help="machine_only(M)")
    target.add_argument("--user-scoped-only", action="store_true", help="user_scoped_only()")
    emit.add_argument("--skip", metavar="CONNECTION_ID", help="leave this connection out")
    emit.add_argument("--idempotency-key", metavar="KEY", help="dedup key of an ephemeral event")
    _client_options(emit)
    emit.set_defaults(handler=cmd_emit)

    conns = commands.add_parser(
        "connections",
        help="list a user's open connections",
        description='Print {"connections": [...]} for USER, oldest first.',
    )
    conns.add_argument("user", metavar="USER")
    _client_options(conns)
    conns.set_defaults(handler=cmd_connections)
    return parser


def _fail(code: int, message: str) -> NoReturn:
    print(message, file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Server-side commands are built apart so that client commands never
    # import the server (a client-only install has none).
    if argv[:1] == ["serve"]:
        raise SystemExit(cmd_serve(argv[1:]))
    if argv[:1] == ["token"]:
        raise SystemExit(cmd_token(argv[1:]))
    if argv[:1] == ["config"]:
        raise SystemExit(cmd_config(argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "subscribe" and not (args.user or args.token):
        parser.error("subscribe: pass --user (insecure dev mode) or --token")
    try:
        code = args.handler(args)
    except UsageError as e:
        _fail(2, f"{PROG} {args.command}: error: {e}")
    except EventRouterError as e:
        _fail(1, f"{PROG} {args.command}: {e}")
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
    raise SystemExit(code)
