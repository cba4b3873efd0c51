"""Running the service: the grpc.aio server, housekeeping, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import grpc

from eventrouter.server.auth import Authenticator, InsecureMetadataAuthenticator
from eventrouter.server.config import ServerConfig
from eventrouter.server.core.queue import CloseReason
from eventrouter.server.core.router import EventRouter
from eventrouter.server.service import EventRouterService

log = logging.getLogger("eventrouter.server")

SWEEP_INTERVAL_S = 30.0


class RouterServer:
    """One router node: a gRPC server in front of an ``EventRouter``."""

    def __init__(
        self,
        config: ServerConfig | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.config = config or ServerConfig()
        self.router = EventRouter(self.config.router_limits(), self.config.node_id or None)
        if authenticator is None:
            authenticator = InsecureMetadataAuthenticator()
            log.warning(
                "INSECURE: subscribers are trusted to name their user id in metadata; "
                "do not expose this server beyond localhost"
            )
        self.service = EventRouterService(
            self.router, authenticator, heartbeat_default_ms=self.config.heartbeat_ms
        )
        self._server: grpc.aio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> int:
        """Bind and start serving; returns the bound port."""
        server = grpc.aio.server(options=self.config.grpc_options())
        server.add_generic_rpc_handlers((self.service.generic_handler(),))
        self.port = server.add_insecure_port(self.config.listen)
        if self.port == 0:
            raise OSError(f"could not bind {self.config.listen}")
        await server.start()
        self._server = server
        self._sweeper = asyncio.create_task(self._sweep_forever())
        host = self.config.listen.rpartition(":")[0]
        log.info("eventrouter listening on %s:%d (node %s)", host, self.port, self.router.node_id)
        return self.port

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
        closed = self.service.close_all_streams(
            CloseReason.SHUTDOWN, "server is shutting down: reconnect and resume"
        )
        log.info("shutting down: ended %d streams, grace %.1fs for in-flight calls", closed, grace)
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self._server.stop(grace)
        self._server = None

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve(config: ServerConfig) -> None:
    """Run until SIGTERM or SIGINT, then drain within the configured grace period."""
    server = RouterServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
