"""What Emit and EmitBatch mean: authorize the service, validate everything, then accept.

A batch is validated as a whole before any of it is accepted: one bad emit
refuses the batch and delivers none of it.  Accepting goes through the
broker (``emit_many``), which numbers, keeps and delivers in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from eventrouter.server.broker.base import BrokerUnavailable, EmitItem
from eventrouter.server.core.router import EmitResult
from eventrouter.server.core.validation import (
    IdTooLong,
    InvalidArgument,
    PayloadTooLarge,
    RequestError,
)
from eventrouter.server.handlers.errors import Code, Refused, request_refused
from eventrouter.server.handlers.messages import (
    emit_batch_response,
    emit_labels,
    emit_response,
    outcome,
)
from eventrouter.server.handlers.state import CallInfo, HandlerState
from eventrouter.v1 import router_service_pb2 as pb


class Emits:
    """Emit and EmitBatch."""

    def __init__(self, state: HandlerState) -> None:
        self._state = state

    async def emit(self, request: pb.EmitRequest, call: CallInfo) -> pb.EmitResponse:
        service = self._authorize(call, (request,))
        if self._state.limits.emit_rate_per_service > 0:
            await self._take_rate(service, (request,))
        labels: list[tuple[str, str]] = []
        try:
            item = self._check(request, "", labels)
        except RequestError as e:
            raise self._refused((request,), e) from None
        results = await self._accept((request,), [item], labels)
        return emit_response(results[0])

    async def emit_batch(
        self, request: pb.EmitBatchRequest, call: CallInfo
    ) -> pb.EmitBatchResponse:
        emits = request.emits
        service = self._authorize(call, emits)
        if self._state.limits.emit_rate_per_service > 0:
            await self._take_rate(service, emits)
        try:
            # Validate everything first: a bad emit refuses the whole batch
            # before any of it is delivered.
            labels: list[tuple[str, str]] = []
            items = [self._check(emit, f"emits[{i}].", labels) for i, emit in enumerate(emits)]
        except RequestError as e:
            raise self._refused(emits, e) from None
        results = await self._accept(emits, items, labels)
        return emit_batch_response(results)

    def _authorize(self, call: CallInfo, requests: Sequence[pb.EmitRequest]) -> str:
        try:
            return self._state.service_identity(call)
        except Refused:
            self._count(requests, "unauthenticated")
            raise

    async def _take_rate(self, service: str, requests: Sequence[pb.EmitRequest]) -> None:
        """Charge the emits to the service's rate (counted across nodes with Redis)."""
        state = self._state
        try:
            allowed = await state.broker.allow_emits(service, len(requests))
        except BrokerUnavailable as e:
            # Never admitted unchecked: while Redis is away the emit fails as any emit would.
            self._count(requests, "unavailable")
            raise Refused(Code.UNAVAILABLE, f"broker unavailable: {e}") from None
        if not allowed:
            state.security_stats.limit_rejections["emit_rate"] += 1
            self._count(requests, "rate_limited")
            raise Refused(
                Code.RESOURCE_EXHAUSTED,
                f"emit rate limit of {state.limits.emit_rate_per_service:g} events/s exceeded",
            )

    async def _accept(
        self,
        requests: Sequence[pb.EmitRequest],
        items: list[EmitItem],
        labels: list[tuple[str, str]],
    ) -> list[EmitResult]:
        state = self._state
        try:
            results = await state.broker.emit_many(items)
        except BrokerUnavailable as e:
            self._count(requests, "unavailable")
            raise Refused(Code.UNAVAILABLE, f"broker unavailable: {e}") from None
        counts = state.emit_counts
        for (kind, recipient), result in zip(labels, results, strict=True):
            counts[kind, recipient, "duplicate" if result.duplicate else "ok"] += 1
        return results

    def _refused(self, requests: Iterable[pb.EmitRequest], error: RequestError) -> Refused:
        """Count a refused emit (or batch) and say why."""
        self._count(requests, outcome(error))
        limits = self._state.security_stats.limit_rejections
        if isinstance(error, IdTooLong):
            limits["id_length"] += 1
        elif isinstance(error, PayloadTooLarge):
            limits["event_bytes"] += 1
        return request_refused(error)

    def _count(self, requests: Iterable[pb.EmitRequest], result: str) -> None:
        counts = self._state.emit_counts
        for request in requests:
            counts[emit_labels(request, result)] += 1

    def _check(
        self, request: pb.EmitRequest, field: str, labels: list[tuple[str, str]]
    ) -> EmitItem:
        """Validate one emit (no state changes) into what the broker accepts.

        Appends its metric labels (as ``emit_labels``) to ``labels``.
        """
        router = self._state.router
        kind = request.WhichOneof("payload")
        recipient_filter = (
            request.recipient_filter if request.HasField("recipient_filter") else None
        )
        recipient = (
            _ALL if recipient_filter is None else recipient_filter.WhichOneof("filter") or _ALL
        )
        skip = request.skip_connection_id or None
        # Each read of a string or message field builds a new Python object: once each.
        user_id = request.user_id
        if kind == "update":
            update = request.update
            target, data = router.check_emit(user_id, update, recipient_filter, field)
            self._check_id(skip, f"{field}skip_connection_id")
            labels.append((_label("update", update.body.WhichOneof("event")), recipient))
            return EmitItem(user_id, update, target, skip, None, data)
        if kind == "ephemeral":
            ephemeral = request.ephemeral
            target, data = router.check_emit(user_id, ephemeral, recipient_filter, field)
            self._check_id(skip, f"{field}skip_connection_id")
            key = request.idempotency_key or None
            self._check_id(key, f"{field}idempotency_key")
            labels.append((_label("ephemeral", ephemeral.WhichOneof("event")), recipient))
            return EmitItem(user_id, ephemeral, target, skip, key, data)
        router.limits.ids.check(request.user_id, f"{field}user_id")
        raise InvalidArgument(f"{field}payload", "required: set update or ephemeral")

    def _check_id(self, value: str | None, field: str) -> None:
        """An optional id (skip, idempotency key) follows the same rules as every id."""
        if value is not None:
            self._state.router.limits.ids.check(value, field)


_ALL = "all_user_authenticated_connections"
_LABELS: dict[tuple[str, str | None], str] = {}


def _label(payload: str, event: str | None) -> str:
    """``emit_labels``' payload label ("update:new_message"), formatted once per kind."""
    label = _LABELS.get((payload, event))
    if label is None:
        label = _LABELS[payload, event] = f"{payload}:{event}"
    return label
