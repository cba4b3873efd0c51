"""Server configuration: one dataclass, filled from command-line flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path

from eventrouter.server.core.history import HistoryLimits
from eventrouter.server.core.queue import QueueLimits
from eventrouter.server.core.router import RouterLimits
from eventrouter.server.core.validation import IdRules
from eventrouter.server.security.limits import SecurityLimits
from eventrouter.server.security.tokens import default_keys_path

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
    # Security.
    insecure: bool = False
    keys_file: str = ""
    revoked_token_ids: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    service_subjects: str = ""
    # Limits.
    max_streams_per_user: int = 100
    max_streams_per_node: int = 100_000
    max_concurrent_handshakes: int = 1000
    emit_rate_per_service: float = 0.0
    emit_burst_per_service: int = 10_000
    id_max_length: int = 256

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
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(
                f"log_level: expected debug, info, warning or error, not {self.log_level!r}"
            )
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        if self.insecure and (self.keys_file or self.revoked_token_ids):
            raise ValueError("insecure mode ignores keys: drop --keys-file/--revoked-token-ids")
        if self.id_max_length < 1:
            raise ValueError("id_max_length must be at least 1")

    def keys_path(self) -> Path:
        return Path(self.keys_file) if self.keys_file else default_keys_path()

    def security_limits(self) -> SecurityLimits:
        return SecurityLimits(
            max_streams_per_user=self.max_streams_per_user,
            max_streams_per_node=self.max_streams_per_node,
            max_concurrent_handshakes=self.max_concurrent_handshakes,
            emit_rate_per_service=self.emit_rate_per_service,
            emit_burst_per_service=self.emit_burst_per_service,
        )

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
            ids=IdRules(max_length=self.id_max_length),
        )

    def grpc_options(self) -> list[tuple[str, int]]:
        options = [
            ("grpc.keepalive_time_ms", int(self.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            # Clients pinging more often than this are sent GOAWAY (abuse guard).
            (
                "grpc.http2.min_ping_interval_without_data_ms",
                int(self.min_client_ping_interval_s * 1000),
            ),
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
    "max_connection_age_s": "close transports older than this, so load balancers can rebalance;"
    " 0 = never",
    "max_connection_age_grace_s": "grace for calls on a transport closed for its age",
    "shutdown_grace_s": "seconds in-flight emits get on SIGTERM before the process exits",
    "node_id": "this node's id (default: random)",
    "insecure": "LOCAL EXPERIMENTS ONLY: trust a user id sent as x-eventrouter-user-id metadata"
    " and let anyone emit",
    "keys_file": "JWKS file of token keys (default: created with a random secret on first start"
    " at $XDG_STATE_HOME/eventrouter/signing-keys.json)",
    "revoked_token_ids": "comma-separated token ids (jti) to refuse",
    "tls_cert": "PEM certificate chain: serve TLS",
    "tls_key": "PEM private key of --tls-cert",
    "tls_client_ca": "PEM CA bundle: require client certificates signed by it (mTLS)",
    "service_subjects": "comma-separated client-certificate common names accepted as services",
    "max_streams_per_user": "streams one user may hold on this node",
    "max_streams_per_node": "streams this node holds in total",
    "max_concurrent_handshakes": "Subscribe calls allowed between arrival and first write",
    "emit_rate_per_service": "events per second per service credential, 0 = unlimited",
    "emit_burst_per_service": "events a service may burst above its rate",
    "id_max_length": "longest user, session, machine or connection id accepted",
}


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ServerConfig()
    for f in fields(ServerConfig):
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, dest=f.name, action="store_true", help=_HELP[f.name])
            continue
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
