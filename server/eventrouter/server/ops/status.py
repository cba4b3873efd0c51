"""The live status of one node, as ``/status.json`` serves it to the status page.

Its "nodes" are this node and, in a cluster, every live node as the broker's
node directory last listed it (redis_revocations: leases renewed with presence).

Rates (events per second) come from the same counters the metrics export,
sampled about once a second into a sliding window: the rate is the counter's
increase between the oldest and the newest sample in the window, divided by
the time between them.  Nothing is added to the emit path.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventrouter.server.core.connections import ClientConnection
from eventrouter.server.ops.logs import UserIdHasher
from eventrouter.server.ops.metrics import SCOPES, MetricsSource, scope_of

WINDOW_S = 10.0
TOP_CONSUMERS = 10


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    emitted: int
    deliveries: int
    dropped: int


class RateWindow:
    """Counter samples over the last ``window_s`` seconds (plus the one just before)."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[_Sample] = deque()

    def add(self, sample: _Sample) -> None:
        samples = self._samples
        if samples and sample.at <= samples[-1].at:
            samples[-1] = sample  # same instant: keep the newest values
        else:
            samples.append(sample)
        # Keep one sample at or before the window's start, so the window is full.
        while len(samples) > 2 and samples[1].at <= sample.at - self.window_s:
            samples.popleft()

    def rates(self) -> dict[str, float]:
        samples = self._samples
        if len(samples) < 2:
            return {"emitted": 0.0, "deliveries": 0.0, "dropped": 0.0}
        first, last = samples[0], samples[-1]
        span = last.at - first.at
        return {
            "emitted": (last.emitted - first.emitted) / span,
            "deliveries": (last.deliveries - first.deliveries) / span,
            "dropped": (last.dropped - first.dropped) / span,
        }

    @property
    def span_s(self) -> float:
        return self._samples[-1].at - self._samples[0].at if len(self._samples) > 1 else 0.0


class StatusTracker:
    """Builds the status snapshot of one node."""

    def __init__(
        self,
        source: MetricsSource,
        *,
        hasher: UserIdHasher | None = None,
        healthy: Callable[[], bool] | None = None,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.hasher = hasher
        self.healthy = healthy
        self.window = RateWindow(window_s)
        self.clock = clock
        self.started_at = time.time()

    def sample(self) -> None:
        """Record the counters now (call about once a second, and on each snapshot)."""
        stats = self.source.router.stats
        self.window.add(
            _Sample(
                at=self.clock(),
                emitted=stats.updates_emitted + stats.ephemerals_emitted,
                deliveries=stats.deliveries,
                dropped=stats.ephemeral_dropped,
            )
        )

    def _user(self, user_id: str) -> str:
        return self.hasher(user_id) if self.hasher is not None else user_id

    def snapshot(self) -> dict[str, Any]:
        self.sample()
        router = self.source.router
        stats = router.stats
        streams = dict.fromkeys(SCOPES, 0)
        connections = list(router.registry.all())
        for connection in connections:
            streams[scope_of(connection)] += 1
        slowest = heapq.nlargest(TOP_CONSUMERS, connections, key=_depth)
        rates = self.window.rates()
        healthy = self.healthy() if self.healthy is not None else True
        return {
            "node_id": router.node_id,
            "nodes": self._nodes(healthy, len(connections)),
            "time_ms": int(time.time() * 1000),
            "uptime_s": round(time.time() - self.started_at, 1),
            "open_streams": {**streams, "total": len(connections)},
            "rates": {
                "window_s": round(self.window.span_s, 2),
                "events_per_second": round(rates["emitted"], 2),
                "deliveries_per_second": round(rates["deliveries"], 2),
                "drops_per_second": round(rates["dropped"], 2),
            },
            "totals": {
                "updates_emitted": stats.updates_emitted,
                "ephemerals_emitted": stats.ephemerals_emitted,
                "duplicates": stats.duplicates,
                "deliveries": stats.deliveries,
                "resumes_ok": stats.resumes_ok,
                "resumes_failed": stats.resumes_failed,
            },
            "drops": {
                "ephemeral_dropped": stats.ephemeral_dropped,
                "too_slow": stats.closed_too_slow,
            },
            "user_ids_hashed": self.hasher is not None,
            "slowest_consumers": [
                {
                    "connection_id": c.connection_id,
                    "scope": _scope_label(c),
                    "user_id": self._user(c.user_id),
                    "depth": _depth(c),
                    "pending_bytes": c.queue.pending_bytes if c.queue is not None else 0,
                    "dropped_ephemeral": c.queue.dropped_ephemeral if c.queue is not None else 0,
                    "delivered": c.queue.delivered if c.queue is not None else 0,
                    "opened_at_ms": c.opened_at_ms,
                }
                for c in slowest
            ],
        }

    def _nodes(self, healthy: bool, streams: int) -> list[dict[str, Any]]:
        """This node, and every other live node that cluster presence lists."""
        own = self.source.router.node_id
        nodes = [{"id": own, "self": True, "healthy": healthy, "streams": streams}]
        for node in self.source.service.state.broker.live_nodes():
            if node.node_id != own:
                # Listed = its lease is current: it reached Redis within presence_ttl.
                nodes.append(
                    {"id": node.node_id, "self": False, "healthy": True, "streams": node.streams}
                )
        return sorted(nodes, key=lambda n: str(n["id"]))


def _depth(connection: ClientConnection) -> int:
    return connection.queue.depth if connection.queue is not None else 0


def _scope_label(connection: ClientConnection) -> str:
    scope = scope_of(connection)
    ref = getattr(connection, "session_id", None) or getattr(connection, "machine_id", None)
    return f"{scope}:{ref}" if ref else scope


__all__ = ["RateWindow", "StatusTracker"]
