"""``eventrouter subscribe``: tail a subscription as JSON lines, saying why it reconnects."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from typing import Any

import grpc

from eventrouter.client import _filters
from eventrouter.client._blocking import BlockingSubscription
from eventrouter.client._calls import EventRouterError, PermissionDeniedError
from eventrouter.client._cli.common import (
    CommandFailed,
    RawHelpFormatter,
    UsageError,
    add_client_options,
    make_client,
    new_command,
    nonnegative,
    position_dict,
    print_json,
    proto_dict,
    warn,
)
from eventrouter.client._cli.diagnose import transport_mismatch
from eventrouter.client._events import (
    FATAL_CODES,
    Connected,
    EphemeralReceived,
    Heartbeat,
    Reconnecting,
    ReconnectPolicy,
    RefetchRequired,
    SubscriptionEvent,
    UpdateReceived,
)
from eventrouter.v1 import router_service_pb2 as pb

# Consecutive failed reconnects before giving up. With the library's backoff
# (full jitter, 0.1 s doubling up to 10 s) that is about 10 to 25 s of trying:
# enough to ride out a server restart, short enough that a wrong --target
# ends with an answer.
DEFAULT_MAX_RETRIES = 8

_RESUME = {
    pb.RESUME_STATUS_NOT_REQUESTED: "not_requested",
    pb.RESUME_STATUS_RESUMED: "resumed",
    pb.RESUME_STATUS_FAILED: "failed",
}
# How the router words a stream it ended because a service called Disconnect.
_DISCONNECTED_BY_SERVICE = "disconnected by the service"

DOC = f"""\
Open a connection and print its events on stdout, one JSON object per line,
flushed per line. When the stream ends, it says why on stderr and reconnects,
resuming where it stopped. It exits 1 after --max-retries consecutive failed
reconnects ({DEFAULT_MAX_RETRIES} by default; -1: no limit), and at once when the server
refuses the credential or a service revokes the stream.

--format happy (default):
  {{"opened": {{"connectionId": ..., "userId": ..., "scope": {{...}}, "resume": "not_requested",
              "position": {{"offset": N, "epoch": E}}, "nodeId": ..., ...}}}}
                                   first, and again after every reconnect
  {{"update": <Happy update JSON>, "position": {{"offset": N, "epoch": E}}}}
  {{"ephemeral": <Happy ephemeral JSON>}}
  {{"refetchRequired": {{"reason": "epoch_changed|too_old|unknown_position",
                       "position": {{...}}}}}}   resume failed: reload your state
--format proto-json:
  each StreamEvent in protobuf's JSON mapping (camelCase, 64-bit ints as strings),
  heartbeats included.

Resume after a position printed earlier with --resume-offset N --resume-epoch E.
"""


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


def _opened(opened: pb.ConnectionOpened) -> dict[str, Any]:
    out: dict[str, Any] = {
        "connectionId": opened.connection_id,
        "userId": opened.user_id,
        "scope": proto_dict(opened.scope),
        "resume": _RESUME.get(opened.resume.status, "unspecified"),
        "position": position_dict(opened.position),
        "nodeId": opened.node_id,
        "heartbeatIntervalMs": opened.heartbeat_interval_ms,
    }
    if opened.resume.status == pb.RESUME_STATUS_RESUMED:
        out["replayed"] = opened.resume.replayed
    return out


def happy_line(event: SubscriptionEvent) -> dict[str, Any] | None:
    from eventrouter.client._happy_json import to_happy_json

    if isinstance(event, UpdateReceived):
        return {"update": to_happy_json(event.payload), "position": position_dict(event.position)}
    if isinstance(event, EphemeralReceived):
        return {"ephemeral": to_happy_json(event.payload)}
    if isinstance(event, Connected):
        return {"opened": _opened(event.opened)}
    if isinstance(event, RefetchRequired):
        return {
            "refetchRequired": {"reason": event.reason, "position": position_dict(event.position)}
        }
    return None  # heartbeats: a liveness signal, not data


def proto_line(event: SubscriptionEvent) -> dict[str, Any] | None:
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
    return proto_dict(message)


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------


class _Tail:
    """Prints a subscription's events, and on stderr why and when it reconnects."""

    def __init__(self, subscription: BlockingSubscription, args: argparse.Namespace) -> None:
        self.subscription = subscription
        self.args = args
        self.render: Callable[[SubscriptionEvent], dict[str, Any] | None] = (
            happy_line if args.format == "happy" else proto_line
        )
        # The reconnect announced last, until a stream opens again.
        self.pending: Reconnecting | None = None

    def gave_up(self, error: EventRouterError) -> bool:
        """Whether ``error`` ended the subscription because the retry limit was reached."""
        last = self.pending
        return (
            error.code not in FATAL_CODES
            and last is not None
            and last.max_attempts is not None
            and last.attempt >= last.max_attempts
        )

    def run(self) -> None:
        for event in self.subscription:
            if isinstance(event, Reconnecting):
                self.pending = event
                self._on_reconnecting(event)
                continue
            if isinstance(event, Connected):
                self.pending = None
            try:
                line = self.render(event)
            except ValueError as e:  # HappyWireError: an event Happy's wire cannot carry
                warn("subscribe", f"cannot print in Happy shape: {e}: {proto_line(event)}")
                continue
            if line is not None:
                print_json(line)

    def _on_reconnecting(self, event: Reconnecting) -> None:
        if (
            event.code == grpc.StatusCode.UNAVAILABLE
            and self.subscription.opened is None
            and event.attempt == 1
        ):
            # Never connected: a TLS setting that disagrees with the server's
            # fails the same way forever, so say which and stop.
            mismatch = transport_mismatch(self.args)
            if mismatch is not None:
                raise CommandFailed(f"{mismatch} ({event.code.name}: {event.details})")
        limit = "no limit" if event.max_attempts is None else f"of {event.max_attempts}"
        warn(
            "subscribe",
            f"{event.code.name}: {event.details}; reconnecting in {event.delay_s:.2f} s"
            f" (attempt {event.attempt} {limit})",
        )


