"""The record arguments of the builders: Happy's database rows and inputs, typed.

Each builder argument that Happy passes as an object (a session row, a
profile patch, ...) is one of these frozen dataclasses **or a plain
Mapping**. The rule for a Mapping is the same everywhere:

* its keys are the dataclass field names (``last_active_at``) or their
  lowerCamelCase spelling, which is Happy's (``lastActiveAt``);
* a key may be left out exactly when the dataclass field has a default;
* any other key, or both spellings of one field, is an error: a typo must
  not silently drop a field (every ``AccountProfile`` field is optional, so
  ``{"fristName": ...}`` would otherwise vanish without a trace).

Nested records (``AccountProfile.github``, ``GitHubProfile.plan``, ...) follow
the same rule. Dates are ``datetime`` (aware; a naive one is taken as UTC) or
integer milliseconds since the epoch; byte fields are ``bytes``.

Three states, as in Happy's ``field?: T | null``: ``ABSENT`` means the key is
left out, ``None`` means JSON ``null``.

The end of the module turns checked record values into contract messages;
only the builders use it.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, ClassVar, Final, Protocol, TypeAlias, TypeVar

from eventrouter import jsontext
from eventrouter.client._json_values import (
    HappyWireError,
    JsonValue,
    expect_bool,
    expect_int64,
    expect_str,
    join,
    wire_errors,
    wire_order,
)
from eventrouter.v1 import events_pb2, happy_json_pb2

__all__ = [
    "ABSENT",
    "Absent",
    "AccountProfile",
    "ArtifactRecord",
    "DateLike",
    "FeedItem",
    "GitHubPlan",
    "GitHubProfile",
    "ImageRef",
    "KvChange",
    "MachineRecord",
    "MessageRecord",
    "RelationshipData",
    "SessionRecord",
    "Versioned",
]


class Absent(enum.Enum):
    """Type of ``ABSENT``: "leave this key out", distinct from ``None`` (= ``null``)."""

    ABSENT = "ABSENT"

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = Absent.ABSENT

# A point in time: an aware datetime (naive = UTC) or integer ms since the epoch.
DateLike: TypeAlias = datetime | int
# A record given either as its dataclass or as a Mapping (see the module docstring).
Obj: TypeAlias = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Versioned:
    """Happy's ``{value, version}``; ``value`` None is JSON ``null``."""

    value: str | None
    version: int


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """The session row ``buildNewSessionUpdate`` reads."""

    id: str
    seq: int
    metadata: str
    metadata_version: int
    agent_state: str | None
    agent_state_version: int
    data_encryption_key: bytes | None
    active: bool
    last_active_at: DateLike
    created_at: DateLike
    updated_at: DateLike


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """The session message row ``buildNewMessageUpdate`` reads."""

    id: str
    seq: int
    content: JsonValue
    local_id: str | None
    created_at: DateLike
    updated_at: DateLike


