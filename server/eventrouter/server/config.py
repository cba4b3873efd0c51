"""Server configuration: one dataclass, filled from command-line flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

from eventrouter.server.core.history import HistoryLimits
from eventrouter.server.core.queue import QueueLimits
from eventrouter.server.core.router import RouterLimits

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything ``eventrouter serve`` can be told; defaults are safe for production."""

    listen: str = "127.0.0.1:50051"
    log_level: str = "info"
    # Per-connection queue (slow consumers).
    queue_max_events: int = 1024
    queue_max_bytes: int = 8 * MiB
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

    def __post_init__(self) -> None:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"listen: expected HOST:PORT, got {self.listen!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"{f.name}: must not be negative, got {value}")
        if self.queue_max_events < 1 or self.queue_max_bytes < 1:
            raise ValueError("queue_max_events and queue_max_bytes must be at least 1")
        if self.max_event_bytes > self.max_request_bytes:
            raise ValueError("max_event_bytes must not exceed max_request_bytes")

    def router_limits(self) -> RouterLimits:
        return RouterLimits(
            queue=QueueLimits(
                max_events=self.queue_max_events,
                max_bytes=self.queue_max_bytes,
                max_write_bytes=min(self.queue_max_bytes, 1 * MiB),
            ),
            history=HistoryLimits(self.history_max_updates, self.history_max_age_s),
            idempotency_window_s=self.idempotency_window_s,
            max_event_bytes=self.max_event_bytes,
        )

    def grpc_options(self) -> list[tuple[str, int]]:
        options = [
            ("grpc.keepalive_time_ms", int(self.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            # Clients pinging more often than this are sent GOAWAY (abuse guard).
            ("grpc.http2.min_ping_interval_without_data_ms", int(self.min_client_ping_interval_s * 1000)),
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


_HELP = {
    "listen": "address to listen on, HOST:PORT (port 0 picks a free one)",
    "log_level": "debug, info, warning or error",
    "queue_max_events": "events pending per connection before the overflow policy applies",
    "queue_max_bytes": "bytes pending per connection before the overflow policy applies",
    "history_max_updates": "updates kept per user for resume",
    "history_max_age_s": "seconds an update is kept for resume",
    "idempotency_window_s": "seconds a repeated update id (or ephemeral key) is recognized",
    "max_event_bytes": "largest event accepted (RESOURCE_EXHAUSTED above)",
    "max_request_bytes": "largest request message accepted (EmitBatch)",
    "heartbeat_ms": "heartbeat interval on idle streams, 0 = only when a client asks",
    "keepalive_time_s": "seconds between server keepalive pings",
    "keepalive_timeout_s": "seconds to wait for a ping ack before dropping the transport",
    "min_client_ping_interval_s": "minimum interval allowed between client pings",
    "max_connection_age_s": "close transports older than this (lets load balancers rebalance), 0 = never",
    "max_connection_age_grace_s": "grace for calls on a transport closed for its age",
    "shutdown_grace_s": "seconds in-flight emits get on SIGTERM before the process exits",
    "node_id": "this node's id (default: random)",
}


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ServerConfig()
    for f in fields(ServerConfig):
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        kind = type(default)
        parser.add_argument(
            flag,
            dest=f.name,
            type=kind,
            default=default,
            help=f"{_HELP[f.name]} (default: {default!r})",
        )


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(**{f.name: getattr(args, f.name) for f in fields(ServerConfig)})
