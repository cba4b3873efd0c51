"""Recipient filters: which of a user's connections an emit reaches.

The rule (Happy's, plus the later ``machine-only``):

====================================  ===========  ===============  ===============
filter                                user-scoped  session s'       machine m'
====================================  ===========  ===============  ===============
all-user-authenticated-connections    yes          yes              yes
user-scoped-only                      yes          no               no
all-interested-in-session(s)          yes          only if s' = s   no
machine-scoped-only(m)                yes          no               only if m' = m
machine-only(m)                       no           no               only if m' = m
====================================  ===========  ===============  ===============
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AllUserAuthenticatedConnections:
    """Every connection of the user (the default)."""


@dataclass(frozen=True, slots=True)
class UserScopedOnly:
    """Only user-scoped connections."""


@dataclass(frozen=True, slots=True)
class AllInterestedInSession:
    """User-scoped connections plus the watchers of one session."""

    session_id: str


@dataclass(frozen=True, slots=True)
class MachineScopedOnly:
    """User-scoped connections plus the daemons of one machine."""

    machine_id: str


@dataclass(frozen=True, slots=True)
class MachineOnly:
    """Only the daemons of one machine."""

    machine_id: str


RecipientFilter = (
    AllUserAuthenticatedConnections
    | UserScopedOnly
    | AllInterestedInSession
    | MachineScopedOnly
    | MachineOnly
)

ALL_CONNECTIONS = AllUserAuthenticatedConnections()
