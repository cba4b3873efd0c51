"""Who is calling: the subscriber's identity, and whether a caller is a service.

Subscriber identity always comes from a credential, never from the request:
a bearer JWT in ``authorization`` metadata, verified against the configured
keys.  Services (Emit, GetConnections, Disconnect) present a service JWT or,
when mutual TLS is configured, a client certificate whose subject is on the
allow-list.  ``InsecureMetadataAuthenticator`` trusts a user id sent in
metadata: it exists for local experiments only, and the server logs a
warning at start and on every stream while it is in use.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from eventrouter.server.security.tokens import (
    SERVICE_AUDIENCE,
    SUBSCRIBER_AUDIENCE,
    Claims,
    KeySet,
    TokenError,
)

USER_ID_METADATA_KEY = "x-eventrouter-user-id"
AUTHORIZATION_METADATA_KEY = "authorization"

Metadata = Sequence[tuple[str, str | bytes]]
# grpc's auth_context(): property name -> values (e.g. "x509_common_name").
PeerAuth = Mapping[str, Sequence[bytes]]


@dataclass(frozen=True, slots=True)
class AuthError(Exception):
    """Refused credentials: ``permission`` False = UNAUTHENTICATED, True = PERMISSION_DENIED.

    ``reason`` is a short label for metrics (missing, malformed, expired, ...).
    """

    message: str
    permission: bool = False
    reason: str = "invalid"


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A verified subscriber: its user and what its credential allows."""

    user_id: str
    token_id: str | None = None
    expires_at: float | None = None
    # A restricted credential may open only this session's / machine's connection.
    session_id: str | None = None
    machine_id: str | None = None


class Authenticator(Protocol):
    def subscriber(self, metadata: Metadata, peer: PeerAuth) -> Subscriber:
        """The identity a Subscribe call acts for; raises AuthError."""
        ...

    def service(self, metadata: Metadata, peer: PeerAuth) -> str:
        """The name of the service calling Emit / GetConnections / Disconnect; raises AuthError."""
        ...

    def revoke(self, token_id: str, until: float | None = None) -> None:
        """Refuse the token with this ``jti`` from now on (until a Unix time; None = always)."""
        ...


def _metadata_value(metadata: Metadata, key: str) -> str | None:
    for k, v in metadata:
        if k == key:
            return v.decode() if isinstance(v, bytes) else v
    return None


def _bearer(metadata: Metadata) -> str:
    value = _metadata_value(metadata, AUTHORIZATION_METADATA_KEY)
    if value is None:
        raise AuthError(
            "missing credentials: send 'authorization: Bearer <token>'", reason="missing"
        )
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("authorization metadata must be 'Bearer <token>'", reason="malformed")
    return token.strip()


class TokenAuthenticator:
    """Verifies JWTs; optionally accepts mTLS client certificates as service identity."""

    def __init__(
        self,
        keys: KeySet,
        *,
        revoked_token_ids: Collection[str] = (),
        service_subjects: Collection[str] = (),
    ) -> None:
        self.keys = keys
        # jti -> Unix time the revocation lasts until (inf: configured at start).
        self.revoked_token_ids: dict[str, float] = dict.fromkeys(revoked_token_ids, math.inf)
        # Common names of client certificates that identify services (mTLS).
        self.service_subjects = frozenset(service_subjects)

    def subscriber(self, metadata: Metadata, peer: PeerAuth) -> Subscriber:
        claims = self._verify(_bearer(metadata), SUBSCRIBER_AUDIENCE)
        if claims.session_id is not None and claims.machine_id is not None:
            raise AuthError("token restricts to both a session and a machine", reason="malformed")
        return Subscriber(
            user_id=claims.subject,
            token_id=claims.token_id,
            expires_at=claims.expires_at,
            session_id=claims.session_id,
            machine_id=claims.machine_id,
        )

    def service(self, metadata: Metadata, peer: PeerAuth) -> str:
        for name in peer.get("x509_common_name", ()):
            subject = name.decode()
            if subject in self.service_subjects:
                return subject
        if self.service_subjects and _metadata_value(metadata, AUTHORIZATION_METADATA_KEY) is None:
            raise AuthError("client certificate not allowed and no service token", reason="missing")
        return self._verify(_bearer(metadata), SERVICE_AUDIENCE).subject

    def _verify(self, token: str, audience: str) -> Claims:
        try:
            claims = self.keys.verify(token, audience)
        except TokenError as e:
            # A genuine token of the wrong kind (a user token calling Emit) is
            # authenticated but not allowed; anything else is unauthenticated.
            wrong_kind = e.reason == "wrong_audience"
            raise AuthError(str(e), permission=wrong_kind, reason=e.reason) from None
        if claims.token_id is not None and self._revoked(claims.token_id):
            raise AuthError("token has been revoked", permission=True, reason="revoked")
        return claims

    def _revoked(self, token_id: str) -> bool:
        until = self.revoked_token_ids.get(token_id)
        if until is None:
            return False
        if until > time.time():
            return True
        del self.revoked_token_ids[token_id]
        return False

    def revoke(self, token_id: str, until: float | None = None) -> None:
        limit = math.inf if until is None else until
        self.revoked_token_ids[token_id] = max(limit, self.revoked_token_ids.get(token_id, 0.0))


class InsecureMetadataAuthenticator:
    """Trusts ``x-eventrouter-user-id`` from metadata; anyone may emit. Local use only."""

    def subscriber(self, metadata: Metadata, peer: PeerAuth) -> Subscriber:
        user_id = _metadata_value(metadata, USER_ID_METADATA_KEY)
        if user_id is None:
            raise AuthError(f"missing {USER_ID_METADATA_KEY} metadata", reason="missing")
        return Subscriber(user_id)

    def service(self, metadata: Metadata, peer: PeerAuth) -> str:
        return "insecure"

    def revoke(self, token_id: str, until: float | None = None) -> None:
        return None
