"""``eventrouter token``: mint tokens from the server's keys file.

The embedded default keeps a random secret in a file only its owner can
read; this command signs with the same file, so the README walk-through
works without any key management.  Issuers in production (Happy Server)
sign their own tokens with a key the router's keys file trusts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eventrouter.server.security.tokens import (
    DEFAULT_TTL_S,
    SERVICE_AUDIENCE,
    SUBSCRIBER_AUDIENCE,
    KeySet,
    default_keys_path,
    ensure_keys_file,
)


def add_token_arguments(parser: argparse.ArgumentParser) -> None:
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", metavar="USER", help="mint a subscriber token for this user id")
    who.add_argument(
        "--service",
        nargs="?",
        const="cli",
        metavar="NAME",
        help="mint a service token (Emit, GetConnections, Disconnect); NAME defaults to 'cli'",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--session", metavar="S", help="restrict the user token to session S's viewer scope"
    )
    scope.add_argument(
        "--machine", metavar="M", help="restrict the user token to machine M's daemon scope"
    )
    parser.add_argument(
        "--ttl-s",
        type=int,
        default=DEFAULT_TTL_S,
        metavar="SECONDS",
        help=f"lifetime (default: {DEFAULT_TTL_S})",
    )
    parser.add_argument(
        "--keys-file",
        default="",
        metavar="FILE",
        help=f"JWKS keys file (default: {default_keys_path()}; created if missing)",
    )


def run_token(args: argparse.Namespace) -> int:
    """Print one token on stdout; returns the exit code."""
    if args.service is not None and (args.session or args.machine):
        print("eventrouter token: --session/--machine apply to --user tokens", file=sys.stderr)
        return 2
    if args.ttl_s <= 0:
        print("eventrouter token: --ttl-s must be positive", file=sys.stderr)
        return 2
    path = Path(args.keys_file) if args.keys_file else default_keys_path()
    if ensure_keys_file(path):
        print(f"eventrouter token: created a new signing secret in {path}", file=sys.stderr)
    try:
        keys = KeySet.load(path)
        if args.user is not None:
            token = keys.mint(
                args.user,
                SUBSCRIBER_AUDIENCE,
                ttl_s=args.ttl_s,
                session_id=args.session,
                machine_id=args.machine,
            )
        else:
            token = keys.mint(args.service, SERVICE_AUDIENCE, ttl_s=args.ttl_s)
    except ValueError as e:
        print(f"eventrouter token: {e}", file=sys.stderr)
        return 1
    print(token)
    return 0