def cmd_subscribe(args: argparse.Namespace) -> int:
    if args.session is not None:
        scope = _filters.session_scope(args.session)
    elif args.machine is not None:
        scope = _filters.machine_scope(args.machine)
    else:
        scope = _filters.user_scope()
    if (args.resume_offset is None) != (args.resume_epoch is None):
        raise UsageError("--resume-offset and --resume-epoch go together")
    if args.max_retries < -1:
        raise UsageError("--max-retries: a count, or -1 for no limit")
    resume_from = None
    if args.resume_offset is not None:
        resume_from = pb.StreamPosition(offset=args.resume_offset, epoch=args.resume_epoch)
    reconnect: bool | ReconnectPolicy = False
    if not args.no_reconnect:
        reconnect = ReconnectPolicy(max_attempts=None if args.max_retries < 0 else args.max_retries)
    with make_client(args) as client:
        # Iterated without `with`: entering would wait for the first stream
        # to open, and the reconnect messages must show while it does not.
        subscription = client.subscribe(
            scope,
            user_id=None if args.token else args.user,
            resume_from=resume_from,
            heartbeat_ms=args.heartbeat_ms,
            reconnect=reconnect,
            include_control=True,
        )
        tail = _Tail(subscription, args)
        with contextlib.closing(subscription):
            try:
                tail.run()
            except PermissionDeniedError as e:
                if e.details.startswith(_DISCONNECTED_BY_SERVICE):
                    raise CommandFailed(
                        f"a service revoked this stream; not reconnecting ({e})"
                    ) from e
                raise
            except EventRouterError as e:
                if tail.gave_up(e):
                    raise CommandFailed(f"{e}; --max-retries N sets the limit, -1: none") from e
                raise
    return 0


def add_parser(commands: Any) -> None:
    sub = new_command(
        commands,
        "subscribe",
        "tail a user's events as JSON lines",
        DOC,
        cmd_subscribe,
        RawHelpFormatter,
    )
    sub.add_argument(
        "--user",
        metavar="USER",
        help="the user to subscribe as (insecure dev mode; with --token, the token names it)",
    )
    scope = sub.add_mutually_exclusive_group()
    scope.add_argument("--session", metavar="S", help="session-scoped connection watching S")
    scope.add_argument("--machine", metavar="M", help="machine-scoped connection of machine M")
    sub.add_argument(
        "--format",
        choices=("happy", "proto-json"),
        default="happy",
        help="happy: Happy's wire JSON (the default); proto-json: each StreamEvent as protobuf"
        " JSON",
    )
    sub.add_argument("--resume-offset", type=nonnegative, metavar="N", help="resume after N")
    sub.add_argument("--resume-epoch", metavar="E", help="epoch of --resume-offset")
    sub.add_argument(
        "--heartbeat-ms",
        type=nonnegative,
        default=0,
        metavar="MS",
        help="ask for heartbeats on an idle stream every MS (default: 0, none)",
    )
    sub.add_argument(
        "--max-retries",
        type=int,
        default=DEFAULT_MAX_RETRIES,
        metavar="N",
        help="consecutive failed reconnects before exiting 1 (default: %(default)s; -1: no limit)",
    )
    sub.add_argument(
        "--no-reconnect", action="store_true", help="exit 1 when the stream ends instead"
    )
    add_client_options(sub)
