"""Validating an emit without changing any state (``EventRouter``'s ``check_*`` methods).

Each check returns the emit's recipient filter; ``check_emit`` also
returns the payload serialized, which accepting the emit reuses (an emit is
serialized once).
"""

from __future__ import annotations

from eventrouter.server.core.filters import ALL_CONNECTIONS, RecipientFilter
from eventrouter.server.core.nesting import check_depth
from eventrouter.server.core.results import RouterLimits
from eventrouter.server.core.validation import (
    RequestError,
    check_size,
    filter_from_proto,
    validate_ephemeral,
    validate_update,
)
from eventrouter.v1 import events_pb2, routing_pb2

FilterInput = RecipientFilter | routing_pb2.RecipientFilter | None


class EmitChecks:
    limits: RouterLimits

    def check_update(
        self,
        user_id: str,
        payload: events_pb2.UpdatePayload,
        recipient_filter: FilterInput = None,
        field: str = "",
    ) -> RecipientFilter:
        """Validate an update emit without changing any state; returns its filter."""
        return self.check_emit(user_id, payload, recipient_filter, field)[0]

    def check_ephemeral(
        self,
        user_id: str,
        payload: events_pb2.EphemeralPayload,
        recipient_filter: FilterInput = None,
        field: str = "",
    ) -> RecipientFilter:
        """Validate an ephemeral emit without changing any state; returns its filter."""
        return self.check_emit(user_id, payload, recipient_filter, field)[0]

    def check_emit(
        self,
        user_id: str,
        payload: events_pb2.UpdatePayload | events_pb2.EphemeralPayload,
        recipient_filter: FilterInput = None,
        field: str = "",
    ) -> tuple[RecipientFilter, bytes]:
        """``check_update`` or ``check_ephemeral``, also returning the payload serialized."""
        # Field paths are prefixed only when something is refused: this runs per emit.
        try:
            self.limits.ids.check(user_id, "user_id")
            data = payload.SerializeToString()
            if isinstance(payload, events_pb2.UpdatePayload):
                name = "update"
                validate_update(payload, name, data)
                # The id is the idempotency key (and, in a cluster, part of a
                # Redis key): the same rules as every other id.
                self.limits.ids.check(payload.id, "update.id")
            else:
                name = "ephemeral"
                validate_ephemeral(payload, name, data)
            check_size(len(data), self.limits.max_event_bytes, name)
            check_depth(payload, data, name)
            return self._filter(recipient_filter), data
        except RequestError as e:
            raise e.under(field) if field else e from None

    def _filter(self, recipient_filter: FilterInput, field: str = "") -> RecipientFilter:
        if recipient_filter is None:
            return ALL_CONNECTIONS
        if isinstance(recipient_filter, routing_pb2.RecipientFilter):
            return filter_from_proto(recipient_filter, f"{field}recipient_filter", self.limits.ids)
        return recipient_filter
