"""The index of open connections: by user, then by scope, session and machine.

Selecting recipients touches only the sets a filter names, so its cost does
not grow with other users' connections, nor with a user's connections of
other scopes (a session emit to a user with 10,000 daemons never looks at
them).
"""

from __future__ import annotations

from collections.abc import Iterable

from eventrouter.server.core.connections import (
    ClientConnection,
    MachineScopedConnection,
    SessionScopedConnection,
    UserScopedConnection,
)
from eventrouter.server.core.filters import (
    AllInterestedInSession,
    AllUserAuthenticatedConnections,
    MachineOnly,
    MachineScopedOnly,
    RecipientFilter,
    UserScopedOnly,
)

_Bucket = dict[str, ClientConnection]


class UserConnections:
    """One user's open connections, indexed by id and by scope."""

    __slots__ = ("by_id", "machines", "sessions", "user_scoped")

    def __init__(self) -> None:
        self.by_id: _Bucket = {}
        self.user_scoped: _Bucket = {}
        self.sessions: dict[str, _Bucket] = {}
        self.machines: dict[str, _Bucket] = {}

    def bucket_of(self, connection: ClientConnection, create: bool) -> _Bucket | None:
        if isinstance(connection, UserScopedConnection):
            return self.user_scoped
        index, key = (
            (self.sessions, connection.session_id)
            if isinstance(connection, SessionScopedConnection)
            else (self.machines, connection.machine_id)
        )
        bucket = index.get(key)
        if bucket is None and create:
            bucket = index[key] = {}
        return bucket


def accepts(recipient_filter: RecipientFilter, connection: ClientConnection) -> bool:
    """The routing rule as a predicate (used for replay, and by the tests' model)."""
    match recipient_filter:
        case AllUserAuthenticatedConnections():
            return True
        case UserScopedOnly():
            return isinstance(connection, UserScopedConnection)
        case AllInterestedInSession(session_id=session_id):
            return isinstance(connection, UserScopedConnection) or (
                isinstance(connection, SessionScopedConnection)
                and connection.session_id == session_id
            )
        case MachineScopedOnly(machine_id=machine_id):
            return isinstance(connection, UserScopedConnection) or (
                isinstance(connection, MachineScopedConnection)
                and connection.machine_id == machine_id
            )
        case MachineOnly(machine_id=machine_id):
            return (
                isinstance(connection, MachineScopedConnection)
                and connection.machine_id == machine_id
            )


class ConnectionRegistry:
    def __init__(self) -> None:
        self._users: dict[str, UserConnections] = {}
        self._by_id: dict[str, ClientConnection] = {}

    def add(self, connection: ClientConnection) -> None:
        if connection.connection_id in self._by_id:
            raise ValueError(f"connection id {connection.connection_id!r} is already registered")
        user = self._users.get(connection.user_id)
        if user is None:
            user = self._users[connection.user_id] = UserConnections()
        user.by_id[connection.connection_id] = connection
        bucket = user.bucket_of(connection, create=True)
        assert bucket is not None
        bucket[connection.connection_id] = connection
        self._by_id[connection.connection_id] = connection

    def remove(self, connection: ClientConnection) -> bool:
        """Unregister; False if it was not registered (removal is idempotent)."""
        if self._by_id.get(connection.connection_id) is not connection:
            return False
        del self._by_id[connection.connection_id]
        user = self._users[connection.user_id]
        del user.by_id[connection.connection_id]
        bucket = user.bucket_of(connection, create=False)
        assert bucket is not None
        del bucket[connection.connection_id]
        # Empty per-session/per-machine buckets go, so ids seen once cost nothing later.
        if not bucket:
            if isinstance(connection, SessionScopedConnection):
                del user.sessions[connection.session_id]
            elif isinstance(connection, MachineScopedConnection):
                del user.machines[connection.machine_id]
        if not user.by_id:
            del self._users[connection.user_id]
        return True

    def get(self, connection_id: str) -> ClientConnection | None:
        return self._by_id.get(connection_id)

    def of_user(self, user_id: str) -> list[ClientConnection]:
        user = self._users.get(user_id)
        return list(user.by_id.values()) if user else []

    def count_of_user(self, user_id: str) -> int:
        user = self._users.get(user_id)
        return len(user.by_id) if user else 0

    def has_user(self, user_id: str) -> bool:
        return user_id in self._users

    def users(self) -> Iterable[str]:
        return self._users.keys()

    def all(self) -> Iterable[ClientConnection]:
        return self._by_id.values()

    def __len__(self) -> int:
        return len(self._by_id)

    def select(
        self,
        user_id: str,
        recipient_filter: RecipientFilter,
        skip_connection_id: str | None = None,
    ) -> list[ClientConnection]:
        """The user's connections the filter selects, minus the skipped one."""
        user = self._users.get(user_id)
        if user is None:
            return []
        selected: list[ClientConnection]
        match recipient_filter:
            case AllUserAuthenticatedConnections():
                selected = list(user.by_id.values())
            case UserScopedOnly():
                selected = list(user.user_scoped.values())
            case AllInterestedInSession(session_id=session_id):
                selected = [*user.user_scoped.values(), *user.sessions.get(session_id, {}).values()]
            case MachineScopedOnly(machine_id=machine_id):
                selected = [*user.user_scoped.values(), *user.machines.get(machine_id, {}).values()]
            case MachineOnly(machine_id=machine_id):
                selected = list(user.machines.get(machine_id, {}).values())
        if skip_connection_id is not None:
            selected = [c for c in selected if c.connection_id != skip_connection_id]
        return selected
