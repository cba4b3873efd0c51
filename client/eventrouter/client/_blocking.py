"""``BlockingEventRouterClient``: the same API for code without an event loop.

>>> with BlockingEventRouterClient("127.0.0.1:50051") as client:  # doctest: +SKIP
...     client.emit_update("u1", payload)
...     with client.subscribe(user_scope(), user_id="u1") as sub:
...         for event in sub:
...             ...

It shares every decision with the asyncio client (``_calls``: credentials,
errors, retries, request checks; ``_events``: event decoding, resume and
reconnect bookkeeping) and differs only in how it waits. It does not
auto-batch (use ``emit_batch``) and is safe to share between threads, as
grpc's channel is; a ``BlockingSubscription`` is for one consuming thread,
though ``close()`` may come from any thread. Unlike the asyncio subscription
it does not watch heartbeats (grpc's blocking stream has no read timeout);
channel keepalive still detects a dead transport.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from types import TracebackType
from typing import Any

import grpc

from eventrouter.client._calls import (
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT_S,
    ChannelOption,
    Credentials,
    Retrying,
    RetryPolicy,
    batch_request,
    call_metadata,
    channel_options,
    check_request,
    resolve_credentials,
    retry_safe,
    subscribe_callable,
)
from eventrouter.client._events import (
    EphemeralReceived,
    ReconnectPolicy,
    SubscriptionCore,
    SubscriptionEvent,
    SubscriptionState,
    UpdateReceived,
)
from eventrouter.client._methods import ClientMethods
from eventrouter.client._results import ConnectionInfo, EmitResult
from eventrouter.v1 import events_pb2
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc

__all__ = ["BlockingEventRouterClient", "BlockingSubscription"]


class BlockingSubscription(SubscriptionCore):
    """Iterator + context manager over one logical subscription (see ``Subscription``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # SubscriptionCore's arguments
        super().__init__(*args, **kwargs)
        self._closing = threading.Event()

    def open(self) -> BlockingSubscription:
        """Block until the first stream is open (``connection_id`` is known); idempotent."""
        while self._state.opens == 0:
            if self._closed:
                raise RuntimeError("subscription is closed")
            self._fill()
        return self

    def close(self) -> None:
        """End the stream (from any thread); iteration stops."""
        self._mark_closed()
        self._closing.set()

    def __enter__(self) -> BlockingSubscription:
        try:
            return self.open()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> BlockingSubscription:
        return self

    def __next__(self) -> SubscriptionEvent:
        while not self._buffer:
            if self._closed:
                raise StopIteration
            self._fill()
        if self._closed:
            raise StopIteration
        return self._buffer.popleft()

    def payloads(
        self,
    ) -> Generator[events_pb2.UpdatePayload | events_pb2.EphemeralPayload, None, None]:
        """Only the payloads, for callers that do not care about positions or refetches."""
        for event in self:
            if isinstance(event, UpdateReceived | EphemeralReceived):
                yield event.payload

    def _fill(self) -> None:
        call = self._call
        if call is None:
            if self._delay > 0:
                self._closing.wait(self._delay)
            if self._closed:
                return
            call = self._start_call()
        try:
            response = next(call)
        except StopIteration:
            self._stream_ended(None, "the stream ended without a status", None)
        except grpc.RpcError as e:
            self._stream_ended(e.code(), e.details() or "", e)
        else:
            self._take(response)


class BlockingEventRouterClient(ClientMethods[EmitResult, int, BlockingSubscription]):
    """Blocking client of ``eventrouter.v1.EventRouterService``; arguments as ``EventRouterClient``.

    ``interceptors`` are grpc's (blocking) client interceptors.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        user_id: str | None = None,
        token: str | Callable[[], str] | None = None,
        credentials: Credentials | None = None,
        channel_credentials: grpc.ChannelCredentials | None = None,
        options: Iterable[ChannelOption] = (),
        interceptors: Sequence[Any] = (),
        timeout: float | None = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        reconnect: ReconnectPolicy | None = None,
        channel: Any = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.reconnect = reconnect or ReconnectPolicy()
        self._credentials = resolve_credentials(
            user_id=user_id, token=token, credentials=credentials
        )
        self._owns_channel = channel is None
        if channel is None:
            opts = channel_options(options)
            if channel_credentials is None:
                channel = grpc.insecure_channel(target, options=opts)
            else:
                channel = grpc.secure_channel(target, channel_credentials, options=opts)
        self._raw_channel: Any = channel
        self._channel: Any = (
            grpc.intercept_channel(channel, *interceptors) if interceptors else channel
        )
        self._stub: Any = pb_grpc.EventRouterServiceStub(self._channel)
        self._subscriptions: list[BlockingSubscription] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        """End the subscriptions and close the channel (if ours)."""
        with self._lock:
            subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            subscription.close()
        if self._owns_channel:
            self._raw_channel.close()

    def __enter__(self) -> BlockingEventRouterClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _unary(self, method: Any, request: Any, safe: bool) -> Any:
        """One unary call under the retry policy; raises ``EventRouterError``."""
        retrying = Retrying(self.retry, safe)
        while True:
            try:
                return method(
                    request, timeout=self.timeout, metadata=call_metadata(self._credentials)
                )
            except grpc.RpcError as e:
                time.sleep(retrying.delay_after(e))

    def emit(self, request: pb.EmitRequest) -> EmitResult:
        """Send a ready ``EmitRequest``."""
        check_request(request)
        response: pb.EmitResponse = self._unary(self._stub.Emit, request, retry_safe(request))
        return EmitResult.from_response(response)

    def emit_batch(self, requests: Iterable[pb.EmitRequest]) -> list[EmitResult]:
        """Send many emits in one EmitBatch call; one invalid item rejects them all."""
        request, safe = batch_request(requests)
        if not request.emits:
            return []
        response: pb.EmitBatchResponse = self._unary(self._stub.EmitBatch, request, safe)
        return [EmitResult.from_response(r) for r in response.results]

    def get_connections(self, user_id: str) -> list[ConnectionInfo]:
        """The user's open connections, oldest first."""
        request = pb.GetConnectionsRequest(user_id=user_id)
        response: pb.GetConnectionsResponse = self._unary(self._stub.GetConnections, request, True)
        return [ConnectionInfo.from_message(c) for c in response.connections]

    def _disconnect(self, request: pb.DisconnectRequest) -> int:
        response: pb.DisconnectResponse = self._unary(self._stub.Disconnect, request, True)
        return response.disconnected

    def _subscription(
        self, state: SubscriptionState, credentials: Credentials | None
    ) -> BlockingSubscription:
        subscription = BlockingSubscription(subscribe_callable(self._channel), state, credentials)
        with self._lock:
            self._subscriptions = [s for s in self._subscriptions if not s.closed]
            self._subscriptions.append(subscription)
        return subscription
