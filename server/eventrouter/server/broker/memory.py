"""The in-memory broker: one node, history in this process, nothing to run.

It receives emits the service already validated, hence ``accept_*``.

Everything happens synchronously inside the ``EventRouter``, so an emit is
numbered, kept and queued to every recipient before its reply is sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from eventrouter.server.broker.base import Broker, ConnectionRecord, EmitItem, scope_label
from eventrouter.server.core.connections import ClientConnection
from eventrouter.server.core.filters import RecipientFilter
from eventrouter.server.core.router import EmitResult, OpenResult
from eventrouter.v1 import events_pb2


def _run_end(items: Sequence[EmitItem], start: int) -> int:
    """End of the run of updates at ``start`` sharing its user, filter and skip."""
    first = items[start]
    stop = start + 1
    # The user first: in a batch to many users the run ends there, cheaply.
    if stop == len(items) or items[stop].user_id != first.user_id:
        return stop
    if not isinstance(first.payload, events_pb2.UpdatePayload):
        return stop
    while (
        stop < len(items)
        and items[stop].user_id == first.user_id
        and isinstance(items[stop].payload, events_pb2.UpdatePayload)
        and items[stop].skip_connection_id == first.skip_connection_id
        and items[stop].recipient_filter == first.recipient_filter
    ):
        stop += 1
    return stop


class MemoryBroker(Broker):
    async def emit_update(
        self,
        user_id: str,
        payload: events_pb2.UpdatePayload,
        recipient_filter: RecipientFilter,
        skip_connection_id: str | None,
    ) -> EmitResult:
        return self.router.accept_update(user_id, payload, recipient_filter, skip_connection_id)

    async def emit_ephemeral(
        self,
        user_id: str,
        payload: events_pb2.EphemeralPayload,
        recipient_filter: RecipientFilter,
        skip_connection_id: str | None,
        idempotency_key: str | None,
    ) -> EmitResult:
        return self.router.accept_ephemeral(
            user_id, payload, recipient_filter, skip_connection_id, idempotency_key
        )

    async def emit_many(self, items: Sequence[EmitItem]) -> list[EmitResult]:
        """Apply a batch in order, yielding once whenever some queue filled up.

        A batch is applied without yielding otherwise, so a batch carrying
        more events for a user than a queue holds would leave that queue's
        writer no turn to take them.  A yield (never a wait: the batch may
        carry other users' events) lets every ready writer take what is
        queued; a queue's overdraft grace covers a write still in flight.
        Yielding only when a push filled some queue to half keeps small
        batches on the fast path.  Consecutive updates to one user with one
        filter and skip go to the router as a run (``accept_update_run``),
        queued to each recipient in one step.
        """
        router = self.router
        results: list[EmitResult] = []
        start, end = 0, len(items)
        while start < end:
            stop = _run_end(items, start)
            if stop - start >= 2:
                first = items[start]
                done = router.accept_update_run(
                    first.user_id,
                    [
                        item.payload
                        for item in items[start:stop]
                        if isinstance(item.payload, events_pb2.UpdatePayload)  # all are (_run_end)
                    ],
                    first.recipient_filter,
                    first.skip_connection_id,
                )
                if done:
                    results += done
                    start += len(done)
                    continue
            # A single emit, or a run that a filling queue sends one by one,
            # with a turn for the writers whenever a queue fills to half.
            for item in items[start:stop]:
                results.append(self._accept_one(item))
                if router.turn_wanted:
                    await router.take_turn()
            start = stop
        return results

    def _accept_one(self, item: EmitItem) -> EmitResult:
        # The router directly, not through the async emit_* methods: no
        # coroutine per emit, and nothing here awaits.
        if isinstance(item.payload, events_pb2.UpdatePayload):
            return self.router.accept_update(
                item.user_id,
                item.payload,
                item.recipient_filter,
                item.skip_connection_id,
                item.data,
            )
        return self.router.accept_ephemeral(
            item.user_id,
            item.payload,
            item.recipient_filter,
            item.skip_connection_id,
            item.idempotency_key,
        )

    async def open(
        self, connection: ClientConnection, resume_from: tuple[int, str] | None
    ) -> OpenResult:
        return self.router.add_connection(connection.user_id, connection, resume_from)

    def closed(self, connection: ClientConnection) -> None:
        return None

    async def connections(self, user_id: str) -> list[ConnectionRecord]:
        return [
            ConnectionRecord(
                c.connection_id, c.user_id, scope_label(c), c.opened_at_ms, self.router.node_id
            )
            for c in self.router.get_connections(user_id)
        ]
