"""Running the service: the grpc.aio server, housekeeping, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
from collections.abc import Callable

import grpc

from eventrouter.server.auth import (
    Authenticator,
    InsecureMetadataAuthenticator,
    TokenAuthenticator,
)
from eventrouter.server.binding import bind_grpc
from eventrouter.server.broker import Broker
from eventrouter.server.broker.factory import broker_factory
from eventrouter.server.config import ServerConfig
from eventrouter.server.core.queue import CloseReason
from eventrouter.server.core.router import EventRouter
from eventrouter.server.handlers import Handlers
from eventrouter.server.ops.runtime import Operability
from eventrouter.server.security.tokens import KeySet, ensure_keys_file
from eventrouter.server.transports.cors import CorsPolicy
from eventrouter.server.transports.grpc_aio import GrpcAdapter
from eventrouter.server.transports.web import WebApp
from eventrouter.server.transports.web_server import WebListener

log = logging.getLogger("eventrouter.server")

SWEEP_INTERVAL_S = 30.0


class RouterServer:
    """One router node: a gRPC server in front of an ``EventRouter``."""

    def __init__(
        self,
        config: ServerConfig | None = None,
        authenticator: Authenticator | None = None,
        broker: Callable[[EventRouter], Broker] | None = None,
        *,
        announce: bool = True,
    ) -> None:
        self.config = config or ServerConfig()
        # Whether start() logs the "listening" line (a worker's supervisor logs it instead).
        self.announce = announce
        # A worker of --workers N: its ports are shared with the other workers.
        self.shared_ports = self.config.worker_count() > 1
        self.router = EventRouter(self.config.router_limits(), self.config.node_id or None)
        # memory:// (default) or Redis, as --broker says, unless a factory is given.
        self.broker = (broker or broker_factory(self.config.broker))(self.router)
        self.service = Handlers(
            self.broker,
            authenticator or build_authenticator(self.config),
            limits=self.config.security_limits(),
            heartbeat_default_ms=self.config.heartbeat_ms,
        )
        self._server: grpc.aio.Server | None = None
        self._web: WebListener | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port = 0
        # The web listener's port (Connect, gRPC-Web); 0 while it is off.
        self.web_port = 0
        # Health, reflection, /metrics and the status page (eventrouter.server.ops).
        self.ops = Operability(self)

    def is_healthy(self) -> bool:
        """Whether this node can do its job; the gRPC health status follows it.

        Asked every ``health_interval_s``.  Always True for a single node;
        a clustered node reports whether its broker is reachable.
        """
        return self.broker.healthy()

    async def start(self) -> int:
        """Bind and start serving; returns the bound port.

        Raises ``ListenError`` (an OSError naming the address and its flag)
        when the metrics or the gRPC address cannot be bound, before anything
        serves. The metrics address comes first: a grpc server that bound its
        port and never started keeps it until it is garbage-collected.
        """
        server = grpc.aio.server(options=self.config.grpc_options())
        server.add_generic_rpc_handlers((GrpcAdapter(self.service).generic_handler(),))
        self.ops.add_services(server)
        await self.ops.listen()
        web = self._web_listener()
        try:
            self.port = bind_grpc(
                server,
                self.config.listen,
                server_credentials(self.config),
                shared=self.shared_ports,
            )
            if web is not None:
                self.web_port = await web.start()
                self._web = web
            await self.broker.start()
            await server.start()
        except BaseException:
            if self._web is not None:
                await self._web.stop()
                self._web = None
            await self.ops.stop()
            raise
        self._server = server
        self._sweeper = asyncio.create_task(self._sweep_forever())
        await self.ops.start()
        if self.announce:
            self._announce()
        return self.port

    def _announce(self) -> None:
        host = self.config.listen.rpartition(":")[0]
        log.info(
            "eventrouter listening on %s:%d (node %s, event loop %s)",
            host,
            self.port,
            self.router.node_id,
            loop_name(),
        )
        if self._web is not None:
            log.info(
                "web listener (Connect, gRPC-Web) on %s:%d",
                self.config.web_listen.rpartition(":")[0],
                self.web_port,
            )

    def _web_listener(self) -> WebListener | None:
        config = self.config
        if not config.web_listen:
            return None
        app = WebApp(
            self.service,
            CorsPolicy(_csv(config.web_cors_origins)),
            max_request_bytes=config.max_request_bytes,
            heartbeat_default_ms=config.web_heartbeat_ms or config.heartbeat_ms,
        )
        return WebListener(
            app,
            config.web_listen,
            tls=web_tls_context(config),
            shutdown_grace_s=config.shutdown_grace_s,
            shared=self.shared_ports,
        )

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            evicted = self.router.sweep()
            if evicted:
                log.debug("evicted idle history of %d users", evicted)

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful drain: refuse new streams, end open ones with UNAVAILABLE, let emits finish."""
        if self._server is None:
            return
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        # Health turns NOT_SERVING first, so load balancers stop sending new calls.
        await self.ops.begin_shutdown()
        closed = self.service.close_all_streams(
            CloseReason.SHUTDOWN, "server is shutting down: reconnect and resume"
        )
        log.info("shutting down: ended %d streams, grace %.1fs for in-flight calls", closed, grace)
        if self._sweeper is not None:
            self._sweeper.cancel()
        # Both listeners drain at once: their streams were ended above, and
        # in-flight emits finish within the grace on either.
        web, self._web = self._web, None
        await asyncio.gather(self._server.stop(grace), web.stop() if web else asyncio.sleep(0))
        self._server = None
        await self.ops.stop()
        await self.broker.close()

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


