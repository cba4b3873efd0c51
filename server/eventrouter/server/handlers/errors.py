"""How a call fails, in one small set of codes every protocol can say.

Handlers raise ``Refused(code, message)``; each transport translates the code
into its own (a gRPC status, a Connect error code, an HTTP status for
gRPC-Web and Connect unary calls).  The codes are gRPC's names, because the
contract is gRPC's and Connect's codes map onto them one to one.
"""

from __future__ import annotations

import enum

from eventrouter.server.auth import AuthError
from eventrouter.server.core.queue import CloseReason
from eventrouter.server.core.validation import PayloadTooLarge, RequestError


class Code(enum.Enum):
    """The failures this service reports (a subset of gRPC's status codes)."""

    INVALID_ARGUMENT = "invalid_argument"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNAVAILABLE = "unavailable"
    UNIMPLEMENTED = "unimplemented"
    INTERNAL = "internal"


class Refused(Exception):
    """A call answered with a failure: ``code`` and a message for the caller."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


def request_refused(error: RequestError) -> Refused:
    """Bad input: INVALID_ARGUMENT naming the field, RESOURCE_EXHAUSTED when too large."""
    code = Code.RESOURCE_EXHAUSTED if isinstance(error, PayloadTooLarge) else Code.INVALID_ARGUMENT
    return Refused(code, str(error))


def auth_refused(error: AuthError) -> Refused:
    return Refused(
        Code.PERMISSION_DENIED if error.permission else Code.UNAUTHENTICATED, error.message
    )


# How a stream the server ended is reported to its client.
CLOSE_CODE = {
    CloseReason.TOO_SLOW: Code.RESOURCE_EXHAUSTED,
    CloseReason.SHUTDOWN: Code.UNAVAILABLE,
    CloseReason.DISCONNECTED: Code.UNAVAILABLE,
    CloseReason.REVOKED: Code.PERMISSION_DENIED,
    CloseReason.CREDENTIAL_EXPIRED: Code.UNAUTHENTICATED,
}

__all__ = ["CLOSE_CODE", "Code", "Refused", "auth_refused", "request_refused"]
