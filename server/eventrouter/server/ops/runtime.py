"""Everything a node runs to be operated: health, reflection, metrics, status page.

``RouterServer`` owns one ``Operability`` and calls it at five points (it
imports this module; this module knows it only as an ``OperatedNode``):
``add_services`` and ``listen`` (the HTTP address) before the gRPC server
starts, ``start`` after, then ``begin_shutdown`` first thing in a graceful
stop and ``stop`` last.

Health (grpc.health.v1.Health: Check, Watch and List): the overall service
``""`` and ``eventrouter.v1.EventRouterService`` are SERVING while
``RouterServer.is_healthy()`` returns True.  It is asked every
``health_interval_s`` and the status flips when the answer changes (watchers
are told at once).  During a graceful shutdown both are NOT_SERVING for good.
A third name, ``liveness``, is SERVING from start until that shutdown,
whatever the broker does: it is what a liveness probe asks (deploy/kubernetes),
so that a Redis outage takes nodes out of rotation without restarting them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any, Protocol

from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_health.v1._async import (  # type: ignore[import-untyped]
    HealthServicer as _GrpcHealthServicer,
)
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]
from prometheus_client.exposition import choose_encoder

from eventrouter.server.binding import listen_error
from eventrouter.server.config import ServerConfig
from eventrouter.server.handlers import SERVICE_NAME
from eventrouter.server.ops.http import HttpServer, Request, Response, split_host_port
from eventrouter.server.ops.logs import UserIdHasher
from eventrouter.server.ops.metrics import MetricsSource, build_registry
from eventrouter.server.ops.status import StatusTracker
from eventrouter.server.ops.status_page import CONTENT_SECURITY_POLICY, PAGE

if TYPE_CHECKING:
    import grpc

log = logging.getLogger("eventrouter.server.ops")

HEALTH_SERVICE_NAME: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# The services health is reported for: the whole server ("") and the router.
HEALTH_SERVICES = ("", SERVICE_NAME)
# SERVING while the process answers gRPC, until a graceful stop: for liveness probes.
LIVENESS_SERVICE = "liveness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Status samples for the events-per-second window.
SAMPLE_INTERVAL_S = 1.0


class HealthServicer(_GrpcHealthServicer):  # type: ignore[misc]
    """grpc's asyncio health servicer, plus ``List``.

    grpcio-health-checking 1.85 ships ``List`` in the proto (so reflection
    advertises it) but its asyncio servicer leaves it to the base class,
    which answers UNIMPLEMENTED and gets an ERROR traceback logged by grpc.
    ``List`` answers from the same table ``Check`` reads (``_server_status``,
    filled by ``set`` and by the graceful shutdown), so the two always agree;
    tests/ops/test_health_reflection.py notices if a release renames it.
    """

    async def List(
        self, request: health_pb2.HealthListRequest, context: Any
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                service: health_pb2.HealthCheckResponse(status=status)
                for service, status in self._server_status.items()
            }
        )


class OperatedNode(MetricsSource, Protocol):
    """What ``Operability`` reads of the node it serves (a ``RouterServer``)."""

    @property
    def config(self) -> ServerConfig: ...

    def is_healthy(self) -> bool:
        """Whether the node can do its job now; health status follows it."""
        ...


class Operability:
    """Health checking, server reflection, and the metrics/status HTTP endpoint of one node."""

    def __init__(self, server: OperatedNode) -> None:
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

    async def listen(self) -> None:
        """Bind the metrics and status page address (if any); ``ListenError`` when it is taken.

        A node without the address it was given must not start: it would run
        unobserved while that address (``http://127.0.0.1:9464/``) shows
        another process's metrics and status page, which looks like this one's.
        """
        listen = self.server.config.metrics_listen
        if not listen:
            return
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
            raise listen_error(listen, "metrics and the status page", "--metrics-listen", e) from e
        self.http = http
        log.info("metrics on http://%s:%d/metrics, status page on /", host, self.metrics_port)

    async def start(self) -> None:
        """Start health checking and status sampling (after ``listen``, once the server serves)."""
        await self._check_health(force=True)
        await self.health.set(LIVENESS_SERVICE, SERVING)
        self._tasks.append(asyncio.create_task(self._health_loop()))
        self._tasks.append(asyncio.create_task(self._sample_loop()))

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


__all__ = [
    "HEALTH_SERVICES",
    "HEALTH_SERVICE_NAME",
    "LIVENESS_SERVICE",
    "HealthServicer",
    "Operability",
    "OperatedNode",
]
