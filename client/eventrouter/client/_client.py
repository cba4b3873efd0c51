"""``EventRouterClient``: the asyncio client services use to emit, and apps to subscribe.

>>> async with EventRouterClient("127.0.0.1:50051") as client:  # doctest: +SKIP
...     result = await client.emit_update("u1", payload, all_interested_in_session("s1"))
...     result.position

Auto-batching. A unary call costs the router about the same CPU whatever it
carries, so the client keeps at most one Emit/EmitBatch call in flight and
queues the emits that arrive meanwhile; when the call returns, everything
queued (up to ``max_batch_size`` emits / ``max_batch_bytes``) leaves as one
EmitBatch. There is no timer: a lone emit goes out at once. Each caller still
awaits its own ``EmitResult`` or error, and emits are applied in the order
they were called. Because the router rejects a whole batch when one item is
invalid, items are checked client-side first, and a batch the router still
rejects (INVALID_ARGUMENT, or RESOURCE_EXHAUSTED for an oversized item) is
sent again one emit at a time, so that only the culprit's caller gets the
error, naming its field.

Errors. Every RPC failure is raised as an ``EventRouterError`` subclass
(``code``, ``details``, ``field``; the grpc error is its ``__cause__``), the
same classes the blocking client raises, so callers need not know which
grpc flavour sits underneath. Retries follow ``RetryPolicy``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from types import TracebackType
from typing import Any

import grpc

from eventrouter.client._calls import (
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT_S,
    ChannelOption,
    Credentials,
    EventRouterError,
    Retrying,
    RetryPolicy,
    batch_request,
    call_metadata,
    channel_options,
    check_request,
    error_from_rpc,
    resolve_credentials,
    retry_safe,
    subscribe_callable,
)
from eventrouter.client._events import ReconnectPolicy, SubscriptionState
from eventrouter.client._methods import ClientMethods
from eventrouter.client._results import ConnectionInfo, EmitResult
from eventrouter.client._subscription import Subscription
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc

__all__ = ["EventRouterClient"]

MiB = 1024 * 1024


def _blames_one_item(error: grpc.RpcError) -> bool:
    """Whether the router rejected a whole batch for one item (re-send them one by one).

    INVALID_ARGUMENT names one bad item; RESOURCE_EXHAUSTED does too when an
    item is over the size limit (``emits[3].update: event is ... bytes``), but
    not when the caller is over its emit rate, where splitting would only
    make more calls.
    """
    code = error.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return True
    return code == grpc.StatusCode.RESOURCE_EXHAUSTED and (error.details() or "").startswith(
        "emits["
    )


class _Emit:
    """One queued ``emit``: the request and the future its caller awaits."""

    __slots__ = ("future", "request", "safe", "size")

    def __init__(self, request: pb.EmitRequest, future: asyncio.Future[pb.EmitResponse]) -> None:
        self.request = request
        self.future = future
        self.safe = retry_safe(request)
        self.size = request.ByteSize()


class _Batch:
    """One queued ``emit_batch``: sent as its own call, all-or-nothing as the router defines."""

    __slots__ = ("future", "request", "safe")

    def __init__(
        self,
        request: pb.EmitBatchRequest,
        safe: bool,
        future: asyncio.Future[list[pb.EmitResponse]],
    ) -> None:
        self.request = request
        self.safe = safe
        self.future = future


def _settle(
    future: asyncio.Future[Any], result: Any = None, error: BaseException | None = None
) -> None:
    if future.done():
        return  # the caller was cancelled and no longer waits
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _wrap(error: grpc.RpcError) -> EventRouterError:
    wrapped = error_from_rpc(error)
    wrapped.__cause__ = error
    return wrapped


class EventRouterClient(
    ClientMethods[Coroutine[Any, Any, EmitResult], Coroutine[Any, Any, int], Subscription]
):
    """Asyncio client of ``eventrouter.v1.EventRouterService``.

    ``target`` is ``HOST:PORT``. ``user_id=`` / ``token=`` / ``credentials=``
    (at most one) supply the call metadata of every call; ``subscribe`` can
    override it per subscription. ``channel_credentials`` switches to TLS.
    ``timeout`` is the deadline of each unary attempt. Pass ``channel=`` to
    use a channel you manage (it is not closed by ``aclose``); otherwise one
    is opened on first use with ``options`` (merged over
    ``DEFAULT_CHANNEL_OPTIONS``) and ``interceptors``.
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
        max_batch_size: int = 512,
        max_batch_bytes: int = 4 * MiB,
        channel: Any = None,
    ) -> None:
        if max_batch_size < 1 or max_batch_bytes < 1:
            raise ValueError("max_batch_size and max_batch_bytes must be positive")
        self.target = target
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.reconnect = reconnect or ReconnectPolicy()
        self.max_batch_size = max_batch_size
        self.max_batch_bytes = max_batch_bytes
        self._credentials = resolve_credentials(
            user_id=user_id, token=token, credentials=credentials
        )
        self._channel_credentials = channel_credentials
        self._options = channel_options(options)
        self._interceptors = list(interceptors)
        self._channel: Any = channel
        self._owns_channel = channel is None
        self._stub: Any = None
        self._closed = False
        self._queue: deque[_Emit | _Batch] = deque()
        self._sender: asyncio.Task[None] | None = None
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()

    # -- lifecycle -----------------------------------------------------------

    def _get_stub(self) -> Any:
        if self._closed:
            raise RuntimeError("EventRouterClient is closed")
        if self._stub is None:
            if self._channel is None:
                interceptors = self._interceptors or None
                if self._channel_credentials is None:
                    self._channel = grpc.aio.insecure_channel(
                        self.target, options=self._options, interceptors=interceptors
                    )
                else:
                    self._channel = grpc.aio.secure_channel(
                        self.target,
                        self._channel_credentials,
                        options=self._options,
                        interceptors=interceptors,
                    )
            self._stub = pb_grpc.EventRouterServiceStub(self._channel)
        return self._stub

    async def aclose(self) -> None:
        """Send what is queued, end the subscriptions, close the channel (if ours)."""
        if self._closed:
            return
        sender = self._sender
        if sender is not None:
            await asyncio.shield(sender)
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        if self._owns_channel and self._channel is not None:
            await self._channel.close()
        self._channel = self._stub = None

    async def __aenter__(self) -> EventRouterClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- emitting ------------------------------------------------------------

    async def emit(self, request: pb.EmitRequest) -> EmitResult:
        """Send a ready ``EmitRequest`` (auto-batched with concurrent emits)."""
        check_request(request)
        future: asyncio.Future[pb.EmitResponse] = asyncio.get_running_loop().create_future()
        self._enqueue(_Emit(request, future))
        return EmitResult.from_response(await future)

    async def emit_batch(self, requests: Iterable[pb.EmitRequest]) -> list[EmitResult]:
        """Send many emits in one EmitBatch call; one invalid item rejects them all.

        Results come back in request order. The batch keeps its place in the
        order of this client's emits and is never merged with or split into
        other calls.
        """
        request, safe = batch_request(requests)
        if not request.emits:
            return []
        future: asyncio.Future[list[pb.EmitResponse]] = asyncio.get_running_loop().create_future()
        self._enqueue(_Batch(request, safe, future))
        return [EmitResult.from_response(response) for response in await future]

    def _enqueue(self, item: _Emit | _Batch) -> None:
        self._get_stub()  # raises when closed
        self._queue.append(item)
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_queued())

    async def _send_queued(self) -> None:
        queue = self._queue
        try:
            while queue:
                head = queue[0]
                if isinstance(head, _Batch):
                    queue.popleft()
                    await self._send_batch(head)
                else:
                    await self._send_emits(self._take())
        finally:
            self._sender = None

    def _take(self) -> list[_Emit]:
        """The queued emits for the next call, in order, within the batch limits."""
        queue = self._queue
        batch: list[_Emit] = []
        size = 0
        while queue and len(batch) < self.max_batch_size:
            item = queue[0]
            if not isinstance(item, _Emit):
                break
            if item.future.done():  # its caller was cancelled
                queue.popleft()
                continue
            if batch and size + item.size > self.max_batch_bytes:
                break
            queue.popleft()
            batch.append(item)
            size += item.size
        return batch

    async def _send_emits(self, batch: list[_Emit]) -> None:
        attempt = 0
        while True:
            batch = [item for item in batch if not item.future.done()]
            if not batch:
                return
            attempt += 1
            try:
                results = await self._call_emits([item.request for item in batch])
            except grpc.RpcError as e:
                if len(batch) > 1 and _blames_one_item(e):
                    for item in batch:
                        await self._send_emits([item])
                    return
                # A batch that may not be repeated whole is retried without
                # the items that may not be repeated; those fail now.
                delay = self.retry.next_delay(e.code(), attempt, True)
                retry: list[_Emit] = []
                for item in batch:
                    if delay is not None and item.safe:
                        retry.append(item)
                    else:
                        _settle(item.future, error=_wrap(e))
                if delay is None or not retry:
                    return
                batch = retry
                await asyncio.sleep(delay)
                continue
            except Exception as e:  # a bug or a broken response: fail the callers, not the queue
                for item in batch:
                    _settle(item.future, error=e)
                return
            for item, result in zip(batch, results, strict=True):
                _settle(item.future, result)
            return

    async def _call_emits(self, requests: list[pb.EmitRequest]) -> list[pb.EmitResponse]:
        stub = self._get_stub()
        metadata = call_metadata(self._credentials)
        if len(requests) == 1:
            response: pb.EmitResponse = await stub.Emit(
                requests[0], timeout=self.timeout, metadata=metadata
            )
            return [response]
        batch: pb.EmitBatchResponse = await stub.EmitBatch(
            pb.EmitBatchRequest(emits=requests), timeout=self.timeout, metadata=metadata
        )
        if len(batch.results) != len(requests):
            raise EventRouterError(
                grpc.StatusCode.INTERNAL,
                f"router answered {len(batch.results)} results for {len(requests)} emits",
            )
        return list(batch.results)

    async def _send_batch(self, batch: _Batch) -> None:
        if batch.future.done():
            return
        try:
            response: pb.EmitBatchResponse = await self._unary(
                self._get_stub().EmitBatch, batch.request, batch.safe
            )
        except Exception as e:
            _settle(batch.future, error=e)
        else:
            _settle(batch.future, list(response.results))

    async def _unary(self, method: Any, request: Any, safe: bool) -> Any:
        """One unary call under the retry policy; raises ``EventRouterError``."""
        retrying = Retrying(self.retry, safe)
        while True:
            try:
                return await method(
                    request, timeout=self.timeout, metadata=call_metadata(self._credentials)
                )
            except grpc.RpcError as e:
                await asyncio.sleep(retrying.delay_after(e))

    # -- reading -------------------------------------------------------------

    async def get_connections(self, user_id: str) -> list[ConnectionInfo]:
        """The user's open connections, oldest first (retried on UNAVAILABLE: it is a read)."""
        request = pb.GetConnectionsRequest(user_id=user_id)
        response: pb.GetConnectionsResponse = await self._unary(
            self._get_stub().GetConnections, request, True
        )
        return [ConnectionInfo.from_message(c) for c in response.connections]

    async def _disconnect(self, request: pb.DisconnectRequest) -> int:
        response: pb.DisconnectResponse = await self._unary(
            self._get_stub().Disconnect, request, True
        )
        return response.disconnected

    def _subscription(
        self, state: SubscriptionState, credentials: Credentials | None
    ) -> Subscription:
        self._get_stub()  # opens the channel (raises when closed)
        subscription = Subscription(subscribe_callable(self._channel), state, credentials)
        self._subscriptions.add(subscription)
        return subscription
