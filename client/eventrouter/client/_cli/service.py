"""The service-side commands (``emit``, ``connections``, ``disconnect``) and ``health``."""

from __future__ import annotations

import argparse
from typing import Any

import grpc
from google.protobuf import json_format, wrappers_pb2

from eventrouter.client import _filters
from eventrouter.client._calls import error_from_rpc
from eventrouter.client._cli.common import (
    CommandFailed,
    UsageError,
    add_client_options,
    channel_credentials,
    make_client,
    new_command,
    parse_json,
    position_dict,
    print_json,
    proto_dict,
    read_arg,
)
from eventrouter.v1 import events_pb2
from eventrouter.v1 import router_service_pb2 as pb

# ---------------------------------------------------------------------------
# emit
# ---------------------------------------------------------------------------


def _emit_request(args: argparse.Namespace) -> pb.EmitRequest:
    if args.json is not None:
        from eventrouter.client._happy_json import from_happy_json

        data = parse_json(read_arg(args.json), "--json")
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
            json_format.Parse(read_arg(args.proto_json), request)
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
    with make_client(args) as client:
        result = client.emit(request)
    out: dict[str, Any] = {"reached": result.reached, "duplicate": result.duplicate}
    if result.position is not None:
        out["position"] = position_dict(result.position)
    print_json(out)
    return 0


# ---------------------------------------------------------------------------
# connections, disconnect
# ---------------------------------------------------------------------------


def cmd_connections(args: argparse.Namespace) -> int:
    if args.user and args.positional_user and args.user != args.positional_user:
        raise UsageError(f"two users: --user {args.user} and {args.positional_user}")
    user = args.user or args.positional_user
    if not user:
        raise UsageError("--user USER is required")
    with make_client(args) as client:
        connections = client.get_connections(user)
    print_json(
        {
            "connections": [
                {
                    "connectionId": c.connection_id,
                    "scope": proto_dict(c.scope),
                    "openedAtMs": c.opened_at_ms,
                    "nodeId": c.node_id,
                }
                for c in connections
            ]
        }
    )
    return 0


def cmd_disconnect(args: argparse.Namespace) -> int:
    if (args.session is not None or args.machine is not None) and args.user is None:
        raise UsageError("--session and --machine select streams of one --user")
    with make_client(args) as client:
        ended = client.disconnect(
            args.user,
            connection_id=args.connection,
            machine_id=args.machine,
            session_id=args.session,
            token_id=args.token_id,
            reason=args.reason,
            revoke=args.revoke,
        )
    print_json({"disconnected": ended})
    return 0


# ---------------------------------------------------------------------------
# health
# ---------------------------------------------------------------------------

# grpc.health.v1's two messages, spoken with protobuf's own wrappers: a
# client-only install has no grpcio-health-checking, and the wire format is
# the same (HealthCheckRequest is `string service = 1`, HealthCheckResponse
# `ServingStatus status = 1`, an enum: a varint like int32).
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_SERVING_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def cmd_health(args: argparse.Namespace) -> int:
    credentials = channel_credentials(args)
    channel = (
        grpc.insecure_channel(args.target)
        if credentials is None
        else grpc.secure_channel(args.target, credentials)
    )
    with channel:
        check = channel.unary_unary(
            _HEALTH_CHECK,
            request_serializer=wrappers_pb2.StringValue.SerializeToString,
            response_deserializer=wrappers_pb2.Int32Value.FromString,
        )
        try:
            response = check(wrappers_pb2.StringValue(value=args.service), timeout=args.timeout)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise CommandFailed(f"NOT_FOUND: no health status for {args.service!r}") from e
            raise error_from_rpc(e) from e
    status = _SERVING_STATUS.get(response.value, str(response.value))
    print_json({"service": args.service, "status": status})
    if status != "SERVING":
        raise CommandFailed(f"{args.service or 'the server'} is {status}")
    return 0


# ---------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------


def add_parsers(commands: Any) -> None:
    emit = new_command(
        commands,
        "emit",
        "emit one update or ephemeral event",
        "Emit one event and print what the router did as JSON: "
        '{"reached": N, "duplicate": false, "position": {...}} (no position for an ephemeral).',
        cmd_emit,
    )
    emit.add_argument("--user", metavar="USER", help="the user whose connections receive it")
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
    add_client_options(emit)

    conns = new_command(
        commands,
        "connections",
        "list a user's open connections",
        'Print {"connections": [...]} for the user, oldest first.',
        cmd_connections,
    )
    conns.add_argument("--user", metavar="USER", help="whose connections (required)")
    # The form of the first release (`connections USER`) keeps working, unadvertised.
    conns.add_argument("positional_user", nargs="?", help=argparse.SUPPRESS)
    add_client_options(conns)

    disconnect = new_command(
        commands,
        "disconnect",
        "end streams by user, connection, machine, session or token id",
        "End the selected streams and print "
        '{"disconnected": N} (the streams ended on the node that answered). Clients see'
        " --reason in the stream's status: UNAVAILABLE (they reconnect) or, with --revoke,"
        " PERMISSION_DENIED (they stop; a revoked --token-id is refused from then on).",
        cmd_disconnect,
    )
    which = disconnect.add_mutually_exclusive_group(required=True)
    which.add_argument("--user", metavar="USER", help="every stream of USER")
    which.add_argument("--connection", metavar="ID", help="the stream with this connection id")
    which.add_argument("--token-id", metavar="JTI", help="every stream opened with this token")
    narrow = disconnect.add_mutually_exclusive_group()
    narrow.add_argument("--session", metavar="S", help="with --user: only the streams watching S")
    narrow.add_argument("--machine", metavar="M", help="with --user: only machine M's streams")
    disconnect.add_argument("--reason", default="", help="what the clients are told")
    disconnect.add_argument(
        "--revoke", action="store_true", help="PERMISSION_DENIED: clients must not reconnect"
    )
    add_client_options(disconnect)

    health = new_command(
        commands,
        "health",
        "ask the gRPC health service; exit 0 when SERVING",
        'Ask grpc.health.v1.Health/Check and print {"service": ..., "status": ...};'
        " exit 0 when SERVING, 1 otherwise (NOT_SERVING while the broker is unreachable or"
        " during shutdown).",
        cmd_health,
    )
    health.add_argument(
        "--service",
        default="",
        metavar="NAME",
        help="the service to ask about (default: the whole server; or"
        " eventrouter.v1.EventRouterService)",
    )
    add_client_options(health, token=False)
