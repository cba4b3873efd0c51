"""Remembers recent emits so that a retried emit is acknowledged, not redelivered.

Keys are (user id, kind, key): an update's own ``id``, or an ephemeral's
optional idempotency key.  Entries expire after the window; the oldest are
also evicted past ``max_entries``, which bounds memory under any emit rate.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class IdempotencyCache(Generic[T]):
    def __init__(
        self,
        window_s: float = 300.0,
        max_entries: int = 1_000_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[tuple[str, str, str], tuple[float, T]] = {}
        # (expiry, key) in the order they were put, which is expiry order (the
        # window is fixed and the clock monotonic).  A key put again, or dropped
        # by get() once expired, leaves a stale record here, recognised by its
        # expiry and skipped; pruning from the left is O(1) per entry.
        self._expiries: deque[tuple[float, tuple[str, str, str]]] = deque()

    def get(self, key: tuple[str, str, str]) -> T | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        expires, value = hit
        if expires < self._clock():
            del self._entries[key]
            return None
        return value

    def put(self, key: tuple[str, str, str], value: T) -> None:
        if self.window_s <= 0:
            return
        now = self._clock()
        expires = now + self.window_s
        self._entries[key] = (expires, value)
        self._expiries.append((expires, key))
        self._prune(now)

    def _prune(self, now: float) -> None:
        expiries = self._expiries
        entries = self._entries
        while expiries and (expiries[0][0] < now or len(expiries) > self.max_entries):
            expires, key = expiries.popleft()
            hit = entries.get(key)
            if hit is not None and hit[0] == expires:
                del entries[key]

    def __len__(self) -> int:
        return len(self._entries)
