"""Remembers recent emits so that a retried emit is acknowledged, not redelivered.

Keys are (user id, kind, key): an update's own ``id``, or an ephemeral's
optional idempotency key.  Entries expire after the window; the oldest are
also evicted past ``max_entries``, which bounds memory under any emit rate.
"""

from __future__ import annotations

import time
from collections import OrderedDict
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
        self._entries: OrderedDict[tuple[str, str, str], tuple[float, T]] = OrderedDict()

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
        self._entries[key] = (now + self.window_s, value)
        self._entries.move_to_end(key)
        self._prune(now)

    def _prune(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, (expires, _) = next(iter(entries.items()))
            if expires >= now and len(entries) <= self.max_entries:
                break
            del entries[key]

    def __len__(self) -> int:
        return len(self._entries)