@dataclass(frozen=True, slots=True)
class MachineRecord:
    """The machine row ``buildNewMachineUpdate`` reads."""

    id: str
    seq: int
    metadata: str
    metadata_version: int
    daemon_state: str | None
    daemon_state_version: int
    data_encryption_key: bytes | None
    active: bool
    last_active_at: DateLike
    created_at: DateLike
    updated_at: DateLike


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    """The artifact row ``buildNewArtifactUpdate`` reads."""

    id: str
    seq: int
    header: bytes
    header_version: int
    body: bytes
    body_version: int
    data_encryption_key: bytes
    created_at: DateLike
    updated_at: DateLike


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A stored image (the avatar); the builder adds its public ``url``."""

    width: int
    height: int
    thumbhash: str
    path: str


@dataclass(frozen=True, slots=True)
class GitHubPlan:
    """A GitHub plan (authenticated profiles only)."""

    collaborators: int
    name: str
    space: int
    private_repos: int


@dataclass(frozen=True, slots=True)
class GitHubProfile:
    """GitHub's user profile as Happy stores it; fields in wire order.

    The nullable fields are required (GitHub always sends them, maybe as
    null); the authenticated-only ones default to ``ABSENT``.
    """

    id: int
    login: str
    type: str
    site_admin: bool
    avatar_url: str
    gravatar_id: str | None
    name: str | None
    company: str | None
    blog: str | None
    location: str | None
    email: str | None
    hireable: bool | None
    bio: str | None
    twitter_username: str | None
    public_repos: int
    public_gists: int
    followers: int
    following: int
    created_at: str
    updated_at: str
    private_gists: int | Absent = ABSENT
    total_private_repos: int | Absent = ABSENT
    owned_private_repos: int | Absent = ABSENT
    disk_usage: int | Absent = ABSENT
    collaborators: int | Absent = ABSENT
    two_factor_authentication: bool | Absent = ABSENT
    plan: GitHubPlan | Obj | Absent = ABSENT


@dataclass(frozen=True, slots=True)
class AccountProfile:
    """Happy's ``Partial<AccountProfile>``: only the fields given are sent.

    ``ABSENT`` (the default) leaves a field out; ``None`` sends ``null``,
    except for ``avatar``, where Happy's builder turns ``null`` into absent
    (``profile.avatar ? {...} : undefined``) and so do we.
    """

    first_name: str | Absent | None = ABSENT
    last_name: str | Absent | None = ABSENT
    username: str | Absent | None = ABSENT
    avatar: ImageRef | Obj | Absent | None = ABSENT
    github: GitHubProfile | Obj | Absent | None = ABSENT
    settings: Versioned | Obj | Absent | None = ABSENT
    connected_services: Sequence[str] | Absent = ABSENT


@dataclass(frozen=True, slots=True)
class RelationshipData:
    """A relationship change; ``status`` is Happy's string or the enum value."""

    uid: str
    status: str | int
    timestamp: DateLike


@dataclass(frozen=True, slots=True)
class FeedItem:
    """A feed post; ``body`` is arbitrary JSON."""

    id: str
    body: JsonValue
    cursor: str
    created_at: DateLike


@dataclass(frozen=True, slots=True)
class KvChange:
    """One key-value store change; ``value`` None means the key was deleted."""

    key: str
    value: str | None
    version: int


# ---------------------------------------------------------------------------
# Reading records given as dataclasses or Mappings
# ---------------------------------------------------------------------------


class _Record(Protocol):
    # Structurally the same as typeshed's DataclassInstance: "any dataclass".
    __dataclass_fields__: ClassVar[dict[str, Any]]


R = TypeVar("R", bound=_Record)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


@cache
def _spellings(cls: type[_Record]) -> dict[str, str]:
    """Map each accepted key spelling to its dataclass field name."""
    names: dict[str, str] = {}
    for f in fields(cls):
        names[f.name] = f.name
        names[_camel(f.name)] = f.name
    return names


def as_record(obj: object, cls: type[R], field: str) -> R:
    """Return ``obj`` as a ``cls`` instance, reading a Mapping by the module's rule."""
    if isinstance(obj, cls):
        return obj
    if not isinstance(obj, Mapping):
        raise HappyWireError(
            field, f"expected {cls.__name__} or a mapping, got {type(obj).__name__}"
        )
    spellings = _spellings(cls)
    values: dict[str, object] = {}
    for key, item in obj.items():
        name = spellings.get(key) if isinstance(key, str) else None
        if name is None:
            raise HappyWireError(join(field, str(key)), f"unknown key for {cls.__name__}")
        if name in values:
            raise HappyWireError(join(field, name), "given twice (snake_case and camelCase)")
        values[name] = item
    for f in fields(cls):
        if f.name not in values and f.default is MISSING:
            raise HappyWireError(join(field, f.name), "required key is missing")
    return cls(**values)


