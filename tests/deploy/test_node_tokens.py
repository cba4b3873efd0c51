"""docs/deploy.md's Node service, run as written: jose mints, the router verifies.

The reader saves ``tokens.mjs`` and ``emit.mjs`` in a folder where ``npm i
jose @grpc/grpc-js @grpc/proto-loader`` ran; here the folder is a temporary
one whose ``node_modules`` links to the repository's, which holds all three
(``make node-deps``). The keys come from ``eventrouter keys generate`` (EdDSA
and ES256), the server is ``eventrouter serve`` with TLS and only the public
keys file, and the subscriber is the Python client with a token the Node
script minted. Then what the router must refuse: a key it does not list, the
wrong audience either way, an expired token, a scope the token excludes.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from eventrouter.client import (
    EventRouterClient,
    EventRouterError,
    build_delete_session_update,
    session_scope,
    user_scope,
)
from eventrouter.v1 import routing_pb2 as rt
from tests.conftest import require_tool
from tests.e2e.cli_helpers import ENV, needs_console_script, run, serve
from tests.support.nodejs import TIMEOUT_S, node_emit_reaches
from tests.support.pki import Authority
from tests.support.readme import DEPLOY, examples

pytestmark = needs_console_script

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Issuer:
    folder: Path  # the reader's happy-demo folder
    env: dict[str, str]  # SIGNING_KEY_FILE and what emit.mjs reads
    node: str

    @property
    def signing_key(self) -> dict[str, str]:
        jwk: dict[str, str] = json.loads(Path(self.env["SIGNING_KEY_FILE"]).read_text())["keys"][0]
        return jwk

    def js(self, expression: str) -> str:
        """Evaluate an expression over tokens.mjs' exports in Node; its printed value."""
        code = f"import * as t from './tokens.mjs'; console.log(await {expression});"
        result = self.script("--input-type=module", "-e", code)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def script(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.node, *args],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    require_tool(path is not None, "node (Node.js)")
    for package in ("jose", "@grpc/grpc-js", "@grpc/proto-loader"):
        require_tool(
            (ROOT / "node_modules" / package / "package.json").exists(),
            f"node_modules/{package} (run `make node-deps`)",
        )
    assert path is not None
    return path


def _keys(tmp_path: Path, alg: str, jwks: str, private: str) -> None:
    made = run("keys", "generate", "--alg", alg, "--jwks", str(tmp_path / jwks),
               "--private-key", str(tmp_path / private))  # fmt: skip
    assert made.returncode == 0, made.stderr


@pytest.fixture(params=["EdDSA", "ES256"])
def deployment(request: pytest.FixtureRequest, node: str, tmp_path: Path) -> Iterator[Issuer]:
    """A TLS node verifying with router-keys.json, and the Node issuer's folder."""
    _keys(tmp_path, request.param, "router-keys.json", "happy-signing-key.json")
    folder = tmp_path / "happy-demo"
    folder.mkdir()
    (folder / "node_modules").symlink_to(ROOT / "node_modules", target_is_directory=True)
    for name, example in examples(DEPLOY, "deploy").items():
        (folder / f"{name}.mjs").write_text(example.code)
    ca = Authority()
    server = ca.issue("localhost", server=True)
    for name, pem in (("ca.pem", ca.pem), ("server.pem", server.cert)):
        (tmp_path / name).write_bytes(pem)
    (tmp_path / "server-key.pem").write_bytes(server.key)
    (tmp_path / "server-key.pem").chmod(0o600)
    flags = [f"--keys-file={tmp_path / 'router-keys.json'}"]
    flags += [f"--tls-cert={tmp_path / 'server.pem'}", f"--tls-key={tmp_path / 'server-key.pem'}"]
    env = {**ENV, "XDG_STATE_HOME": str(tmp_path / "state")}
    with serve(*flags, "--log-level", "warning", env=env, tls_ca=ca.pem) as target:
        yield Issuer(
            folder,
            {
                **env,
                "SIGNING_KEY_FILE": str(tmp_path / "happy-signing-key.json"),
                "EVENTROUTER_PROTOS": str(ROOT / "protos"),
                "TLS_CA_FILE": str(tmp_path / "ca.pem"),
                "EVENTROUTER_TARGET": "localhost:" + target.rsplit(":", 1)[1],
            },
            node,
        )


