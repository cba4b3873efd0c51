"""Prometheus metrics, read from the router's own counters at scrape time.

The routing core imports no metrics library and pays for plain integer
increments only (``RouterStats``, ``Handlers.emit_counts``,
``core.stats.Histogram``).  ``RouterCollector`` is a custom prometheus_client
collector that turns those counters into metric families when Prometheus
scrapes, so the emit path never touches a labelled metric.

Exported (all prefixed ``eventrouter_``):

=====================================  =======================================================
``info{node_id}``                      this node
``healthy``                            1 while the gRPC health status is SERVING
``open_streams{scope}``                open Subscribe streams by scope (user/session/machine)
``emits_total{payload,filter,outcome}``  Emit calls (EmitBatch: each emit) by payload kind,
                                       recipient filter and outcome (ok, duplicate, invalid,
                                       too_large, unauthenticated, rate_limited)
``routed_events_total{type}``          events routed (update/ephemeral), duplicates excluded
``duplicates_total``                   emits recognised as repeats (not delivered again)
``deliveries_total``                   events queued to a connection
``drops_total{reason}``                ephemeral_dropped: ephemerals that found a full queue;
                                       too_slow: streams closed because an update found no room
``queue_depth``                        gauge histogram of every open stream's queue depth now
``queue_pending_bytes``                bytes waiting in all queues now
``emit_to_write_seconds``              age of the oldest event of each stream write
``resume_attempts_total``              Subscribe calls with resume_from
``resume_failures_total``              ... of which could not resume (client must refetch)
``auth_failures_total{reason}``        refused credentials by reason
``limit_rejections_total{kind}``       calls refused by a limit
``broker_publish_seconds``             broker publish latency (when the server has a broker)
``broker_publish_errors_total``        broker publish errors (same)
=====================================  =======================================================

Cost: a scrape walks every open connection once (queue depths, streams by
scope), on the event loop; at 100,000 connections that is tens of
milliseconds every scrape interval.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry

from eventrouter.server.core.connections import (
    ClientConnection,
    MachineScopedConnection,
    SessionScopedConnection,
)
from eventrouter.server.core.router import EventRouter
from eventrouter.server.core.stats import Histogram
from eventrouter.server.handlers import Handlers

PREFIX = "eventrouter_"
SCOPES = ("user", "session", "machine")
# Upper bounds of the queue depth distribution (events pending per stream).
QUEUE_DEPTH_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)


class BrokerStats(Protocol):
    """What a broker exposes for metrics (the cluster broker sets ``server.broker_stats``).

    ``publish_errors`` is a plain count or a count per reason.
    """

    publish_latency: Histogram
    publish_errors: int | Mapping[str, int]


class MetricsSource(Protocol):
    """The server parts the collector reads (a ``RouterServer``)."""

    @property
    def router(self) -> EventRouter: ...

    @property
    def service(self) -> Handlers: ...


def scope_of(connection: ClientConnection) -> str:
    if isinstance(connection, SessionScopedConnection):
        return "session"
    if isinstance(connection, MachineScopedConnection):
        return "machine"
    return "user"


def histogram_buckets(histogram: Histogram) -> list[tuple[str, float]]:
    """``Histogram.cumulative()`` as prometheus_client bucket pairs (le label, count)."""
    return [(_le(bound), float(count)) for bound, count in histogram.cumulative()]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class RouterCollector:
    """A prometheus_client collector over one server's counters (see the module doc)."""

    def __init__(
        self,
        source: MetricsSource,
        *,
        healthy: Callable[[], bool] | None = None,
    ) -> None:
        self.source = source
        self.healthy = healthy

    def describe(self) -> Iterable[Metric]:
        # Registering must not walk the connections: no names announced.
        return []

    def collect(self) -> Iterable[Metric]:
        router = self.source.router
        service = self.source.service
        stats = router.stats

        yield InfoMetricFamily(PREFIX + "node", "This router node.", {"node_id": router.node_id})
        if self.healthy is not None:
            yield GaugeMetricFamily(
                PREFIX + "healthy",
                "1 while the gRPC health status is SERVING.",
                value=1.0 if self.healthy() else 0.0,
            )

        streams = dict.fromkeys(SCOPES, 0)
        depth_counts = [0] * (len(QUEUE_DEPTH_BUCKETS) + 1)
        depth_sum = 0
        pending_bytes = 0
        for connection in router.registry.all():
            streams[scope_of(connection)] += 1
            queue = connection.queue
            depth = queue.depth if queue is not None else 0
            depth_sum += depth
            pending_bytes += queue.pending_bytes if queue is not None else 0
            depth_counts[_bucket_index(depth)] += 1
        open_streams = GaugeMetricFamily(
            PREFIX + "open_streams", "Open Subscribe streams by scope.", labels=["scope"]
        )
        for scope, n in streams.items():
            open_streams.add_metric([scope], n)
        yield open_streams

        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*QUEUE_DEPTH_BUCKETS, float("inf")), depth_counts, strict=True):
            running += n
            cumulative.append((_le(bound), float(running)))
        yield GaugeHistogramMetricFamily(
            PREFIX + "queue_depth",
            "Events waiting in each open stream's queue, at scrape time.",
            buckets=cumulative,
            gsum_value=float(depth_sum),
        )
        yield GaugeMetricFamily(
            PREFIX + "queue_pending_bytes",
            "Bytes waiting in all queues, at scrape time.",
            value=pending_bytes,
        )

        emits = CounterMetricFamily(
            PREFIX + "emits",
            "Emit calls (each emit of an EmitBatch) by payload kind, recipient filter, outcome.",
            labels=["payload", "filter", "outcome"],
        )
        for (payload, recipient, outcome), n in sorted(service.emit_counts.items()):
            emits.add_metric([payload, recipient, outcome], n)
        yield emits

        routed = CounterMetricFamily(
            PREFIX + "routed_events", "Events routed, duplicates excluded.", labels=["type"]
        )
        routed.add_metric(["update"], stats.updates_emitted)
        routed.add_metric(["ephemeral"], stats.ephemerals_emitted)
        yield routed
        yield CounterMetricFamily(
            PREFIX + "duplicates",
            "Emits recognised as repeats of a recent one (not delivered again).",
            value=stats.duplicates,
        )
        yield CounterMetricFamily(
            PREFIX + "deliveries", "Events queued to a connection.", value=stats.deliveries
        )
        drops = CounterMetricFamily(
            PREFIX + "drops",
            "ephemeral_dropped: ephemeral events that found a full queue; "
            "too_slow: streams closed because an update found no room.",
            labels=["reason"],
        )
        drops.add_metric(["ephemeral_dropped"], stats.ephemeral_dropped)
        drops.add_metric(["too_slow"], stats.closed_too_slow)
        yield drops

        latency = service.write_latency
        yield HistogramMetricFamily(
            PREFIX + "emit_to_write_seconds",
            "Time from emit to stream write of the oldest event in each write.",
            buckets=histogram_buckets(latency),
            sum_value=latency.sum,
        )

        yield CounterMetricFamily(
            PREFIX + "resume_attempts",
            "Subscribe calls that asked to resume from a position.",
            value=stats.resumes_ok + stats.resumes_failed,
        )
        yield CounterMetricFamily(
            PREFIX + "resume_failures",
            "Resume attempts that could not replay the gap (client must refetch).",
            value=stats.resumes_failed,
        )

        security = service.security_stats
        auth = CounterMetricFamily(
            PREFIX + "auth_failures", "Refused credentials by reason.", labels=["reason"]
        )
        for reason, n in sorted(security.auth_failures.items()):
            auth.add_metric([reason], n)
        yield auth
        limits = CounterMetricFamily(
            PREFIX + "limit_rejections", "Calls refused by a limit, by kind.", labels=["kind"]
        )
        for kind, n in sorted(security.limit_rejections.items()):
            limits.add_metric([kind], n)
        yield limits

        yield from _broker_metrics(getattr(self.source, "broker_stats", None))