def open_record(
    obj: object, cls: type[R], field: str
) -> tuple[R, happy_json_pb2.JsonExtras | None]:
    """``as_record`` for an object that may hold more than ``cls`` models (GitHub's profile).

    A Mapping's keys that spell no field are kept, with their values as JSON
    text, in a ``JsonExtras``, and so is its key order when it is not the
    record's field order (GitHub's own order, say); the rendered object is then
    the Mapping as given. Only for records whose wire keys are their field
    names. A dataclass holds nothing more: no extras.
    """
    if not isinstance(obj, Mapping):
        return as_record(obj, cls, field), None
    spellings = _spellings(cls)
    record = as_record({k: v for k, v in obj.items() if k in spellings}, cls, field)
    extras = happy_json_pb2.JsonExtras()
    wire_keys: list[str] = []
    for key, value in obj.items():
        key_field = join(field, str(key))
        name = expect_str(key, key_field)
        if name not in spellings:
            with wire_errors():
                extras.members.add(key=name, json=jsontext.dumps(value, key_field))
        wire_keys.append(spellings.get(name, name))
    order = wire_order(wire_keys, (f.name for f in fields(cls)))
    if order is not None:
        extras.key_order.extend(order)
    return record, extras if extras.members or extras.key_order else None


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)


def clock_ms(now_ms: int | None) -> int:
    """The builders' ``now_ms``: Happy's ``Date.now()``, or the value that pins it."""
    if now_ms is None:
        return time.time_ns() // 1_000_000
    return expect_int64(now_ms, "now_ms")


