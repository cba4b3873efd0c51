"""Everything a node runs to be operated: health, reflection, metrics, status page.

``RouterServer`` owns one ``Operability`` and calls it at four points:
``add_services`` before the gRPC server starts, ``start`` after, then
``begin_shutdown`` first thing in a graceful stop and ``stop`` last.

Health (grpc.health.v1.Health): the overall service ``""`` and
``eventrouter.v1.EventRouterService`` are SERVING while
``RouterServer.is_healthy()`` returns True.  It is asked every
``health_interval_s`` and the status flips when the answer changes (watchers
are told at once).  During a graceful shutdown both are NOT_SERVING for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_health.v1._async import HealthServicer  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]
from prometheus_client.exposition import choose_encoder

from eventrouter.server.ops.http import HttpServer, Request, Response, split_host_port
from eventrouter.server.ops.logs import UserIdHasher
from eventrouter.server.ops.metrics import build_registry
from eventrouter.server.ops.status import StatusTracker
from eventrouter.server.ops.status_page import CONTENT_SECURITY_POLICY, PAGE
from eventrouter.server.service import SERVICE_NAME

if TYPE_CHECKING:
    import grpc

    from eventrouter.server.app import RouterServer

log = logging.getLogger("eventrouter.server.ops")

HEALTH_SERVICE_NAME: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# The services health is reported for: the whole server ("") and the router.
HEALTH_SERVICES = ("", SERVICE_NAME)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Status samples for the events-per-second window.
SAMPLE_INTERVAL_S = 1.0


class Operability:
    """Health checking, server reflection, and the metrics/status HTTP endpoint of one node."""

    def __init__(self, server: RouterServer) -> None:
        self.server = server
        config = server.config
        self.health = HealthServicer()
        self.healthy = True
        self.hasher = UserIdHasher.from_config(config)
        self.registry = build_registry(server, healthy=lambda: self.healthy)
        self.status = StatusTracker(server, hasher=self.hasher, healthy=lambda: self.healthy)
        self.http: HttpServer | None = None
        self.metrics_port: int | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- gRPC services ---------------------------------------------------

    def add_services(self, grpc_server: grpc.aio.Server) -> None:
        """Register health and reflection on the (not yet started) gRPC server."""
        health_pb2_grpc.add_HealthServicer_to_server(self.health, grpc_server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), grpc_server
        )

    async def start(self) -> None:
        await self._check_health(force=True)
        self._tasks.append(asyncio.create_task(self._health_loop()))
        listen = self.server.config.metrics_listen
        if listen:
            await self._start_http(listen)
        self._tasks.append(asyncio.create_task(self._sample_loop()))

    async def _start_http(self, listen: str) -> None:
        http = HttpServer(
            {
                "/metrics": self._metrics,
                "/": self._page,
                "/status": self._page,
                "/status.json": self._status_json,
            }
        )
        host, port = split_host_port(listen)
        try:
            self.metrics_port = await http.start(host, port)
        except OSError as e:
            # The router is worth more than its metrics: keep serving, say it loudly.
            log.error("metrics and status page disabled: cannot listen on %s: %s", listen, e)
            return
        self.http = http
        log.info("metrics on http://%s:%d/metrics, status page on /", host, self.metrics_port)

    # -- health ----------------------------------------------------------

    async def _health_loop(self) -> None:
        interval = self.server.config.health_interval_s
        while True:
            await asyncio.sleep(interval)
            await self._check_health()

    async def _check_health(self, force: bool = False) -> None:
        try:
            healthy = bool(self.server.is_healthy())
        except Exception:
            log.exception("health check failed: reporting NOT_SERVING")
            healthy = False
        if healthy != self.healthy or force:
            if healthy != self.healthy:
                log.warning("health: now %s", "SERVING" if healthy else "NOT_SERVING")
            self.healthy = healthy
            for name in HEALTH_SERVICES:
                await self.health.set(name, SERVING if healthy else NOT_SERVING)

    async def _sample_loop(self) -> None:
        while True:
            self.status.sample()
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    # -- shutdown --------------------------------------------------------

    async def begin_shutdown(self) -> None:
        """NOT_SERVING from now on, whatever ``is_healthy`` says (graceful stop)."""
        for task in self._tasks:
            task.cancel()
        self.healthy = False
        await self.health.enter_graceful_shutdown()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.http is not None:
            await self.http.stop()
            self.http = None

    # -- HTTP handlers -----------------------------------------------------

    def _metrics(self, request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(200, encoder(self.registry), content_type)

    def _page(self, request: Request) -> Response:
        return Response(
            200,
            PAGE,
            "text/html; charset=utf-8",
            {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Referrer-Policy": "no-referrer"},
        )

    def _status_json(self, request: Request) -> Response:
        snapshot: dict[str, Any] = self.status.snapshot()
        return Response(200, json.dumps(snapshot).encode(), "application/json")


__all__ = ["HEALTH_SERVICES", "HEALTH_SERVICE_NAME", "Operability"]