def build_authenticator(config: ServerConfig) -> Authenticator:
    """Token verification from the keys file, or the insecure metadata mode."""
    if config.insecure:
        # Once, at start: a line per stream would bury every other line of
        # the log (5,000 streams, 5,000 warnings) and say nothing new.
        log.warning(
            "INSECURE MODE: subscribers name their own user id and anyone may emit; "
            "for local experiments only"
        )
        return InsecureMetadataAuthenticator()
    path = config.keys_path()
    if ensure_keys_file(path):
        log.info("generated a new signing secret in %s (mode 0600)", path)
    if path.stat().st_mode & 0o077:
        raise ValueError(f"keys file {path} is readable by others: chmod 600 it")
    keys = KeySet.load(path)
    return TokenAuthenticator(
        keys,
        revoked_token_ids=_csv(config.revoked_token_ids),
        service_subjects=_csv(config.service_subjects),
    )


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    if not config.tls_cert:
        return None
    with open(config.tls_cert, "rb") as cert, open(config.tls_key, "rb") as key:
        pair = (key.read(), cert.read())
    client_ca = None
    if config.tls_client_ca:
        with open(config.tls_client_ca, "rb") as ca:
            client_ca = ca.read()
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def web_tls_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The node's certificate for the web listener too (and its client CA: mTLS)."""
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    if config.tls_client_ca:
        context.load_verify_locations(config.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def loop_name() -> str:
    """The running event loop's library: ``uvloop`` or ``asyncio``."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``event_loop`` asks for; None = asyncio's own.

    uvloop runs the same server for 2-4% less CPU per event in `make bench`
    (W1, W2 and W4 batched, `bench/run.py --targets eventrouter,eventrouter+uvloop`).
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ValueError("event_loop: uvloop is not installed") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_server(
    config: ServerConfig, on_started: Callable[[RouterServer, asyncio.Event], None] | None = None
) -> None:
    """Serve on the configured event loop until SIGTERM or SIGINT."""
    with asyncio.Runner(loop_factory=loop_factory(config.event_loop)) as runner:
        runner.run(serve(config, on_started))


async def serve(
    config: ServerConfig, on_started: Callable[[RouterServer, asyncio.Event], None] | None = None
) -> None:
    """Run until SIGTERM or SIGINT, then drain within the configured grace period.

    ``on_started(server, stop)``, when given, is told once the node serves,
    instead of the "listening" line being logged (a worker tells its
    supervisor, which logs it once for all workers); setting ``stop`` drains.
    """
    server = RouterServer(config, announce=on_started is None)
    # Handlers first: a SIGTERM right after "listening" is logged must drain
    # gracefully, not kill the process.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await server.start()
    if on_started is not None:
        on_started(server, stop)
    # Everything allocated at start-up lives as long as the process: keep the
    # collector from rescanning it, and collect the young generation less
    # often (each emit allocates a few short-lived objects). Measured by
    # `make bench`: W2 batched -19% server CPU per emit, p99 175 -> 42 ms.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, *gc.get_threshold()[1:])
    await stop.wait()
    await server.stop()
