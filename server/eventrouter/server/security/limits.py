"""Rate and concurrency limits that protect the nodes from one caller.

With a broker spanning nodes (Redis), ``max_streams_per_user`` and the emit
rate are counted across the cluster (broker/redis_limits.py); ``RateLimiter``
is the one-node count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SecurityLimits:
    """Caps on what callers may hold or send (0 = unlimited where noted)."""

    # Streams one user may hold (apps, viewers, daemons together; cluster-wide with Redis).
    max_streams_per_user: int = 100
    # Streams this node holds in total.
    max_streams_per_node: int = 100_000
    # Subscribe calls between arrival and their first write (auth, registration).
    max_concurrent_handshakes: int = 1000
    # Emitted events per second per service credential; 0 = unlimited.
    emit_rate_per_service: float = 0.0
    # Events a service may send in a burst above its rate.
    emit_burst_per_service: int = 10_000
    # How long a Disconnect's revocation lasts at least (longer when the token
    # it names, seen in a stream, expires later).
    revocation_ttl_s: float = 86_400.0


class RateLimiter:
    """Token buckets by key: ``rate`` per second, up to ``burst`` saved up."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(burst, 1)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, cost: int = 1) -> bool:
        """Take ``cost`` tokens from ``key``'s bucket; False (and nothing taken) if short."""
        if self.rate <= 0:
            return True
        now = self._clock()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - cost, now)
        return True