def _bucket_index(depth: int) -> int:
    for i, bound in enumerate(QUEUE_DEPTH_BUCKETS):
        if depth <= bound:
            return i
    return len(QUEUE_DEPTH_BUCKETS)


def _broker_metrics(broker: object) -> Iterable[Metric]:
    """Broker publish latency and errors, for whatever of them ``broker`` has."""
    if broker is None:
        return
    latency = getattr(broker, "publish_latency", None)
    if isinstance(latency, Histogram):
        yield HistogramMetricFamily(
            PREFIX + "broker_publish_seconds",
            "Time to publish an event to the broker.",
            buckets=histogram_buckets(latency),
            sum_value=latency.sum,
        )
    errors = getattr(broker, "publish_errors", None)
    if isinstance(errors, Mapping):
        family = CounterMetricFamily(
            PREFIX + "broker_publish_errors", "Failed broker publishes.", labels=["reason"]
        )
        for reason, n in sorted(errors.items()):
            family.add_metric([str(reason)], n)
        yield family
    elif isinstance(errors, int):
        yield CounterMetricFamily(
            PREFIX + "broker_publish_errors", "Failed broker publishes.", value=errors
        )


def build_registry(
    source: MetricsSource, healthy: Callable[[], bool] | None = None
) -> CollectorRegistry:
    """A registry of its own per server (several servers can share a process in tests)."""
    from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

    registry = CollectorRegistry()
    registry.register(RouterCollector(source, healthy=healthy))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


__all__ = [
    "QUEUE_DEPTH_BUCKETS",
    "BrokerStats",
    "MetricsSource",
    "RouterCollector",
    "build_registry",
    "histogram_buckets",
    "scope_of",
]
