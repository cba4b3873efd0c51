"""``ClientMethods``: the argument handling the asyncio and the blocking client share.

Each public method builds its request (``_calls``) or subscription state
(``_events``) here, once, and hands it to the one primitive its client
implements in its own way of waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from eventrouter.client._calls import (
    Credentials,
    ephemeral_request,
    is_refreshable,
    resolve_credentials,
    update_request,
)
from eventrouter.client._events import ReconnectPolicy, SubscriptionState
from eventrouter.v1 import events_pb2, routing_pb2
from eventrouter.v1 import router_service_pb2 as pb

Emitted = TypeVar("Emitted")
Ended = TypeVar("Ended")
Sub = TypeVar("Sub")


class ClientMethods(Generic[Emitted, Ended, Sub]):
    """The argument handling both clients share.

    Each client provides ``emit``, ``_disconnect`` and ``_subscription``.
    ``Emitted`` is what ``emit`` returns (an ``EmitResult``, or for the
    asyncio client a coroutine of one), ``Ended`` what ``disconnect``
    returns (an ``int``, or a coroutine of one), ``Sub`` the subscription
    type.
    """

    reconnect: ReconnectPolicy
    _credentials: Credentials | None

    def emit(self, request: pb.EmitRequest) -> Emitted:
        raise NotImplementedError

    def _disconnect(self, request: pb.DisconnectRequest) -> Ended:
        raise NotImplementedError

    def _subscription(self, state: SubscriptionState, credentials: Credentials | None) -> Sub:
        raise NotImplementedError

    def emit_update(
        self,
        user_id: str,
        payload: events_pb2.UpdatePayload,
        recipient_filter: routing_pb2.RecipientFilter | None = None,
        skip_connection_id: str | None = None,
    ) -> Emitted:
        """Route a persistent update; ``payload.id`` makes a repeat harmless (and retries safe)."""
        return self.emit(update_request(user_id, payload, recipient_filter, skip_connection_id))

    def emit_ephemeral(
        self,
        user_id: str,
        payload: events_pb2.EphemeralPayload,
        recipient_filter: routing_pb2.RecipientFilter | None = None,
        skip_connection_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Emitted:
        """Route a transient event; retried on UNAVAILABLE only with an ``idempotency_key``."""
        return self.emit(
            ephemeral_request(
                user_id, payload, recipient_filter, skip_connection_id, idempotency_key
            )
        )

    def disconnect(
        self,
        user_id: str | None = None,
        *,
        connection_id: str | None = None,
        machine_id: str | None = None,
        session_id: str | None = None,
        token_id: str | None = None,
        reason: str = "",
        revoke: bool = False,
    ) -> Ended:
        """End streams (service only); returns how many ended on the node that answered.

        Select by ``user_id`` (with ``machine_id`` or ``session_id`` to narrow
        it to one machine or session), by ``connection_id`` or by
        ``token_id`` (the token's ``jti``); any other mix is a TypeError.
        Clients see ``reason`` in the stream's status: UNAVAILABLE (they may
        reconnect) or, with ``revoke``, PERMISSION_DENIED (and a revoked
        ``token_id`` is refused from then on). Retried on UNAVAILABLE: ending
        streams twice is harmless.
        """
        if machine_id is not None and session_id is not None:
            raise TypeError("pass machine_id= or session_id=, not both")
        if (machine_id is not None or session_id is not None) and user_id is None:
            raise TypeError("machine_id= and session_id= need the user_id they belong to")
        if len([s for s in (user_id, connection_id, token_id) if s is not None]) != 1:
            raise TypeError("pass exactly one of user_id, connection_id=, token_id=")
        request = pb.DisconnectRequest(reason=reason, revoke=revoke)
        if connection_id is not None:
            request.connection_id = connection_id
        elif token_id is not None:
            request.token_id = token_id
        elif user_id is not None:
            if machine_id is not None:
                request.machine.CopyFrom(pb.MachineSelector(user_id=user_id, machine_id=machine_id))
            elif session_id is not None:
                request.session.CopyFrom(pb.SessionSelector(user_id=user_id, session_id=session_id))
            else:
                request.user_id = user_id
        return self._disconnect(request)

    def subscribe(
        self,
        scope: routing_pb2.ConnectionScope,
        *,
        user_id: str | None = None,
        token: str | Callable[[], str] | None = None,
        credentials: Credentials | None = None,
        resume_from: pb.StreamPosition | None = None,
        heartbeat_ms: int = 0,
        reconnect: bool | ReconnectPolicy = True,
        include_control: bool = False,
    ) -> Sub:
        """Open a connection of ``scope``; iterate it inside ``with`` / ``async with``.

        Credentials (at most one of ``user_id=``, ``token=``,
        ``credentials=``) default to the client's. ``resume_from`` replays
        every update after that position first (or yields
        ``RefetchRequired``). ``heartbeat_ms`` asks for idle heartbeats (the
        asyncio subscription treats three silent intervals as a dead
        stream). ``reconnect`` is True (the client's ``ReconnectPolicy``),
        False, or a policy of its own. ``include_control`` also yields
        ``Connected`` (every stream opened), ``Reconnecting`` (every stream
        that ended, before the wait) and ``Heartbeat`` events.
        """
        creds = resolve_credentials(
            user_id=user_id, token=token, credentials=credentials, default=self._credentials
        )
        if isinstance(reconnect, ReconnectPolicy):
            policy = reconnect
        else:
            policy = self.reconnect if reconnect else ReconnectPolicy(enabled=False)
        state = SubscriptionState(
            scope,
            resume_from=resume_from,
            heartbeat_ms=heartbeat_ms,
            policy=policy,
            include_control=include_control,
            refreshable_credentials=is_refreshable(creds),
        )
        return self._subscription(state, creds)
