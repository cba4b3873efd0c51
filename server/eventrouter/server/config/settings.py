"""The settings of ``eventrouter serve``: one ``ServerConfig`` field each.

Each field is declared in one place, with everything about it: its type and
default, its ``--help`` text and what its value must satisfy.  Defaults are
safe for production.  Where values come from is ``sources``; how they are
checked, ``checks``; the flags, ``flags``.

Adding a setting
----------------
Add one field, in the group it belongs to (fields are listed in this order
by ``--help`` and ``eventrouter config``)::

    web_listen: str = setting(
        "",  # the default; its type (bool, int, float or str) is the setting's
        "address of the web listener (Connect, gRPC-Web); empty = off",  # --help
        check=host_port_or_off,  # optional: what the value must satisfy
    )

That alone gives ``--web-listen`` (a bool gives ``--x`` / ``--no-x``),
``EVENTROUTER_WEB_LISTEN``, the TOML key ``web_listen``, its line in
``eventrouter config``, and its help line ``... (default: ''; env
EVENTROUTER_WEB_LISTEN)``.  Every value is checked for its type and every
number for being finite and not negative; ``check`` comes on top (see
``checks`` for the ready ones: ``one_of``, ``at_least``, ``host_port``...,
or write a function value -> message or None).  Optional:

- ``metavar=``: what to write in ``--help``, when the name does not say it
  (names ending in ``listen``, ``_file``, ``_s`` or ``_ms`` and numbers do);
- ``shown=``: what an empty default means, shown in ``--help`` instead of
  ``''`` (e.g. "random");
- ``takes_int=True``: a str setting that a TOML file may also give as an
  integer, kept as its text (``workers = 4`` as well as ``workers = "auto"``).

A rule between two settings (``web_cors_origins`` needs ``web_listen``) goes
in ``checks.between``.  Then read the value where it is used
(``config.web_listen``), add a test in tests/ops/test_config.py for its
check, and a row in the README's Configuration table if users will set it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from eventrouter.server.config.checks import (
    Check,
    Problem,
    all_of,
    at_least,
    broker_url,
    host_port,
    host_port_or_off,
    loop_available,
    more_than,
    one_of,
    problems,
    worker_count,
    workers_value,
)
from eventrouter.server.core.history import HistoryLimits
from eventrouter.server.core.queue import QueueLimits
from eventrouter.server.core.router import RouterLimits
from eventrouter.server.core.validation import IdRules
from eventrouter.server.security.limits import SecurityLimits
from eventrouter.server.security.tokens import default_keys_path

MiB = 1024 * 1024

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json", "logfmt")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")

T = TypeVar("T", bool, int, float, str)


@dataclass(frozen=True, slots=True)
class Setting:
    """What a field says beyond its type and default (``setting``'s arguments)."""

    help: str
    check: Check | None = None
    metavar: str | None = None
    shown: str | None = None
    takes_int: bool = False


def setting(
    default: T,
    help: str,
    *,
    check: Check | None = None,
    metavar: str | None = None,
    shown: str | None = None,
    takes_int: bool = False,
) -> T:
    """A ``ServerConfig`` field: its default, its ``--help`` text and its check."""
    declared = Setting(help, check, metavar, shown, takes_int)
    return field(default=default, metadata={"setting": declared})


def setting_of(f: Field[Any]) -> Setting:
    """The ``Setting`` a field was declared with."""
    declared: Setting = f.metadata["setting"]
    return declared


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything ``eventrouter serve`` can be told; defaults are safe for production."""

    listen: str = setting(
        "127.0.0.1:50051", "gRPC address to listen on (port 0 picks a free one)", check=host_port
    )
    log_level: str = setting(
        "info",
        "debug, info, warning or error",
        check=one_of(LOG_LEVELS, fold_case=True),
        metavar="LEVEL",
    )
    # Per-connection queue (slow consumers).
    queue_max_events: int = setting(
        1024,
        "events pending per connection before the overflow policy applies",
        check=at_least(1),
    )
    queue_max_bytes: int = setting(
        8 * MiB,
        "bytes pending per connection before the overflow policy applies",
        check=at_least(1),
    )
    queue_overflow_grace_ms: int = setting(
        1000,
        "how long a burst may keep a queue over its limits (up to twice"
        " them) while its writer catches up; 0 = never",
    )
    # Per-user update history (resume).
    history_max_updates: int = setting(1000, "updates kept per user for resume")
    history_max_age_s: float = setting(600.0, "seconds an update is kept for resume")
    idempotency_window_s: float = setting(
        300.0, "seconds a repeated update id (or ephemeral key) is recognized"
    )
    # Input limits.
    max_event_bytes: int = setting(1 * MiB, "largest event accepted (RESOURCE_EXHAUSTED above)")
    max_request_bytes: int = setting(16 * MiB, "largest request message accepted (EmitBatch)")
    # Liveness.
    heartbeat_ms: int = setting(
        0, "heartbeat interval on idle streams, 0 = only when a client asks"
    )
    keepalive_time_s: float = setting(20.0, "seconds between server keepalive pings")
    keepalive_timeout_s: float = setting(
        10.0, "seconds to wait for a ping ack before dropping the transport"
    )
    min_client_ping_interval_s: float = setting(
        10.0, "minimum interval allowed between client pings"
    )
    max_connection_age_s: float = setting(
        0.0,
        "close transports older than this, so load balancers can rebalance; 0 = never",
    )
    max_connection_age_grace_s: float = setting(
        30.0, "grace for calls on a transport closed for its age"
    )
    shutdown_grace_s: float = setting(
        10.0, "seconds in-flight emits get on SIGTERM before the process exits"
    )
    node_id: str = setting("", "this node's id", metavar="ID", shown="random")
    broker: str = setting(
        "memory://",
        "memory:// (one node), redis://HOST:PORT/DB or redis+cluster://HOST:PORT (nodes"
        " sharing Redis >= 7); options as ?timeout=1&presence_ttl=30, see the README",
        check=broker_url,
        metavar="URL",
    )
    # Security.
    insecure: bool = setting(
        False,
        "LOCAL EXPERIMENTS ONLY: trust a user id sent as x-eventrouter-user-id metadata"
        " and let anyone emit",
    )
    keys_file: str = setting(
        "",
        "JWKS file of token keys",
        shown="$XDG_STATE_HOME/eventrouter/signing-keys.json, created with a random"
        " secret on first start",
    )
    revoked_token_ids: str = setting("", "comma-separated token ids (jti) to refuse", metavar="IDS")
    revocation_ttl_s: float = setting(
        86_400.0,
        "how long a Disconnect's revocation lasts at least (longer when the token, seen"
        " in a stream, expires later); make it the longest lifetime of the tokens issued",
        check=more_than(0),
    )
    tls_cert: str = setting("", "PEM certificate chain: serve TLS")
    tls_key: str = setting("", "PEM private key of --tls-cert")
    tls_client_ca: str = setting(
        "", "PEM CA bundle: require client certificates signed by it (mTLS)"
    )
    service_subjects: str = setting(
        "",
        "comma-separated client-certificate common names accepted as services",
        metavar="NAMES",
    )
    # Limits.
    max_streams_per_user: int = setting(100, "streams one user may hold (on every node together)")
    max_streams_per_node: int = setting(100_000, "streams this node holds in total")
    max_concurrent_handshakes: int = setting(
        1000, "Subscribe calls allowed between arrival and first write"
    )
    emit_rate_per_service: float = setting(
        0.0, "events per second per service credential, 0 = unlimited"
    )
    emit_burst_per_service: int = setting(10_000, "events a service may burst above its rate")
    id_max_length: int = setting(
        256, "longest user, session, machine or connection id accepted", check=at_least(1)
    )
    # Operability.
    log_format: str = setting(
        "text",
        "text (for a terminal), json or logfmt (one record per line, for collectors)",
        check=one_of(LOG_FORMATS),
        metavar="FORMAT",
    )
    hash_user_ids: bool = setting(
        False,
        "log user ids (and show them on the status page) as a keyed hash"
        " 'u:<16 hex>' instead of in clear",
    )
    hash_key_file: str = setting(
        "",
        "file holding the hash key of --hash-user-ids (at least 16 bytes, e.g."
        " `head -c 32 /dev/urandom`); same key = same hashes across nodes and restarts",
        shown="a random key per process",
    )
    metrics_listen: str = setting(
        "127.0.0.1:9464",
        "address of the HTTP endpoint serving /metrics (Prometheus), the status"
        " page / and /status.json; empty = off",
        check=host_port_or_off,
    )
    health_interval_s: float = setting(
        1.0, "seconds between checks that update the gRPC health status", check=more_than(0)
    )
    # The web listener (Connect and gRPC-Web, for browsers and mobile apps).
    web_listen: str = setting(
        "",
        "address of the web listener (Connect protocol and gRPC-Web over HTTP/1.1, the"
        " same service as --listen; TLS with --tls-cert when set); empty = off",
        check=host_port_or_off,
        shown="off",
    )
    web_cors_origins: str = setting(
        "",
        "comma-separated origins (scheme://host[:port]) whose pages may call the web"
        " listener; '*' = any",
        shown="none",
        metavar="ORIGINS",
    )
    web_heartbeat_ms: int = setting(
        15_000,
        "heartbeat interval of web streams that ask for none, below the idle timeouts of"
        " proxies and load balancers (often 30-60 s); 0 = the gRPC default (--heartbeat-ms)",
    )
    # Runtime.
    event_loop: str = setting(
        "auto",
        "auto (uvloop when installed, else asyncio's), uvloop or asyncio",
        check=all_of(one_of(EVENT_LOOPS), loop_available),
        metavar="LOOP",
    )
    workers: str = setting(
        "1",
        "processes serving this node's ports (--listen, --web-listen) together, each a node"
        " of the cluster with its own node id; auto = this machine's cores; more than 1 needs"
        " a shared --broker (Redis); worker i serves metrics on the --metrics-listen port + i",
        check=workers_value,
        metavar="N|auto",
        takes_int=True,
    )

    def __post_init__(self) -> None:
        found = validate({f.name: getattr(self, f.name) for f in fields(self)})
        if found:
            raise ValueError("; ".join(str(p) for p in found))

    def worker_count(self) -> int:
        """How many worker processes ``workers`` asks for (``auto``: the cores)."""
        return worker_count(self.workers)

    def keys_path(self) -> Path:
        return Path(self.keys_file) if self.keys_file else default_keys_path()

    def security_limits(self) -> SecurityLimits:
        return SecurityLimits(
            max_streams_per_user=self.max_streams_per_user,
            max_streams_per_node=self.max_streams_per_node,
            max_concurrent_handshakes=self.max_concurrent_handshakes,
            emit_rate_per_service=self.emit_rate_per_service,
            emit_burst_per_service=self.emit_burst_per_service,
            revocation_ttl_s=self.revocation_ttl_s,
        )

    def router_limits(self) -> RouterLimits:
        return RouterLimits(
            queue=QueueLimits(
                max_events=self.queue_max_events,
                max_bytes=self.queue_max_bytes,
                max_write_bytes=min(self.queue_max_bytes, 1 * MiB),
                overflow_grace_s=self.queue_overflow_grace_ms / 1000,
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
            # Off for one process, so that a port someone else holds with
            # SO_REUSEPORT is refused, not shared; workers share theirs.
            ("grpc.so_reuseport", int(self.worker_count() > 1)),
        ]
        if self.max_connection_age_s:
            options += [
                ("grpc.max_connection_age_ms", int(self.max_connection_age_s * 1000)),
                ("grpc.max_connection_age_grace_ms", int(self.max_connection_age_grace_s * 1000)),
            ]
        return options


@cache
def _specs() -> tuple[tuple[str, type, Check | None], ...]:
    return tuple((f.name, type(f.default), setting_of(f).check) for f in fields(ServerConfig))


@cache
def field_types() -> dict[str, type]:
    """Field name -> its type (that of its default: bool, int, float or str)."""
    return {name: kind for name, kind, _ in _specs()}


@cache
def int_text_fields() -> frozenset[str]:
    """The str fields a TOML file may give as an integer (``takes_int``)."""
    return frozenset(f.name for f in fields(ServerConfig) if setting_of(f).takes_int)


def validate(values: Mapping[str, Any]) -> list[Problem]:
    """Every problem with a full set of field values (empty when they are fine)."""
    return problems(values, _specs())


__all__ = [
    "EVENT_LOOPS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MiB",
    "ServerConfig",
    "Setting",
    "field_types",
    "int_text_fields",
    "setting",
    "setting_of",
    "validate",
]
