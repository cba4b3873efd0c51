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
        """Apply a batch in order, letting stream writers drain when queues fill up.

        A batch is applied without yielding, so without this a batch carrying
        more events for a user than a queue holds would close even a subscriber
        that reads promptly as "too slow".  Yielding only when some queue is
        half full keeps small batches on the fast path.
        """
        router = self.router
        results = []
        for item in items:
            # The router directly, not through the async emit_* methods: one
            # coroutine less per emit, and nothing here awaits.
            if isinstance(item.payload, events_pb2.UpdatePayload):
                result = router.accept_update(
                    item.user_id, item.payload, item.recipient_filter, item.skip_connection_id
                )
            else:
                result = router.accept_ephemeral(
                    item.user_id,
                    item.payload,
                    item.recipient_filter,
                    item.skip_connection_id,
                    item.idempotency_key,
                )
            results.append(result)
            if router.crowded:
                await router.let_writers_drain()
        return results

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
