"""Asymmetric signing keys for issuers in any language (``eventrouter keys``).

An issuer (Happy Server, in Node) signs subscriber and service tokens with a
private key; the router verifies them with the public half, listed in its
keys file (``--keys-file``, a JWKS that ``tokens.KeySet`` loads) under the
key's ``kid``. The router never needs the private key.

Both files written here are JWKS documents (RFC 7517) of mode 0600, the mode
the server demands of its keys file:

- the private key file holds the one new key with its private part ``d``,
  ``kid`` and ``alg`` (jose's ``importJWK`` takes it as is; ``eventrouter
  token --keys-file`` mints with it too);
- the router's keys file gains the public key; rotate by generating a new
  key into the same file, signing with it, and removing the old ``kid``
  once the tokens it signed have expired.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from eventrouter.server.security.tokens import KeySet

# The asymmetric algorithms the router verifies (tokens.SUPPORTED_ALGORITHMS
# without the shared-secret HS256).
ASYMMETRIC_ALGORITHMS = ("EdDSA", "ES256")
_PRIVATE_MEMBERS = ("d", "k", "p", "q", "dp", "dq", "qi")


class KeysFileError(ValueError):
    """A keys file that cannot be changed as asked; the message says why."""


def new_kid(alg: str, now: float | None = None) -> str:
    """``eddsa-20261207-3fa2c1``: the algorithm, the day, and random hex."""
    day = time.strftime("%Y%m%d", time.gmtime(now))
    return f"{alg.lower()}-{day}-{secrets.token_hex(3)}"


def generate_key(alg: str, kid: str) -> dict[str, Any]:
    """A new private JWK (``kid``, ``alg``, ``use``): EdDSA (Ed25519) or ES256 (P-256)."""
    if alg == "EdDSA":
        jwk = OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate(), as_dict=True)
    elif alg == "ES256":
        jwk = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()), as_dict=True)
    else:
        raise KeysFileError(f"algorithm {alg!r}: choose one of {', '.join(ASYMMETRIC_ALGORITHMS)}")
    return {"kid": kid, "alg": alg, "use": "sig", **jwk}


def public_part(jwk: dict[str, Any]) -> dict[str, Any]:
    """``jwk`` without its private members: what verifiers may see."""
    return {name: value for name, value in jwk.items() if name not in _PRIVATE_MEMBERS}


def is_private(jwk: dict[str, Any]) -> bool:
    return any(name in jwk for name in _PRIVATE_MEMBERS)


def read_jwks(path: Path) -> dict[str, Any]:
    """The JWKS at ``path`` ({"keys": []} when the file does not exist)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"keys": []}
    except (OSError, ValueError) as e:
        raise KeysFileError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeysFileError(f"{path} is not a JWKS (an object with a 'keys' list)")
    return data


def write_jwks(path: Path, jwks: dict[str, Any], *, exclusive: bool = False) -> None:
    """Write ``jwks`` to ``path`` with mode 0600, atomically (a reader sees old or new).

    ``exclusive``: refuse to replace an existing file (a private key is
    never overwritten).
    """
    if jwks["keys"]:
        KeySet(jwks)  # what the server would refuse is never written
    path.parent.mkdir(parents=True, exist_ok=True)
    if exclusive and path.exists():
        raise KeysFileError(f"{path} exists; a private key is never overwritten")
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(jwks, f, indent=2)
            f.write("\n")
        if exclusive:
            os.link(temporary, path)  # fails if the file appeared meanwhile
        else:
            os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def add_public_key(jwks_path: Path, private_jwk: dict[str, Any]) -> int:
    """Add the public half of ``private_jwk`` to the keys file; the number of keys it then holds."""
    jwks = read_jwks(jwks_path)
    kids = [str(key.get("kid", "")) for key in jwks["keys"]]
    if private_jwk["kid"] in kids:
        raise KeysFileError(f"{jwks_path} already holds a key {private_jwk['kid']!r}")
    jwks["keys"].append(public_part(private_jwk))
    write_jwks(jwks_path, jwks)
    return len(jwks["keys"])


def remove_key(jwks_path: Path, kid: str) -> int:
    """Drop key ``kid`` from the keys file; the number of keys left (never zero)."""
    jwks = read_jwks(jwks_path)
    kept = [key for key in jwks["keys"] if key.get("kid") != kid]
    if len(kept) == len(jwks["keys"]):
        raise KeysFileError(f"{jwks_path} holds no key {kid!r}")
    if not kept:
        raise KeysFileError(f"{kid!r} is the last key of {jwks_path}; the server needs one")
    jwks["keys"] = kept
    write_jwks(jwks_path, jwks)
    return len(kept)
