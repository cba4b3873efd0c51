"""Happy's ephemeral event builders, as snake_case twins (see ``_builders``).

Ephemeral events are never stored or replayed; Happy's builders stamp some of
them (``usage``, ``machine-status``, ``session-event``) with ``Date.now()``,
which ``now_ms`` pins here as it does for the updates' ``createdAt``.
"""

from __future__ import annotations

from collections.abc import Mapping

from eventrouter.client._json_values import (
    HappyWireError,
    expect_bool,
    expect_number,
    expect_str,
    join,
)
from eventrouter.client._records import DateLike, clock_ms, to_ms
from eventrouter.v1 import events_pb2

__all__ = [
    "build_machine_activity_ephemeral",
    "build_machine_status_ephemeral",
    "build_session_activity_ephemeral",
    "build_session_event_ephemeral",
    "build_usage_ephemeral",
]

EphemeralPayload = events_pb2.EphemeralPayload


def build_session_activity_ephemeral(
    session_id: str,
    active: bool,
    active_at: DateLike,
    thinking: bool | None = None,
    *,
    now_ms: int | None = None,
) -> EphemeralPayload:
    """``activity``; ``thinking`` is always sent, False when not given (Happy's ``|| false``).

    ``now_ms`` is accepted, and ignored, so every builder has one signature
    shape: Happy's activity builder reads no clock.
    """
    return EphemeralPayload(
        activity=events_pb2.SessionActivity(
            session_id=expect_str(session_id, "session_id"),
            active=expect_bool(active, "active"),
            active_at_ms=to_ms(active_at, "active_at"),
            thinking=False if thinking is None else expect_bool(thinking, "thinking"),
        )
    )


def build_machine_activity_ephemeral(
    machine_id: str, active: bool, active_at: DateLike, *, now_ms: int | None = None
) -> EphemeralPayload:
    """``machine-activity``: a machine became active or idle (``now_ms`` is ignored)."""
    return EphemeralPayload(
        machine_activity=events_pb2.MachineActivity(
            machine_id=expect_str(machine_id, "machine_id"),
            active=expect_bool(active, "active"),
            active_at_ms=to_ms(active_at, "active_at"),
        )
    )


def _usage_entries(numbers: object, field: str) -> list[events_pb2.UsageEntry]:
    if not isinstance(numbers, Mapping):
        raise HappyWireError(field, f"expected a mapping of numbers, got {type(numbers).__name__}")
    return [
        events_pb2.UsageEntry(
            key=expect_str(key, join(field, str(key))),
            value=expect_number(value, join(field, str(key))),
        )
        for key, value in numbers.items()
    ]


def build_usage_ephemeral(
    session_id: str,
    key: str,
    tokens: Mapping[str, float],
    cost: Mapping[str, float],
    *,
    now_ms: int | None = None,
) -> EphemeralPayload:
    """``usage``: token counts and cost in the mappings' order, stamped ``now_ms``."""
    return EphemeralPayload(
        usage=events_pb2.Usage(
            session_id=expect_str(session_id, "session_id"),
            key=expect_str(key, "key"),
            tokens=_usage_entries(tokens, "tokens"),
            cost=_usage_entries(cost, "cost"),
            timestamp_ms=clock_ms(now_ms),
        )
    )


def build_machine_status_ephemeral(
    machine_id: str, online: bool, *, now_ms: int | None = None
) -> EphemeralPayload:
    """``machine-status``: a machine's daemon went online or offline, stamped ``now_ms``."""
    return EphemeralPayload(
        machine_status=events_pb2.MachineStatus(
            machine_id=expect_str(machine_id, "machine_id"),
            online=expect_bool(online, "online"),
            timestamp_ms=clock_ms(now_ms),
        )
    )


def build_session_event_ephemeral(
    session_id: str, kind: str, title: str, body: str, *, now_ms: int | None = None
) -> EphemeralPayload:
    """``session-event``: a session needs the user, stamped ``now_ms``.

    ``kind`` is ``"done"``, ``"permission"`` or ``"question"`` in Happy today;
    any string is carried, so a kind Happy adds later needs no new release.
    Happy emits it ``all_interested_in_session(session_id)``; its route checks
    ``title`` (1-200) and ``body`` (1-500 UTF-16 units) before building it,
    which this builder leaves to the caller, as Happy's builder does.
    """
    return EphemeralPayload(
        session_event=events_pb2.SessionEvent(
            session_id=expect_str(session_id, "session_id"),
            kind=expect_str(kind, "kind"),
            title=expect_str(title, "title"),
            body=expect_str(body, "body"),
            timestamp_ms=clock_ms(now_ms),
        )
    )
