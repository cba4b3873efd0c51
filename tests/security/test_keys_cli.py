"""``eventrouter keys``: key pairs the server accepts, files it accepts, rotation by kid."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import grpc
import pytest

from eventrouter.server.security.tokens import (
    SERVICE_AUDIENCE,
    SUBSCRIBER_AUDIENCE,
    KeySet,
    TokenError,
)
from tests.e2e.cli_helpers import needs_console_script, run
from tests.security.helpers import connect, open_stream, secure_server, subscribe_error

pytestmark = needs_console_script


def keys(*args: str) -> dict[str, Any]:
    result = run("keys", *args)
    assert result.returncode == 0, result.stderr
    line: dict[str, Any] = json.loads(result.stdout)
    return line


def generate(tmp_path: Path, alg: str, private: str, *extra: str) -> dict[str, Any]:
    return keys(
        "generate",
        "--alg",
        alg,
        "--jwks",
        str(tmp_path / "router.json"),
        "--private-key",
        str(tmp_path / private),
        *extra,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_generate_writes_a_private_key_and_a_public_jwks(tmp_path: Path, alg: str) -> None:
    made = generate(tmp_path, alg, "issuer.json")
    router, issuer = tmp_path / "router.json", tmp_path / "issuer.json"
    assert made["alg"] == alg
    assert made["keys"] == 1
    assert mode(router) == mode(issuer) == 0o600  # what the server demands of --keys-file
    (public,) = json.loads(router.read_text())["keys"]
    (private,) = json.loads(issuer.read_text())["keys"]
    assert public["kid"] == private["kid"] == made["kid"]
    assert public["alg"] == private["alg"] == alg
    assert "d" in private
    assert "d" not in public
    # The issuer's key signs what the router's file verifies; the router's cannot sign.
    token = KeySet.load(issuer).mint("alice", SUBSCRIBER_AUDIENCE)
    assert KeySet.load(router).verify(token, SUBSCRIBER_AUDIENCE).subject == "alice"
    assert KeySet.load(router).signing_kid is None


def test_rotation_adds_then_removes_by_kid(tmp_path: Path) -> None:
    old = generate(tmp_path, "EdDSA", "old.json")
    new = generate(tmp_path, "ES256", "new.json", "--kid", "es-2")
    assert new == new | {"kid": "es-2", "keys": 2}
    router = tmp_path / "router.json"
    old_token = KeySet.load(tmp_path / "old.json").mint("happy", SERVICE_AUDIENCE)
    new_token = KeySet.load(tmp_path / "new.json").mint("happy", SERVICE_AUDIENCE)
    assert KeySet.load(router).verify(old_token, SERVICE_AUDIENCE).subject == "happy"

    removed = keys("remove", "--jwks", str(router), "--kid", old["kid"])
    assert removed["keys"] == 1
    assert mode(router) == 0o600
    assert KeySet.load(router).verify(new_token, SERVICE_AUDIENCE).subject == "happy"
    with pytest.raises(TokenError, match="unknown key"):
        KeySet.load(router).verify(old_token, SERVICE_AUDIENCE)
    listed = run("keys", "list", "--jwks", str(router)).stdout.splitlines()
    assert [json.loads(line) for line in listed] == [
        {"kid": "es-2", "alg": "ES256", "kty": "EC", "private": False}
    ]


def test_refusals_name_the_problem_and_change_nothing(tmp_path: Path) -> None:
    made = generate(tmp_path, "EdDSA", "issuer.json")
    router = tmp_path / "router.json"
    before = router.read_text()
    again = run(
        "keys", "generate", "--alg", "EdDSA", "--jwks", str(router),
        "--private-key", str(tmp_path / "issuer.json"),
    )  # fmt: skip
    assert again.returncode == 1
    assert "exists; a private key is never overwritten" in again.stderr
    clash = run("keys", "generate", "--alg", "ES256", "--jwks", str(router), "--kid", made["kid"])
    assert clash.returncode == 1
    assert f"already holds a key '{made['kid']}'" in clash.stderr
    last = run("keys", "remove", "--jwks", str(router), "--kid", made["kid"])
    assert last.returncode == 1
    assert "the last key" in last.stderr
    assert router.read_text() == before
    assert run("keys", "generate", "--alg", "RS256", "--jwks", str(router)).returncode == 2


async def test_a_server_started_with_the_public_jwks_accepts_the_issuers_tokens(
    tmp_path: Path,
) -> None:
    generate(tmp_path, "EdDSA", "issuer.json")
    stranger = keys(
        "generate", "--alg", "EdDSA", "--jwks", str(tmp_path / "elsewhere.json"),
        "--private-key", str(tmp_path / "stranger.json")
    )  # fmt: skip
    token = run("token", "--keys-file", str(tmp_path / "issuer.json"), "--user", "alice")
    assert token.returncode == 0, token.stderr
    forged = KeySet.load(tmp_path / "stranger.json").mint("alice", SUBSCRIBER_AUDIENCE)
    async with secure_server(tmp_path / "router.json") as server, connect(server) as stub:
        stream = await open_stream(stub, token.stdout.strip())
        assert stream.opened.user_id == "alice"
        error = await subscribe_error(stub, forged)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "unknown key" in (error.details() or "")
    assert stranger["kid"] not in (tmp_path / "router.json").read_text()
