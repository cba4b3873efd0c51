"""eventrouter client library: builders, the Happy wire codec, and gRPC clients.

Build a payload with Happy's builder names, send it with a client, and read
it back in the exact JSON Happy's apps receive::

    from eventrouter.client import build_new_session_update, to_happy_json

    payload = build_new_session_update(session, 101, "upd_1")
    to_happy_json(payload)  # {"id": "upd_1", "seq": 101, "body": {"t": "new-session", ...}, ...}
"""

from eventrouter.client._builders import (
    build_delete_artifact_update,
    build_delete_session_update,
    build_kv_batch_update_update,
    build_machine_activity_ephemeral,
    build_machine_status_ephemeral,
    build_new_artifact_update,
    build_new_feed_post_update,
    build_new_machine_update,
    build_new_message_update,
    build_new_session_update,
    build_relationship_updated_event,
    build_session_activity_ephemeral,
    build_update_account_update,
    build_update_artifact_update,
    build_update_machine_update,
    build_update_session_update,
    build_usage_ephemeral,
    public_url_from_env,
)
from eventrouter.client._happy_json import (
    HappyWireError,
    ephemeral_from_happy_json,
    from_happy_json,
    to_happy_json,
    update_from_happy_json,
)
from eventrouter.client._json_values import JsonValue
from eventrouter.client._records import (
    ABSENT,
    Absent,
    AccountProfile,
    ArtifactRecord,
    DateLike,
    FeedItem,
    GitHubPlan,
    GitHubProfile,
    ImageRef,
    KvChange,
    MachineRecord,
    MessageRecord,
    RelationshipData,
    SessionRecord,
    Versioned,
)

__all__ = [
    "ABSENT",
    "Absent",
    "AccountProfile",
    "ArtifactRecord",
    "DateLike",
    "FeedItem",
    "GitHubPlan",
    "GitHubProfile",
    "HappyWireError",
    "ImageRef",
    "JsonValue",
    "KvChange",
    "MachineRecord",
    "MessageRecord",
    "RelationshipData",
    "SessionRecord",
    "Versioned",
    "build_delete_artifact_update",
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
    "build_update_account_update",
    "build_update_artifact_update",
    "build_update_machine_update",
    "build_update_session_update",
    "build_usage_ephemeral",
    "ephemeral_from_happy_json",
    "from_happy_json",
    "public_url_from_env",
    "to_happy_json",
    "update_from_happy_json",
]