def _client(issuer: Issuer, token: str) -> EventRouterClient:
    ca = Path(issuer.env["TLS_CA_FILE"]).read_bytes()
    return EventRouterClient(
        issuer.env["EVENTROUTER_TARGET"],
        token=token,
        channel_credentials=grpc.ssl_channel_credentials(ca),
        timeout=10,
    )


async def _subscribe_error(
    issuer: Issuer, token: str, scope: rt.ConnectionScope | None = None
) -> EventRouterError:
    async with _client(issuer, token) as client:
        with pytest.raises(EventRouterError) as refused:
            async with client.subscribe(scope or user_scope(), reconnect=False) as stream:
                await anext(stream)
    return refused.value


async def test_node_mints_emits_and_alice_receives(deployment: Issuer) -> None:
    minted = deployment.script("tokens.mjs", "subscriber", "alice")
    assert minted.returncode == 0, minted.stderr
    async with (
        _client(deployment, minted.stdout.strip()) as client,
        client.subscribe(user_scope()) as alice,
    ):
        event = await node_emit_reaches(deployment.node, deployment.folder, deployment.env, alice)
    assert event.payload.body.delete_session.session_id == "sess_1"


async def test_the_tokens_carry_what_the_router_reads(deployment: Issuer) -> None:
    token = deployment.js("t.subscriberToken('alice', { sessionId: 'sess_1', ttlSeconds: 60 })")
    header, claims = (json.loads(base64.urlsafe_b64decode(f"{p}==")) for p in token.split(".")[:2])
    signing = deployment.signing_key
    assert header == {"alg": signing["alg"], "kid": signing["kid"], "typ": "JWT"}
    assert claims["aud"] == "eventrouter:subscriber"
    assert claims["sub"] == "alice"
    assert claims["session_id"] == "sess_1"
    assert claims["exp"] - claims["iat"] == 60
    assert claims["jti"]
    # The session viewer's token opens that session's scope, and only that one.
    async with _client(deployment, token) as client, client.subscribe(session_scope("sess_1")):
        pass
    other = await _subscribe_error(deployment, token, session_scope("sess_2"))
    assert other.code == grpc.StatusCode.PERMISSION_DENIED


async def test_a_key_the_router_does_not_list_is_refused(
    deployment: Issuer, tmp_path: Path
) -> None:
    _keys(tmp_path, "EdDSA", "elsewhere.json", "stranger.json")
    stranger = {**deployment.env, "SIGNING_KEY_FILE": str(tmp_path / "stranger.json")}
    foreign = Issuer(deployment.folder, stranger, deployment.node)
    refused = await _subscribe_error(deployment, foreign.js("t.subscriberToken('alice')"))
    assert refused.code == grpc.StatusCode.UNAUTHENTICATED
    assert "unknown key" in refused.details
    emitted = foreign.script("emit.mjs")
    assert emitted.returncode == 1
    assert "UNAUTHENTICATED" in emitted.stdout


async def test_the_wrong_audience_is_refused_either_way(deployment: Issuer) -> None:
    service = deployment.js("t.serviceToken()")
    refused = await _subscribe_error(deployment, service)
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED
    assert "audience" in refused.details
    subscriber = deployment.js("t.subscriberToken('alice')")
    update = build_delete_session_update("sess_1", 1, "upd_wrong_aud", now_ms=1764000000000)
    async with _client(deployment, subscriber) as client:
        with pytest.raises(EventRouterError) as emit:
            await client.emit_update("alice", update)
    assert emit.value.code == grpc.StatusCode.PERMISSION_DENIED


async def test_an_expired_token_is_refused(deployment: Issuer) -> None:
    expired = deployment.js("t.subscriberToken('alice', { ttlSeconds: -60 })")
    refused = await _subscribe_error(deployment, expired)
    assert refused.code == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in refused.details
