"""The TypeScript client (client/typescript, npm package @eventrouter/client) in the suite.

Its lint (biome), strict types (the build's ``tsc``), its offline tests (the
shared Happy wire fixtures, the in-memory router, the ESM / CommonJS / browser
bundle checks) and its tests against a real server: ``eventrouter serve`` in
the secure default mode, with real JWTs minted here for users of their own,
over gRPC (``@connectrpc/connect-node``'s gRPC transport against the grpc.aio
server, HTTP/2 cleartext). And the payload bytes of every Happy wire case
agree between the Python and the TypeScript codecs, both ways.

The Connect and gRPC-Web transports run the same server tests against the
server's web listener (``eventrouter serve --web-listen``); they would skip,
saying so, only on an ``eventrouter`` without that flag.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from eventrouter.client import from_happy_json, to_happy_json
from eventrouter.server.security.tokens import (
    SERVICE_AUDIENCE,
    SUBSCRIBER_AUDIENCE,
    KeySet,
    generate_hs256_jwks,
)
from eventrouter.v1 import events_pb2
from tests.e2e.cli_helpers import ENV, EVENTROUTER, command, needs_console_script, serve
from tests.e2e.client_helpers import free_port, wait_listening
from tests.polyglot.test_node_conformance import UNMODELLED
from tests.polyglot.typescript import TypeScriptPackage, counts, output

pytestmark = needs_console_script

# Every real-server test has a user of its own (positions and ids do not mix).
TEST_USERS = ("routing", "resume", "refetch", "batch", "duplicate", "auth", "restart")
ROOT = Path(__file__).resolve().parents[2]
HISTORY_MAX_UPDATES = 3  # short, so that the too_old refetch is quick to provoke
WEB_LISTEN_FLAG = "--web-listen"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, KeySet]:
    """A keys file (mode 0600, as the server demands) and the KeySet that signs with it."""
    jwks = generate_hs256_jwks()
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(jwks, f)
    return path, KeySet(jwks)


def _tokens(keys: KeySet, tmp_path: Path) -> Path:
    """The tokens the TypeScript tests read (test/server/harness.ts: Tokens), as a file."""
    run = uuid.uuid4().hex[:8]
    users: dict[str, Any] = {}
    for name in TEST_USERS:
        user = f"ts-{name}-{run}"
        users[name] = {
            "id": user,
            "tokens": {
                "user": keys.mint(user, SUBSCRIBER_AUDIENCE),
                "sessionS1": keys.mint(user, SUBSCRIBER_AUDIENCE, session_id="S1"),
                "sessionS2": keys.mint(user, SUBSCRIBER_AUDIENCE, session_id="S2"),
                "machineM1": keys.mint(user, SUBSCRIBER_AUDIENCE, machine_id="M1"),
                "machineM2": keys.mint(user, SUBSCRIBER_AUDIENCE, machine_id="M2"),
            },
        }
    # The same kid, another secret: a token whose signature does not verify.
    forged = generate_hs256_jwks()
    forged["keys"][0]["kid"] = keys.signing_kid
    tokens = {
        "service": keys.mint("ts-client-tests", SERVICE_AUDIENCE),
        "users": users,
        "expired": keys.mint(
            f"ts-expired-{run}", SUBSCRIBER_AUDIENCE, now=time.time() - 3600, ttl_s=60
        ),
        "badSignature": KeySet(forged).mint(f"ts-forged-{run}", SUBSCRIBER_AUDIENCE),
    }
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(tokens), encoding="utf-8")
    return path


def _has_web_listener() -> bool:
    result = subprocess.run(
        command("serve", "--help"), capture_output=True, text=True, timeout=60, check=False, env=ENV
    )
    return WEB_LISTEN_FLAG in result.stdout


@pytest.fixture
def served(keys: tuple[Path, KeySet], tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """Flags and environment shared by the server runs below."""
    keys_file, _ = keys
    flags = ["--keys-file", str(keys_file), "--log-level", "warning"]
    flags += ["--history-max-updates", str(HISTORY_MAX_UPDATES), "--shutdown-grace-s", "0"]
    return flags, {**ENV, "XDG_STATE_HOME": str(tmp_path / "state")}


def _server_tests(
    package: TypeScriptPackage,
    keys: KeySet,
    keys_file: Path,
    target: str,
    protocol: str,
    tmp_path: Path,
) -> None:
    assert EVENTROUTER is not None
    env = {
        **os.environ,
        "ER_TARGET": target,
        "ER_PROTOCOL": protocol,
        "ER_TOKENS": str(_tokens(keys, tmp_path)),
        "ER_HISTORY_MAX_UPDATES": str(HISTORY_MAX_UPDATES),
        "ER_EVENTROUTER": EVENTROUTER,
        "ER_KEYS_FILE": str(keys_file),
    }
    result = package.node_tests("test/server/*.test.js", env)
    summary = counts(result)
    assert result.returncode == 0, output(result)
    assert summary.get("fail") == 0, output(result)
    assert summary.get("pass", 0) + summary.get("skipped", 0) >= 12, output(result)
    skipped = 1 if protocol != "grpc" else 0  # the restart test runs over gRPC only
    assert summary.get("skipped") == skipped, output(result)


def test_lint_and_strict_types(ts_package: TypeScriptPackage) -> None:
    # `tsc` under `strict` already ran in the fixture's build; biome lints and checks formatting.
    result = ts_package.npm_run("lint")
    assert result.returncode == 0, output(result)


def test_offline_tests(ts_package: TypeScriptPackage) -> None:
    result = ts_package.node_tests("test/*.test.js")
    summary = counts(result)
    assert result.returncode == 0, output(result)
    assert summary.get("fail") == 0, output(result)
    assert summary.get("skipped") == 0, output(result)
    # The 36 fixture cases twice (plus two coverage checks), and the rest.
    assert summary.get("pass", 0) >= 74 + 10, output(result)


def test_against_the_server_over_grpc(
    ts_package: TypeScriptPackage,
    keys: tuple[Path, KeySet],
    served: tuple[list[str], dict[str, str]],
    tmp_path: Path,
) -> None:
    flags, env = served
    keys_file, key_set = keys
    with serve(*flags, env=env) as target:
        _server_tests(ts_package, key_set, keys_file, target, "grpc", tmp_path)


@pytest.mark.parametrize("protocol", ["connect", "grpc-web"])
def test_against_the_web_listener(
    ts_package: TypeScriptPackage,
    keys: tuple[Path, KeySet],
    served: tuple[list[str], dict[str, str]],
    tmp_path: Path,
    protocol: str,
) -> None:
    if not _has_web_listener():
        pytest.skip(
            f"`eventrouter serve` has no {WEB_LISTEN_FLAG} yet (the web listener is separate "
            "work); these tests run by themselves once it has"
        )
    flags, env = served
    keys_file, key_set = keys
    web_port = free_port()
    with serve(*flags, WEB_LISTEN_FLAG, f"127.0.0.1:{web_port}", env=env):
        wait_listening(web_port)
        target = f"http://127.0.0.1:{web_port}"
        _server_tests(ts_package, key_set, keys_file, target, protocol, tmp_path)


# Decode Python's bytes and render them; encode the same JSON: what TypeScript makes of each case.
INTEROP = """
import { readFileSync } from 'node:fs';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  EphemeralPayloadSchema, fromHappyJson, toHappyJson, UpdatePayloadSchema,
} from '@eventrouter/client';
const out = {};
for (const [name, v] of Object.entries(JSON.parse(readFileSync(process.env.ER_VECTORS, 'utf8')))) {
  const schema = v.kind === 'update' ? UpdatePayloadSchema : EphemeralPayloadSchema;
  const rendered = JSON.stringify(toHappyJson(fromBinary(schema, Buffer.from(v.hex, 'hex'))));
  const hex = Buffer.from(toBinary(schema, fromHappyJson(v.json))).toString('hex');
  out[name] = { rendered, hex };
}
console.log(JSON.stringify(out));
"""


def test_payload_bytes_agree_with_python(ts_package: TypeScriptPackage, tmp_path: Path) -> None:
    """Python's protobuf bytes render in TypeScript as the JSON they came from, and back."""
    fixtures = ROOT / "tests" / "fixtures" / "happy-wire"
    cases: dict[str, dict[str, Any]] = {
        f"{name}[{i}]": case["output"]
        for name in ("builders.json", "builders-2026.json")
        for i, case in enumerate(json.loads((fixtures / name).read_text())["cases"])
    }
    cases |= {f"unmodelled[{i}]": event for i, event in enumerate(UNMODELLED)}
    payloads = {name: from_happy_json(event) for name, event in cases.items()}
    vectors = {
        name: {
            "hex": payload.SerializeToString().hex(),
            "kind": "update" if isinstance(payload, events_pb2.UpdatePayload) else "ephemeral",
            "json": cases[name],
        }
        for name, payload in payloads.items()
    }
    path = tmp_path / "vectors.json"
    path.write_text(json.dumps(vectors), encoding="utf-8")
    result = subprocess.run(
        [ts_package.node, "--input-type=module", "-e", INTEROP],
        cwd=ts_package.root,
        env={**os.environ, "ER_VECTORS": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, output(result)
    answers = json.loads(result.stdout)
    assert answers.keys() == cases.keys()
    for name, payload in payloads.items():
        compact = json.dumps(to_happy_json(payload), separators=(",", ":"), ensure_ascii=False)
        assert answers[name]["rendered"] == compact, name
        assert type(payload).FromString(bytes.fromhex(answers[name]["hex"])) == payload, name