def to_ms(value: object, field: str) -> int:
    """Milliseconds since the epoch of a ``datetime`` or an int (JS ``Date.getTime()``)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        # Floor division drops sub-millisecond precision the way a JS Date cannot hold it.
        return expect_int64((value - _EPOCH) // _ONE_MS, field)
    return expect_int64(value, field)


def to_bytes(value: object, field: str) -> bytes:
    """Raw bytes of a bytes-like value (Happy's ``Uint8Array``)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise HappyWireError(field, f"expected bytes, got {type(value).__name__}")


# Relationship status as Happy spells it on the wire.
STATUS_BY_WIRE: Final[Mapping[str, events_pb2.RelationshipStatus.ValueType]] = {
    "none": events_pb2.RELATIONSHIP_STATUS_NONE,
    "requested": events_pb2.RELATIONSHIP_STATUS_REQUESTED,
    "pending": events_pb2.RELATIONSHIP_STATUS_PENDING,
    "friend": events_pb2.RELATIONSHIP_STATUS_FRIEND,
    "rejected": events_pb2.RELATIONSHIP_STATUS_REJECTED,
}
WIRE_BY_STATUS: Final[Mapping[int, str]] = {code: name for name, code in STATUS_BY_WIRE.items()}


# ---------------------------------------------------------------------------
# Record values -> contract messages (shared by the builders)
# ---------------------------------------------------------------------------


def opt_str(value: object, field: str) -> str | None:
    return None if value is None else expect_str(value, field)


def opt_bytes(value: object, field: str) -> bytes | None:
    return None if value is None else to_bytes(value, field)


def versioned_value(value: object, field: str) -> events_pb2.VersionedValue:
    v = as_record(value, Versioned, field)
    return events_pb2.VersionedValue(
        value=opt_str(v.value, join(field, "value")),
        version=expect_int64(v.version, join(field, "version")),
    )


def nullable_versioned(value: object, field: str) -> events_pb2.NullableVersionedValue | None:
    """ABSENT -> no wrapper (key absent); None -> empty wrapper (null)."""
    if value is ABSENT:
        return None
    if value is None:
        return events_pb2.NullableVersionedValue()
    return events_pb2.NullableVersionedValue(value=versioned_value(value, field))


def versioned_string(value: object, field: str) -> events_pb2.VersionedString | None:
    """ABSENT -> unset; Happy's type has no null here, so None is an error."""
    if value is ABSENT:
        return None
    v = as_record(value, Versioned, field)
    return events_pb2.VersionedString(
        value=expect_str(v.value, join(field, "value")),
        version=expect_int64(v.version, join(field, "version")),
    )


def nullable_string(value: object, field: str) -> events_pb2.NullableString | None:
    if value is ABSENT:
        return None
    return events_pb2.NullableString(value=opt_str(value, field))


_GITHUB_STRINGS = ("login", "type", "avatar_url", "created_at", "updated_at")
_GITHUB_COUNTS = ("id", "public_repos", "public_gists", "followers", "following")
_GITHUB_NULLABLE_STRINGS = (
    "gravatar_id",
    "name",
    "company",
    "blog",
    "location",
    "email",
    "bio",
    "twitter_username",
)
# Present only in an authenticated profile: ABSENT leaves them unset (absent on the wire).
_GITHUB_PRIVATE_COUNTS = (
    "private_gists",
    "total_private_repos",
    "owned_private_repos",
    "disk_usage",
    "collaborators",
)


def github_profile_message(value: object, field: str) -> events_pb2.GitHubProfile:
    """A GitHubProfile record (or Mapping) as the contract's message, every field checked.

    A Mapping is GitHub's profile as Happy stores it (GitHub's whole API
    response): the keys the contract does not model are kept (``open_record``).
    """
    g, extras = open_record(value, GitHubProfile, field)
    out = events_pb2.GitHubProfile(site_admin=expect_bool(g.site_admin, join(field, "site_admin")))
    if extras is not None:
        out.json_extras.CopyFrom(extras)
    for name in _GITHUB_STRINGS:
        setattr(out, name, expect_str(getattr(g, name), join(field, name)))
    for name in _GITHUB_COUNTS:
        setattr(out, name, expect_int64(getattr(g, name), join(field, name)))
    for name in _GITHUB_NULLABLE_STRINGS:
        text = opt_str(getattr(g, name), join(field, name))
        if text is not None:
            setattr(out, name, text)
    if g.hireable is not None:
        out.hireable = expect_bool(g.hireable, join(field, "hireable"))
    for name in _GITHUB_PRIVATE_COUNTS:
        count = getattr(g, name)
        if count is not ABSENT:
            setattr(out, name, expect_int64(count, join(field, name)))
    if g.two_factor_authentication is not ABSENT:
        out.two_factor_authentication = expect_bool(
            g.two_factor_authentication, join(field, "two_factor_authentication")
        )
    if g.plan is not ABSENT:
        plan_field = join(field, "plan")
        p, plan_extras = open_record(g.plan, GitHubPlan, plan_field)
        if plan_extras is not None:
            out.plan.json_extras.CopyFrom(plan_extras)
        out.plan.collaborators = expect_int64(p.collaborators, join(plan_field, "collaborators"))
        out.plan.name = expect_str(p.name, join(plan_field, "name"))
        out.plan.space = expect_int64(p.space, join(plan_field, "space"))
        out.plan.private_repos = expect_int64(p.private_repos, join(plan_field, "private_repos"))
    return out


def str_list(value: object, field: str) -> list[str]:
    # A bare string is iterable too; treating "github" as ["g", "i", ...] would be a silent bug.
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise HappyWireError(field, f"expected a list of strings, got {type(value).__name__}")
    return [expect_str(item, f"{field}[{i}]") for i, item in enumerate(value)]


def status_from_wire(value: object, field: str) -> events_pb2.RelationshipStatus.ValueType:
    """The enum value of Happy's status string ("requested")."""
    name = expect_str(value, field)
    if name not in STATUS_BY_WIRE:
        raise HappyWireError(field, f"unknown relationship status {name!r}")
    return STATUS_BY_WIRE[name]


def status_to_wire(code: int, field: str) -> str:
    """Happy's string for an enum value; UNSPECIFIED and unknown numbers have none."""
    if code not in WIRE_BY_STATUS:
        raise HappyWireError(field, f"relationship status {code} has no wire name")
    return WIRE_BY_STATUS[code]


def to_status(value: object, field: str) -> events_pb2.RelationshipStatus.ValueType:
    """Happy's status string, or the enum value (not UNSPECIFIED)."""
    if isinstance(value, str):
        return status_from_wire(value, field)
    if isinstance(value, int) and not isinstance(value, bool):
        return STATUS_BY_WIRE[status_to_wire(value, field)]
    raise HappyWireError(field, f"expected a relationship status, got {value!r}")
