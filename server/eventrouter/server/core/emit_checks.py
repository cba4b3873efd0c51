"""Validating an emit without changing any state (``EventRouter``'s ``check_*`` methods).

Each check returns the emit's recipient filter; the ``*_data`` forms also
return the payload serialized, which accepting the emit reuses (an emit is
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
        return self.check_update_data(user_id, payload, recipient_filter, field)[0]

    def check_update_data(
        self,
        user_id: str,
        payload: events_pb2.UpdatePayload,
        recipient_filter: FilterInput = None,
        field: str = "",
    ) -> tuple[RecipientFilter, bytes]:
        """``check_update``, also returning the payload serialized (accepting reuses it)."""
        # Field paths are prefixed only when something is refused: this runs per emit.
        try:
            self.limits.ids.check(user_id, "user_id")
            data = payload.SerializeToString()
            validate_update(payload, "update", data)
            # The id is the idempotency key (and, in a cluster, part of a Redis
            # key): the same rules as every other id.
            self.limits.ids.check(payload.id, "update.id")
            return self._checked(payload, data, recipient_filter, "update")
        except RequestError as e:
            raise e.under(field) if field else e from None

    def check_ephemeral(
        self,
        user_id: str,
        payload: events_pb2.EphemeralPayload,
        recipient_filter: FilterInput = None,
        field: str = "",
    ) -> RecipientFilter:
        """Validate an ephemeral emit without changing any state; returns its filter."""
        return self.check_ephemeral_data(user_id, payload, recipient_filter, field)[0]

    def check_ephemeral_data(
        self,
        user_id: str,
        payload: events_pb2.EphemeralPayload,
        recipient_filter: FilterInput = None,
        field: str = "",
    ) -> tuple[RecipientFilter, bytes]:
        """``check_ephemeral``, also returning the payload serialized."""
        try:
            self.limits.ids.check(user_id, "user_id")
            data = payload.SerializeToString()
            validate_ephemeral(payload, "ephemeral", data)
            return self._checked(payload, data, recipient_filter, "ephemeral")
        except RequestError as e:
            raise e.under(field) if field else e from None

    def _checked(
        self,
        payload: events_pb2.UpdatePayload | events_pb2.EphemeralPayload,
        data: bytes,
        recipient_filter: FilterInput,
        field: str,
    ) -> tuple[RecipientFilter, bytes]:
        check_size(len(data), self.limits.max_event_bytes, field)
        check_depth(payload, data, field)
        return self._filter(recipient_filter), data

    def _filter(self, recipient_filter: FilterInput, field: str = "") -> RecipientFilter:
        if recipient_filter is None:
            return ALL_CONNECTIONS
        if isinstance(recipient_filter, routing_pb2.RecipientFilter):
            return filter_from_proto(recipient_filter, f"{field}recipient_filter", self.limits.ids)
        return recipient_filter
