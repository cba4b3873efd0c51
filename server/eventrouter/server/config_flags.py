"""The flags of ``eventrouter serve`` and ``eventrouter config``: one per ``ServerConfig`` field.

Each flag's help says what the field means, its default (as a value, or in
words where an empty default stands for something: a random node id, the
default keys file) and its environment variable; its metavar says what to
write (``HOST:PORT``, ``SECONDS``, ``N``, ``FILE``).
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from eventrouter.server.config import CONFIG_FILE_ENV, ServerConfig, env_name, flag_name

__all__ = ["add_serve_arguments"]

_HELP = {
    "listen": "gRPC address to listen on (port 0 picks a free one)",
    "log_level": "debug, info, warning or error",
    "queue_max_events": "events pending per connection before the overflow policy applies",
    "queue_max_bytes": "bytes pending per connection before the overflow policy applies",
    "queue_overflow_grace_ms": "how long a burst may keep a queue over its limits (up to twice"
    " them) while its writer catches up; 0 = never",
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
    "node_id": "this node's id",
    "broker": "memory:// (one node), redis://HOST:PORT/DB or redis+cluster://HOST:PORT (nodes"
    " sharing Redis >= 7); options as ?timeout=1&presence_ttl=30, see the README",
    "insecure": "LOCAL EXPERIMENTS ONLY: trust a user id sent as x-eventrouter-user-id metadata"
    " and let anyone emit",
    "keys_file": "JWKS file of token keys",
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
    "log_format": "text (for a terminal), json or logfmt (one record per line, for collectors)",
    "event_loop": "auto (uvloop when installed, else asyncio's), uvloop or asyncio",
    "hash_user_ids": "log user ids (and show them on the status page) as a keyed hash"
    " 'u:<16 hex>' instead of in clear",
    "hash_key_file": "file holding the hash key of --hash-user-ids (at least 16 bytes, e.g."
    " `head -c 32 /dev/urandom`); same key = same hashes across nodes and restarts",
    "metrics_listen": "address of the HTTP endpoint serving /metrics (Prometheus), the status"
    " page / and /status.json; empty = off",
    "health_interval_s": "seconds between checks that update the gRPC health status",
}

# What an empty default means, where it means more than "empty" (shown in
# --help instead of ''). Every other default is shown as its value.
_DEFAULT_SHOWN = {
    "node_id": "random",
    "keys_file": "$XDG_STATE_HOME/eventrouter/signing-keys.json, created with a random"
    " secret on first start",
    "hash_key_file": "a random key per process",
}
_METAVARS = {
    "log_level": "LEVEL",
    "log_format": "FORMAT",
    "node_id": "ID",
    "broker": "URL",
    "revoked_token_ids": "IDS",
    "service_subjects": "NAMES",
    "event_loop": "LOOP",
}


def _metavar(name: str, default: object) -> str:
    """A metavar that says what to write (HOST:PORT, SECONDS, N, FILE), not the field's name."""
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
    return _METAVARS.get(name, name.upper())


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
        flag = flag_name(f.name)
        shown = _DEFAULT_SHOWN.get(f.name, repr(default))
        tail = f"(default: {shown}; env {env_name(f.name)})"
        if isinstance(default, bool):
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=f"{_HELP[f.name]} {tail}",
            )
            continue
        parser.add_argument(
            flag,
            dest=f.name,
            type=type(default),
            default=argparse.SUPPRESS,
            metavar=_metavar(f.name, default),
            help=f"{_HELP[f.name]} {tail}",
        )
