"""Happy's event builders, as snake_case twins returning protobuf payloads.

Each ``build_*`` takes the same positional arguments, in the same order, as
Happy's ``build*`` function of the same name, and builds the payload whose
``to_happy_json`` is exactly what Happy's builder puts on the wire. Record
arguments are the dataclasses of ``_records`` or Mappings (snake_case or
Happy's camelCase keys; see ``_records``). Optional arguments that Happy
leaves ``undefined`` default to ``ABSENT``; ``None`` means ``null``.

Every builder takes keyword-only ``now_ms``: the clock reading Happy takes
with ``Date.now()`` (``createdAt`` of updates, ``timestamp`` of usage,
machine-status and session-event); by default the current time. Bad input
raises ``HappyWireError`` naming the argument (``session.last_active_at``).

The ephemeral builders live in ``_ephemeral_builders`` and are re-exported
here, so this module names all nineteen.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from eventrouter.client._ephemeral_builders import (
    build_machine_activity_ephemeral,
    build_machine_status_ephemeral,
    build_session_activity_ephemeral,
    build_session_event_ephemeral,
    build_usage_ephemeral,
)
from eventrouter.client._json_values import (
    HappyWireError,
    expect_bool,
    expect_int64,
    expect_str,
    join,
    json_to_value,
)
from eventrouter.client._records import (
    ABSENT,
    Absent,
    AccountProfile,
    ArtifactRecord,
    DateLike,
    FeedItem,
    ImageRef,
    KvChange,
    MachineRecord,
    MessageRecord,
    Obj,
    RelationshipData,
    SessionRecord,
    Versioned,
    as_record,
    clock_ms,
    github_profile_message,
    nullable_string,
    nullable_versioned,
    opt_bytes,
    opt_str,
    str_list,
    to_bytes,
    to_ms,
    to_status,
    versioned_string,
)
from eventrouter.v1 import events_pb2

__all__ = [
    "build_delete_artifact_update",
    "build_delete_machine_update",
    "build_delete_session_update",
    "build_kv_batch_update_update",
    "build_machine_activity_ephemeral",
    "build_machine_status_ephemeral",
    "build_new_artifact_update",
    "build_new_feed_post_update",
    "build_new_machine_update",
    "build_new_message_update",
    "build_new_session_update",
    "build_relationship_updated_event",
    "build_session_activity_ephemeral",
    "build_session_event_ephemeral",
    "build_update_account_update",
    "build_update_artifact_update",
    "build_update_machine_update",
    "build_update_session_update",
    "build_usage_ephemeral",
    "public_url_from_env",
]

UpdatePayload = events_pb2.UpdatePayload
UpdateEvent = events_pb2.UpdateEvent


def public_url_from_env(path: str) -> str:
    """Happy's ``getPublicUrl``: ``$S3_PUBLIC_URL/<path>``, read at call time.

    The default ``public_url`` of ``build_update_account_update``. Without
    ``S3_PUBLIC_URL`` it raises rather than send clients a made-up URL.
    """
    base = os.environ.get("S3_PUBLIC_URL")
    if not base:
        raise HappyWireError(
            "profile.avatar.path",
            "S3_PUBLIC_URL is not set; pass public_url= to build_update_account_update",
        )
    return f"{base}/{path}"


# ---------------------------------------------------------------------------
# Checked conversion of arguments
# ---------------------------------------------------------------------------


def _update(
    update_id: str, update_seq: int, body: UpdateEvent, now_ms: int | None
) -> UpdatePayload:
    return UpdatePayload(
        id=expect_str(update_id, "update_id"),
        seq=expect_int64(update_seq, "update_seq"),
        body=body,
        created_at_ms=clock_ms(now_ms),
    )


# ---------------------------------------------------------------------------
# Sessions and messages
# ---------------------------------------------------------------------------


def build_new_session_update(
    session: SessionRecord | Obj, update_seq: int, update_id: str, *, now_ms: int | None = None
) -> UpdatePayload:
    """``new-session``: a session was created."""
    s = as_record(session, SessionRecord, "session")
    event = events_pb2.NewSession(
        session_id=expect_str(s.id, "session.id"),
        seq=expect_int64(s.seq, "session.seq"),
        metadata=expect_str(s.metadata, "session.metadata"),
        metadata_version=expect_int64(s.metadata_version, "session.metadata_version"),
        agent_state=opt_str(s.agent_state, "session.agent_state"),
        agent_state_version=expect_int64(s.agent_state_version, "session.agent_state_version"),
        data_encryption_key=opt_bytes(s.data_encryption_key, "session.data_encryption_key"),
        active=expect_bool(s.active, "session.active"),
        active_at_ms=to_ms(s.last_active_at, "session.last_active_at"),
        created_at_ms=to_ms(s.created_at, "session.created_at"),
        updated_at_ms=to_ms(s.updated_at, "session.updated_at"),
    )
    return _update(update_id, update_seq, UpdateEvent(new_session=event), now_ms)


def build_new_message_update(
    message: MessageRecord | Obj,
    session_id: str,
    update_seq: int,
    update_id: str,
    *,
    now_ms: int | None = None,
) -> UpdatePayload:
    """``new-message``: a message was appended to a session."""
    m = as_record(message, MessageRecord, "message")
    event = events_pb2.NewMessage(
        session_id=expect_str(session_id, "session_id"),
        message=events_pb2.SessionMessage(
            id=expect_str(m.id, "message.id"),
            seq=expect_int64(m.seq, "message.seq"),
            content=json_to_value(m.content, "message.content"),
            local_id=opt_str(m.local_id, "message.local_id"),
            created_at_ms=to_ms(m.created_at, "message.created_at"),
            updated_at_ms=to_ms(m.updated_at, "message.updated_at"),
        ),
    )
    return _update(update_id, update_seq, UpdateEvent(new_message=event), now_ms)


def build_update_session_update(
    session_id: str,
    update_seq: int,
    update_id: str,
    metadata: Versioned | Obj | Absent | None = ABSENT,
    agent_state: Versioned | Obj | Absent | None = ABSENT,
    *,
    now_ms: int | None = None,
) -> UpdatePayload:
    """``update-session``: only the values given are sent (``ABSENT`` = unchanged)."""
    event = events_pb2.UpdateSession(
        session_id=expect_str(session_id, "session_id"),
        metadata=nullable_versioned(metadata, "metadata"),
        agent_state=nullable_versioned(agent_state, "agent_state"),
    )
    return _update(update_id, update_seq, UpdateEvent(update_session=event), now_ms)


def build_delete_session_update(
    session_id: str, update_seq: int, update_id: str, *, now_ms: int | None = None
) -> UpdatePayload:
    """``delete-session``: a session was deleted."""
    event = events_pb2.DeleteSession(session_id=expect_str(session_id, "session_id"))
    return _update(update_id, update_seq, UpdateEvent(delete_session=event), now_ms)


# ---------------------------------------------------------------------------
# Account
# ---------------------------------------------------------------------------


def _avatar(value: object, public_url: Callable[[str], str]) -> events_pb2.AvatarImage:
    a = as_record(value, ImageRef, "profile.avatar")
    path = expect_str(a.path, "profile.avatar.path")
    return events_pb2.AvatarImage(
        width=expect_int64(a.width, "profile.avatar.width"),
        height=expect_int64(a.height, "profile.avatar.height"),
        thumbhash=expect_str(a.thumbhash, "profile.avatar.thumbhash"),
        path=path,
        url=expect_str(public_url(path), "profile.avatar.url"),
    )


def build_update_account_update(
    user_id: str,
    profile: AccountProfile | Obj,
    update_seq: int,
    update_id: str,
    *,
    public_url: Callable[[str], str] = public_url_from_env,
    now_ms: int | None = None,
) -> UpdatePayload:
    """``update-account``: the profile fields given (not ``ABSENT``) are sent.

    ``public_url`` turns the avatar's storage path into the ``url`` Happy adds
    (Happy's ``getPublicUrl``); the default reads ``S3_PUBLIC_URL`` as Happy
    does. A ``None`` avatar is left out, as Happy's builder does.
    """
    p = as_record(profile, AccountProfile, "profile")
    event = events_pb2.UpdateAccount(
        user_id=expect_str(user_id, "user_id"),
        first_name=nullable_string(p.first_name, "profile.first_name"),
        last_name=nullable_string(p.last_name, "profile.last_name"),
        username=nullable_string(p.username, "profile.username"),
        settings=nullable_versioned(p.settings, "profile.settings"),
    )
    if p.avatar is not ABSENT and p.avatar is not None:
        event.avatar.CopyFrom(_avatar(p.avatar, public_url))
    if p.github is not ABSENT:
        event.github.SetInParent()
        if p.github is not None:
            event.github.profile.CopyFrom(github_profile_message(p.github, "profile.github"))
    if p.connected_services is not ABSENT:
        services = str_list(p.connected_services, "profile.connected_services")
        event.connected_services.SetInParent()
        event.connected_services.services.extend(services)
    return _update(update_id, update_seq, UpdateEvent(update_account=event), now_ms)


# ---------------------------------------------------------------------------
# Machines
# ---------------------------------------------------------------------------


def build_new_machine_update(
    machine: MachineRecord | Obj, update_seq: int, update_id: str, *, now_ms: int | None = None
) -> UpdatePayload:
    """``new-machine``: a machine was registered."""
    m = as_record(machine, MachineRecord, "machine")
    event = events_pb2.NewMachine(
        machine_id=expect_str(m.id, "machine.id"),
        seq=expect_int64(m.seq, "machine.seq"),
        metadata=expect_str(m.metadata, "machine.metadata"),
        metadata_version=expect_int64(m.metadata_version, "machine.metadata_version"),
        daemon_state=opt_str(m.daemon_state, "machine.daemon_state"),
        daemon_state_version=expect_int64(m.daemon_state_version, "machine.daemon_state_version"),
        data_encryption_key=opt_bytes(m.data_encryption_key, "machine.data_encryption_key"),
        active=expect_bool(m.active, "machine.active"),
        active_at_ms=to_ms(m.last_active_at, "machine.last_active_at"),
        created_at_ms=to_ms(m.created_at, "machine.created_at"),
        updated_at_ms=to_ms(m.updated_at, "machine.updated_at"),
    )
    return _update(update_id, update_seq, UpdateEvent(new_machine=event), now_ms)


def build_update_machine_update(
    machine_id: str,
    update_seq: int,
    update_id: str,
    metadata: Versioned | Obj | Absent = ABSENT,
    daemon_state: Versioned | Obj | Absent = ABSENT,
    *,
    active_at: DateLike | Absent = ABSENT,
    now_ms: int | None = None,
) -> UpdatePayload:
    """``update-machine``; ``active_at`` (keyword-only) adds the later ``activeAt`` key."""
    event = events_pb2.UpdateMachine(
        machine_id=expect_str(machine_id, "machine_id"),
        metadata=versioned_string(metadata, "metadata"),
        daemon_state=versioned_string(daemon_state, "daemon_state"),
    )
    if active_at is not ABSENT:
        event.active_at_ms = to_ms(active_at, "active_at")
    return _update(update_id, update_seq, UpdateEvent(update_machine=event), now_ms)


def build_delete_machine_update(
    machine_id: str, update_seq: int, update_id: str, *, now_ms: int | None = None
) -> UpdatePayload:
    """``delete-machine``: a machine was deleted (Happy emits it ``user_scoped_only``)."""
    event = events_pb2.DeleteMachine(machine_id=expect_str(machine_id, "machine_id"))
    return _update(update_id, update_seq, UpdateEvent(delete_machine=event), now_ms)


# ---------------------------------------------------------------------------
# Artifacts
# ---------------------------------------------------------------------------


def build_new_artifact_update(
    artifact: ArtifactRecord | Obj, update_seq: int, update_id: str, *, now_ms: int | None = None
) -> UpdatePayload:
    """``new-artifact``: an artifact was created."""
    a = as_record(artifact, ArtifactRecord, "artifact")
    event = events_pb2.NewArtifact(
        artifact_id=expect_str(a.id, "artifact.id"),
        seq=expect_int64(a.seq, "artifact.seq"),
        header=to_bytes(a.header, "artifact.header"),
        header_version=expect_int64(a.header_version, "artifact.header_version"),
        body=to_bytes(a.body, "artifact.body"),
        body_version=expect_int64(a.body_version, "artifact.body_version"),
        data_encryption_key=to_bytes(a.data_encryption_key, "artifact.data_encryption_key"),
        created_at_ms=to_ms(a.created_at, "artifact.created_at"),
        updated_at_ms=to_ms(a.updated_at, "artifact.updated_at"),
    )
    return _update(update_id, update_seq, UpdateEvent(new_artifact=event), now_ms)


def build_update_artifact_update(
    artifact_id: str,
    update_seq: int,
    update_id: str,
    header: Versioned | Obj | Absent = ABSENT,
    body: Versioned | Obj | Absent = ABSENT,
    *,
    now_ms: int | None = None,
) -> UpdatePayload:
    """``update-artifact``: the header and/or body given (``ABSENT`` = unchanged)."""
    event = events_pb2.UpdateArtifact(
        artifact_id=expect_str(artifact_id, "artifact_id"),
        header=versioned_string(header, "header"),
        body=versioned_string(body, "body"),
    )
    return _update(update_id, update_seq, UpdateEvent(update_artifact=event), now_ms)


def build_delete_artifact_update(
    artifact_id: str, update_seq: int, update_id: str, *, now_ms: int | None = None
) -> UpdatePayload:
    """``delete-artifact``: an artifact was deleted."""
    event = events_pb2.DeleteArtifact(artifact_id=expect_str(artifact_id, "artifact_id"))
    return _update(update_id, update_seq, UpdateEvent(delete_artifact=event), now_ms)


# ---------------------------------------------------------------------------
# Social, feed and key-value store
# ---------------------------------------------------------------------------


def build_relationship_updated_event(
    data: RelationshipData | Obj, update_seq: int, update_id: str, *, now_ms: int | None = None
) -> UpdatePayload:
    """``relationship-updated``: the relationship with another user changed."""
    r = as_record(data, RelationshipData, "data")
    event = events_pb2.RelationshipUpdated(
        uid=expect_str(r.uid, "data.uid"),
        status=to_status(r.status, "data.status"),
        timestamp_ms=to_ms(r.timestamp, "data.timestamp"),
    )
    return _update(update_id, update_seq, UpdateEvent(relationship_updated=event), now_ms)


def build_new_feed_post_update(
    feed_item: FeedItem | Obj, update_seq: int, update_id: str, *, now_ms: int | None = None
) -> UpdatePayload:
    """``new-feed-post``: a post was added to the user's feed."""
    f = as_record(feed_item, FeedItem, "feed_item")
    event = events_pb2.NewFeedPost(
        id=expect_str(f.id, "feed_item.id"),
        body=json_to_value(f.body, "feed_item.body"),
        cursor=expect_str(f.cursor, "feed_item.cursor"),
        created_at_ms=to_ms(f.created_at, "feed_item.created_at"),
    )
    return _update(update_id, update_seq, UpdateEvent(new_feed_post=event), now_ms)


def build_kv_batch_update_update(
    changes: Iterable[KvChange | Obj], update_seq: int, update_id: str, *, now_ms: int | None = None
) -> UpdatePayload:
    """``kv-batch-update``: keys of the user's key-value store changed (may be empty)."""
    event = events_pb2.KvBatchUpdate()
    for i, change in enumerate(changes):
        field = f"changes[{i}]"
        c = as_record(change, KvChange, field)
        event.changes.add(
            key=expect_str(c.key, join(field, "key")),
            value=opt_str(c.value, join(field, "value")),
            version=expect_int64(c.version, join(field, "version")),
        )
    return _update(update_id, update_seq, UpdateEvent(kv_batch_update=event), now_ms)
