"""Who is calling: the subscriber's user id and whether a caller may emit.

This is the seam the security layer plugs into.  The only implementation
so far trusts a user id sent in call metadata, which is fit for local
experiments only; the server logs a warning when it is in use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

USER_ID_METADATA_KEY = "x-eventrouter-user-id"

Metadata = Sequence[tuple[str, str | bytes]]


@dataclass(frozen=True, slots=True)
class AuthError(Exception):
    """Refused credentials: ``permission`` False = UNAUTHENTICATED, True = PERMISSION_DENIED."""

    message: str
    permission: bool = False


class Authenticator(Protocol):
    def subscriber(self, metadata: Metadata) -> str:
        """The user id a Subscribe call acts for; raises AuthError."""
        ...

    def service(self, metadata: Metadata) -> None:
        """Check that the caller may Emit / GetConnections; raises AuthError."""
        ...


class InsecureMetadataAuthenticator:
    """Trusts ``x-eventrouter-user-id`` from metadata; anyone may emit."""

    def subscriber(self, metadata: Metadata) -> str:
        for key, value in metadata:
            if key == USER_ID_METADATA_KEY:
                return value.decode() if isinstance(value, bytes) else value
        raise AuthError(f"missing {USER_ID_METADATA_KEY} metadata")

    def service(self, metadata: Metadata) -> None:
        return None
