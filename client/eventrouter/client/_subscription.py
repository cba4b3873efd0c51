"""``Subscription``: a Subscribe stream as an async iterator that survives disconnects.

>>> async with client.subscribe(session_scope("s1"), user_id="u1") as sub:  # doctest: +SKIP
...     async for event in sub:
...         match event:
...             case UpdateReceived(payload, position): apply(payload)
...             case EphemeralReceived(payload): show(payload)
...             case RefetchRequired(): await reload_state()

Each stream message carries a batch of events; they are kept in a buffer and
handed out one at a time. Nothing is read ahead of the consumer: a consumer
that stops reading lets gRPC's flow control push back to the router, which
ends the stream as too slow (RESOURCE_EXHAUSTED) once its per-connection
queue is full; the subscription then reconnects and resumes after the last
update it handed out, so the consumer still sees every update exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from types import TracebackType

import grpc

from eventrouter.client._events import (
    EphemeralReceived,
    SubscriptionCore,
    SubscriptionEvent,
    UpdateReceived,
)
from eventrouter.v1 import events_pb2

__all__ = ["Subscription"]


class Subscription(SubscriptionCore):
    """Async iterator + async context manager over one logical subscription.

    Made by ``EventRouterClient.subscribe``. Iterating yields
    ``UpdateReceived``, ``EphemeralReceived`` and ``RefetchRequired`` (plus
    ``Heartbeat`` and ``Connected`` with ``include_control=True``). After
    UNAVAILABLE (router restart or shutdown), RESOURCE_EXHAUSTED (consumer
    too slow) or a broken transport it reconnects with jittered backoff and
    resumes after ``position``; UNAUTHENTICATED, PERMISSION_DENIED and
    INVALID_ARGUMENT raise the matching ``EventRouterError`` instead.
    Properties: ``connection_id``, ``opened``, ``position``, ``reconnects``,
    ``pending``, ``closed``.
    """

    _closing: asyncio.Event | None = None

    def _closing_event(self) -> asyncio.Event:
        if self._closing is None:
            self._closing = asyncio.Event()
        return self._closing

    async def open(self) -> Subscription:
        """Wait until the first stream is open (``connection_id`` is known); idempotent."""
        while self._state.opens == 0:
            if self._closed:
                raise RuntimeError("subscription is closed")
            await self._fill()
        return self

    async def aclose(self) -> None:
        """End the stream; iteration stops. Safe to call more than once."""
        self._mark_closed()
        self._closing_event().set()

    async def __aenter__(self) -> Subscription:
        try:
            return await self.open()
        except BaseException:
            await self.aclose()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> SubscriptionEvent:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            await self._fill()
        if self._closed:
            raise StopAsyncIteration
        return self._buffer.popleft()

    async def payloads(
        self,
    ) -> AsyncGenerator[events_pb2.UpdatePayload | events_pb2.EphemeralPayload, None]:
        """Only the payloads, for callers that do not care about positions or refetches."""
        async for event in self:
            if isinstance(event, UpdateReceived | EphemeralReceived):
                yield event.payload

    async def _fill(self) -> None:
        """Read the next stream message into the buffer, reconnecting as needed."""
        call = self._call
        if call is None:
            if self._delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._delay):
                        await self._closing_event().wait()
            if self._closed:
                return
            call = self._start_call()
        try:
            async with asyncio.timeout(self._state.idle_timeout_s()):
                response = await call.read()
        except grpc.aio.AioRpcError as e:
            self._stream_ended(e.code(), e.details() or "", e)
            return
        except TimeoutError:
            # Heartbeats were promised and none came: the transport is dead
            # even if TCP has not noticed yet.
            self._stream_ended(grpc.StatusCode.UNAVAILABLE, "no heartbeat from the router", None)
            return
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and task is not None and not task.cancelling():
                return  # aclose() from another task cancelled the call under us
            raise
        if response is grpc.aio.EOF:
            self._stream_ended(None, "the stream ended without a status", None)
            return
        self._take(response)
