"""JWT signing keys and tokens (PyJWT).

Keys live in a JWKS document (RFC 7517), so several can be active at once
and a token names its key by ``kid``: rotate by adding the new key, issuing
with it, and removing the old one once its tokens have expired.  Supported:
HS256 shared secrets (``kty: oct``), EdDSA Ed25519 (``kty: OKP``) and ES256
P-256 (``kty: EC``).  A verifier needs only public keys; minting needs the
secret or the private part (``d``).

Two kinds of token, told apart by audience so a user token can never act
as a service:

- subscriber: ``aud = eventrouter:subscriber``, ``sub`` = the user id,
  optionally ``session_id`` or ``machine_id`` restricting it to that one
  scope (a session viewer, a machine daemon);
- service: ``aud = eventrouter:service``, ``sub`` = the service's name.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK, PyJWKSet

SUBSCRIBER_AUDIENCE = "eventrouter:subscriber"
SERVICE_AUDIENCE = "eventrouter:service"
SUPPORTED_ALGORITHMS = ("HS256", "EdDSA", "ES256")
DEFAULT_TTL_S = 3600
# Tokens may be a little early or late: clocks of issuer and router differ.
LEEWAY_S = 5


class TokenError(Exception):
    """A token that does not verify; the message says why, never the token.

    ``reason`` is a short label for metrics: malformed, unknown_key, expired,
    wrong_audience, bad_signature, invalid.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified claims this service uses."""

    subject: str
    audience: str
    expires_at: float
    token_id: str | None
    session_id: str | None
    machine_id: str | None


def default_keys_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "eventrouter" / "signing-keys.json"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def generate_hs256_jwks() -> dict[str, Any]:
    """A fresh keyset with one random 256-bit HS256 secret."""
    return {
        "keys": [
            {
                "kty": "oct",
                "kid": "k-" + secrets.token_hex(4),
                "alg": "HS256",
                "use": "sig",
                "k": _b64url(secrets.token_bytes(32)),
            }
        ]
    }


def ensure_keys_file(path: Path) -> bool:
    """Create ``path`` with a new secret (mode 0600) unless it exists; True if created."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(generate_hs256_jwks(), f, indent=2)
    return True


class KeySet:
    """Verification (and, where private material is present, signing) keys."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        raw_keys = list(jwks.get("keys", []))
        if not raw_keys:
            raise ValueError("the keyset holds no keys")
        self._raw = {str(k.get("kid", "")): dict(k) for k in raw_keys}
        self._keys: dict[str, PyJWK] = {}
        for key in PyJWKSet.from_dict({"keys": raw_keys}).keys:
            if key.algorithm_name not in SUPPORTED_ALGORITHMS:
                raise ValueError(f"key {key.key_id!r}: algorithm {key.algorithm_name} unsupported")
            self._keys[key.key_id or ""] = key
        if len(self._keys) != len(raw_keys):
            raise ValueError("every key needs a distinct kid")
        # The first key that can sign is the one new tokens use.
        self.signing_kid = next((kid for kid in self._raw if self._can_sign(kid)), None)

    @classmethod
    def load(cls, path: Path) -> KeySet:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read keys file {path}: {e}") from e
        return cls(data)

    def _can_sign(self, kid: str) -> bool:
        raw = self._raw[kid]
        return "k" in raw or "d" in raw

    def mint(
        self,
        subject: str,
        audience: str,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        session_id: str | None = None,
        machine_id: str | None = None,
        token_id: str | None = None,
        now: float | None = None,
    ) -> str:
        """Sign a new token with the signing key."""
        if self.signing_kid is None:
            raise ValueError("no key in the keyset has private material to sign with")
        key = self._keys[self.signing_kid]
        issued = int(now if now is not None else time.time())
        claims: dict[str, Any] = {
            "sub": subject,
            "aud": audience,
            "iat": issued,
            "exp": issued + int(ttl_s),
            "jti": token_id or secrets.token_hex(8),
        }
        if session_id is not None:
            claims["session_id"] = session_id
        if machine_id is not None:
            claims["machine_id"] = machine_id
        return jwt.encode(
            claims, key.key, algorithm=key.algorithm_name, headers={"kid": self.signing_kid}
        )

    def verify(self, token: str, audience: str) -> Claims:
        """Check signature, expiry and audience; raise TokenError saying what failed."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise TokenError("malformed token", "malformed") from e
        kid = header.get("kid")
        if kid is None and len(self._keys) == 1:
            kid = next(iter(self._keys))
        key = self._keys.get(str(kid)) if kid is not None else None
        if key is None:
            raise TokenError("token signed with an unknown key", "unknown_key")
        verifier = key.key.public_key() if hasattr(key.key, "public_key") else key.key
        try:
            claims = jwt.decode(
                token,
                verifier,
                algorithms=[key.algorithm_name],
                audience=audience,
                leeway=LEEWAY_S,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError as e:
            raise TokenError("token expired", "expired") from e
        except jwt.InvalidAudienceError as e:
            raise TokenError("token is not valid for this use (audience)", "wrong_audience") from e
        except jwt.InvalidSignatureError as e:
            raise TokenError("bad token signature", "bad_signature") from e
        except jwt.PyJWTError as e:
            raise TokenError(f"invalid token: {e}", "invalid") from e
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise TokenError("token has no subject", "invalid")
        return Claims(
            subject=subject,
            audience=audience,
            expires_at=float(claims["exp"]),
            token_id=_optional_str(claims, "jti"),
            session_id=_optional_str(claims, "session_id"),
            machine_id=_optional_str(claims, "machine_id"),
        )


def _optional_str(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise TokenError(f"claim {name} must be a non-empty string", "invalid")
    return value
