"""Locks the public API: a name added to or dropped from ``__all__`` is a decision.

Update the lists here in the same change, and say so in the changelog/README.
"""

from __future__ import annotations

import eventrouter.client
import eventrouter.server

CLIENT_API = [
    "ABSENT",
    "Absent",
    "AccountProfile",
    "ArtifactRecord",
    "Backoff",
    "BearerTokenCredentials",
    "BlockingEventRouterClient",
    "BlockingSubscription",
    "Connected",
    "ConnectionInfo",
    "Credentials",
    "DEFAULT_CHANNEL_OPTIONS",
    "DateLike",
    "DeadlineExceededError",
    "EmitResult",
    "EphemeralReceived",
    "EventRouterClient",
    "EventRouterError",
    "FeedItem",
    "GitHubPlan",
    "GitHubProfile",
    "HappyWireError",
    "Heartbeat",
    "ImageRef",
    "InvalidArgumentError",
    "JsonValue",
    "KvChange",
    "MachineRecord",
    "MessageRecord",
    "PermissionDeniedError",
    "ReconnectPolicy",
    "Reconnecting",
    "RefetchRequired",
    "RelationshipData",
    "ResourceExhaustedError",
    "RetryPolicy",
    "SessionRecord",
    "Subscription",
    "SubscriptionEvent",
    "UnauthenticatedError",
    "UnavailableError",
    "UndecodableMessageError",
    "UpdateReceived",
    "UserIdCredentials",
    "Versioned",
    "all_interested_in_session",
    "all_user_authenticated_connections",
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
    "ephemeral_from_happy_json",
    "from_happy_json",
    "machine_only",
    "machine_scope",
    "machine_scoped_only",
    "public_url_from_env",
    "session_scope",
    "to_happy_json",
    "update_from_happy_json",
    "user_scope",
    "user_scoped_only",
]

SERVER_API = [
    "AllInterestedInSession",
    "AllUserAuthenticatedConnections",
    "ClientConnection",
    "CloseReason",
    "ConnectionQueue",
    "EmitResult",
    "EventRouter",
    "HistoryLimits",
    "InvalidArgument",
    "MachineOnly",
    "MachineScopedConnection",
    "MachineScopedOnly",
    "OpenResult",
    "PayloadTooLarge",
    "QueueLimits",
    "RecipientFilter",
    "RequestError",
    "ResumeStatus",
    "RouterLimits",
    "RouterServer",
    "ServerConfig",
    "SessionScopedConnection",
    "UserScopedConnection",
    "UserScopedOnly",
    "serve",
]


def test_client_public_names_are_locked() -> None:
    assert sorted(eventrouter.client.__all__) == sorted(CLIENT_API)


def test_server_public_names_are_locked() -> None:
    assert sorted(eventrouter.server.__all__) == sorted(SERVER_API)


def test_every_public_name_resolves() -> None:
    for module in (eventrouter.client, eventrouter.server):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"
