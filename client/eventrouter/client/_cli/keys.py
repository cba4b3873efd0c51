"""``eventrouter keys``: asymmetric signing keys for token issuers in any language.

``generate`` makes an EdDSA (Ed25519) or ES256 (P-256) key pair: the private
key goes to a file of its own for the issuer, the public key into the
router's keys file under a new ``kid``. ``remove`` drops an old ``kid`` after
a rotation; ``list`` shows what a keys file holds. The key handling is the
server's (``eventrouter.server.security.jwks``), imported only when a
command runs: a client-only install has no server.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from eventrouter.client._cli.common import (
    CommandFailed,
    RawHelpFormatter,
    UsageError,
    new_command,
    print_json,
)

DOC = """\
Signing keys for services that mint their own tokens (Happy Server in Node:
docs/deploy.md). The router needs only the public keys, in its --keys-file.

  eventrouter keys generate --alg EdDSA --jwks router-keys.json --private-key issuer-key.json
  # issuer-key.json: the private JWK (kid, alg, d) for the issuer; router-keys.json: the
  # public key added under the same kid. Rotate: generate another into the same
  # --jwks, sign with it, then `eventrouter keys remove --kid OLD` once OLD's tokens expired.

Files are written with mode 0600 (the server refuses a keys file others can read).
"""


def _jwks() -> Any:
    try:
        from eventrouter.server.security import jwks
    except ImportError as e:  # a client-only install: the server extra is missing
        raise CommandFailed(
            f"the server is not installed ({e}): pip install 'eventrouter[server]'"
        ) from None
    return jwks


def cmd_generate(args: argparse.Namespace) -> int:
    jwks = _jwks()
    kid = args.kid or jwks.new_kid(args.alg)
    private_path = Path(args.private_key or f"{kid}.private.json")
    router_path = Path(args.jwks)
    try:
        key = jwks.generate_key(args.alg, kid)
        if kid in {k.get("kid") for k in jwks.read_jwks(router_path)["keys"]}:
            raise jwks.KeysFileError(f"{router_path} already holds a key {kid!r}")
        jwks.write_jwks(private_path, {"keys": [key]}, exclusive=True)
        count = jwks.add_public_key(router_path, key)
    except jwks.KeysFileError as e:
        raise CommandFailed(str(e)) from None
    print_json(
        {"kid": kid, "alg": args.alg, "privateKey": str(private_path), "jwks": str(router_path)}
        | {"keys": count}
    )
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    jwks = _jwks()
    try:
        left = jwks.remove_key(Path(args.jwks), args.kid)
    except jwks.KeysFileError as e:
        raise CommandFailed(str(e)) from None
    print_json({"removed": args.kid, "jwks": args.jwks, "keys": left})
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    jwks = _jwks()
    path = Path(args.jwks)
    if not path.exists():
        raise UsageError(f"--jwks: {path} does not exist")
    try:
        keys = jwks.read_jwks(path)["keys"]
    except jwks.KeysFileError as e:
        raise CommandFailed(str(e)) from None
    for key in keys:
        print_json(
            {
                "kid": key.get("kid"),
                "alg": key.get("alg"),
                "kty": key.get("kty"),
                "private": jwks.is_private(key),
            }
        )
    return 0


def add_parser(commands: Any) -> None:
    keys = new_command(
        commands,
        "keys",
        "generate, list and remove signing keys (EdDSA, ES256) for token issuers",
        DOC,
        lambda _args: 2,  # argparse requires an ACTION first
        RawHelpFormatter,
    )
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    generate = new_command(
        actions,
        "generate",
        "a new key pair: the private key for the issuer, the public key into --jwks",
        "Generate a key pair and print"
        ' {"kid": ..., "alg": ..., "privateKey": FILE, "jwks": FILE, "keys": N}.',
        cmd_generate,
    )
    generate.add_argument(
        "--alg",
        choices=("EdDSA", "ES256"),
        required=True,
        help="EdDSA (Ed25519) or ES256 (ECDSA P-256)",
    )
    generate.add_argument(
        "--jwks",
        required=True,
        metavar="FILE",
        help="the router's keys file (its --keys-file): the public key is added (file created"
        " if missing)",
    )
    generate.add_argument(
        "--private-key",
        metavar="FILE",
        help="where the issuer's private key goes, a JWKS of one key; never overwritten"
        " (default: KID.private.json)",
    )
    generate.add_argument(
        "--kid", metavar="KID", help="the key id tokens name (default: ALG-YYYYMMDD-random)"
    )

    remove = new_command(
        actions,
        "remove",
        "drop a key from --jwks (after a rotation)",
        "Remove key KID from the keys file; tokens it signed are refused from then on"
        " (once the server restarts with the file).",
        cmd_remove,
    )
    remove.add_argument("--jwks", required=True, metavar="FILE", help="the router's keys file")
    remove.add_argument("--kid", required=True, metavar="KID", help="the key to remove")

    listing = new_command(
        actions,
        "list",
        "show the keys of a keys file",
        'Print {"kid", "alg", "kty", "private"} for each key of a JWKS file.',
        cmd_list,
    )
    listing.add_argument("--jwks", required=True, metavar="FILE", help="a JWKS file")
