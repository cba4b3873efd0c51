"""The contract, spoken from Node.js: tests/polyglot/conformance.mjs against a real server.

The server runs as a subprocess (``python -m eventrouter.server``) with the
secure default configuration and a temporary keys file; tokens are minted
here.  Besides the live run, the Python side turns the client's cases
(``--dump-cases``) into reference encodings with the generated ``eventrouter.v1``
classes: the Node client must decode them to exactly the cases it wrote
(Python -> Node), and the Python classes must decode the client's own
encodings to the same messages (Node -> Python).  The server forwards payload
bytes untouched, unknown fields included, so without these vectors a field
renumbered in the client's copy of the contract would go unnoticed.

The last two tests break a copy of the contract on the client side only and
check that the conformance run fails and names the field.

``test_unmodelled_happy_json_renders_back_exactly`` sends, through the same
server, Happy JSON the contract does not fully model (new kinds, new keys)
and has a Python subscriber and a Node one (happy_subscriber.mjs) render what
they receive back to Happy's JSON: both must give back exactly what was sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from eventrouter.client import (
    EventRouterClient,
    from_happy_json,
    to_happy_json,
    user_scope,
)
from eventrouter.server.security.tokens import (
    SERVICE_AUDIENCE,
    SUBSCRIBER_AUDIENCE,
    KeySet,
    generate_hs256_jwks,
)
from eventrouter.v1 import router_service_pb2 as pb
from tests.e2e.client_helpers import wait_listening

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "polyglot" / "conformance.mjs"
HAPPY_SUBSCRIBER = ROOT / "tests" / "polyglot" / "happy_subscriber.mjs"
PROTO_ROOT = ROOT / "protos"
SESSION_ID = "S1"
MACHINE_ID = "M1"
NODE_TIMEOUT_S = 30.0
SERVER_START_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class Router:
    """A running server subprocess and the keys its tokens are signed with."""

    target: str
    keys: KeySet
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    def alive() -> None:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()}")

    wait_listening(port, SERVER_START_TIMEOUT_S, alive)


@pytest.fixture(scope="module")
def router(node: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    tmp = tmp_path_factory.mktemp("router")
    jwks = generate_hs256_jwks()
    keys_file = tmp / "keys.json"
    fd = os.open(keys_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(jwks, f)
    log = tmp / "server.log"
    port = _free_port()
    command = [sys.executable, "-m", "eventrouter.server", "--listen", f"127.0.0.1:{port}"]
    command += ["--keys-file", str(keys_file), "--shutdown-grace-s", "0", "--metrics-listen", ""]
    with log.open("wb") as log_file:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_listening(proc, port, log)
        yield Router(f"127.0.0.1:{port}", KeySet(jwks), log)
    finally:
        proc.terminate()  # SIGTERM to this PID: the server drains and exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _client_env(router: Router, proto_root: Path, vectors: Path) -> dict[str, str]:
    """Environment of one conformance run; a fresh user keeps update ids from colliding."""
    user = f"u-{uuid.uuid4().hex[:12]}"
    keys = router.keys
    return {
        **os.environ,
        "ER_TARGET": router.target,
        "ER_USER_ID": user,
        "ER_SESSION_ID": SESSION_ID,
        "ER_MACHINE_ID": MACHINE_ID,
        "ER_TOKEN_USER": keys.mint(user, SUBSCRIBER_AUDIENCE),
        "ER_TOKEN_SESSION": keys.mint(user, SUBSCRIBER_AUDIENCE, session_id=SESSION_ID),
        "ER_TOKEN_MACHINE": keys.mint(user, SUBSCRIBER_AUDIENCE, machine_id=MACHINE_ID),
        "ER_TOKEN_SERVICE": keys.mint("polyglot-conformance", SERVICE_AUDIENCE),
        "PROTO_ROOT": str(proto_root),
        "ER_VECTORS": str(vectors),
    }


def _run_node(node: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node, str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
    )


def _reference_vectors(node: str, proto_root: Path, out: Path) -> list[str]:
    """Write the Python encodings of the client's cases to ``out``.

    Returns the cases whose Node encoding the Python classes decode to
    something other than the case as written (empty when both agree).
    """
    dump = _run_node(node, {**os.environ, "PROTO_ROOT": str(proto_root)}, "--dump-cases")
    assert dump.returncode == 0, dump.stdout + dump.stderr
    cases: list[dict[str, Any]] = json.loads(dump.stdout)["cases"]
    assert len(cases) == 25, [c["name"] for c in cases]
    vectors = {}
    disagreements = []
    for case in cases:
        reference = json_format.ParseDict(case["request"], pb.EmitRequest())
        vectors[case["name"]] = reference.SerializeToString().hex()
        from_node = pb.EmitRequest.FromString(bytes.fromhex(case["node_hex"]))
        # Deterministic re-serialization also compares unknown fields (== does not).
        if from_node.SerializeToString(deterministic=True) != reference.SerializeToString(
            deterministic=True
        ):
            disagreements.append(case["name"])
    out.write_text(json.dumps(vectors), encoding="utf-8")
    return disagreements


def _conformance(
    node: str, router: Router, proto_root: Path, tmp_path: Path
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    vectors = tmp_path / "vectors.json"
    disagreements = _reference_vectors(node, proto_root, vectors)
    env = _client_env(router, proto_root, vectors)
    started = time.monotonic()
    result = _run_node(node, env)
    assert time.monotonic() - started < 25, "the conformance client must bound itself (~20 s)"
    return result, disagreements


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"


def test_node_client_conforms(node: str, router: Router, tmp_path: Path) -> None:
    result, disagreements = _conformance(node, router, PROTO_ROOT, tmp_path)
    if result.returncode != 0:
        pytest.fail(f"{_output(result)}--- server log\n{router.log.read_text()}")
    assert "conformance: OK" in result.stdout
    assert disagreements == [], f"Python decodes Node's encoding differently: {disagreements}"


def _broken_contract(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of protos/ whose events.proto has ``old`` (exactly once) replaced by ``new``."""
    root = tmp_path / "protos"
    shutil.copytree(PROTO_ROOT, root)
    events = root / "eventrouter" / "v1" / "events.proto"
    text = events.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} must occur once in events.proto"
    events.write_text(text.replace(old, new), encoding="utf-8")
    return root


def _mismatches(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("MISMATCH ")]


def test_renamed_field_is_caught(node: str, router: Router, tmp_path: Path) -> None:
    # NewSession.agent_state -> agent_state2, same number: the wire is unchanged,
    # but a client written against the contract sets a field its schema lacks.
    proto_root = _broken_contract(
        tmp_path, "optional string agent_state = 5;", "optional string agent_state2 = 5;"
    )
    result, disagreements = _conformance(node, router, proto_root, tmp_path)
    assert result.returncode == 1, _output(result)
    lines = _mismatches(result)
    assert lines, _output(result)
    assert all("agent_state" in line for line in lines), _output(result)
    assert any(line.startswith("MISMATCH vector[new_session]") for line in lines), _output(result)
    assert any(".new_session.agent_state" in line for line in lines), _output(result)
    assert disagreements == ["new_session"]


def test_renumbered_field_is_caught(node: str, router: Router, tmp_path: Path) -> None:
    # KvChange.version = 3 -> = 9: same names, different wire.  The server passes
    # the payload through byte for byte (unknown fields included), so only the
    # reference vectors can reveal it.
    proto_root = _broken_contract(tmp_path, "int64 version = 3;", "int64 version = 9;")
    result, disagreements = _conformance(node, router, proto_root, tmp_path)
    assert result.returncode == 1, _output(result)
    lines = _mismatches(result)
    assert lines, _output(result)
    assert any(
        line.startswith(
            "MISMATCH vector[kv_batch_update].update.body.kv_batch_update.changes[0].version"
        )
        for line in lines
    ), lines
    assert disagreements == ["kv_batch_update"]


# Happy JSON a Happy server one release ahead of the contract could send.
UNMODELLED: list[dict[str, Any]] = [
    # Kinds the contract does not know: an update and an ephemeral.
    {
        "id": "upd_fc1",
        "seq": 41,
        "body": {
            "t": "archive-session",
            "sid": "S1",
            "by": {"app": "ios", "tags": ["é", 2.5, None, True, {}]},
            "archivedAt": 1764000000000,
        },
        "createdAt": 1764000000001,
    },
    {"type": "typing", "sessionId": "S1", "users": ["u1"], "until": 1764000000002},
    # A known kind with a key it does not model: the repeatKey Happy's app requires.
    {
        "id": "upd_fc2",
        "seq": 42,
        "body": {
            "t": "new-feed-post",
            "id": "feed_1",
            "body": {"kind": "text", "text": "hi"},
            "cursor": "0-1",
            "createdAt": 1764000000003,
            "repeatKey": None,
        },
        "createdAt": 1764000000004,
    },
    # A new key between known ones, and one on the update container.
    {
        "id": "upd_fc3",
        "seq": 43,
        "body": {"t": "delete-machine", "reason": "user", "machineId": "M1"},
        "createdAt": 1764000000005,
        "traceId": "tr_1",
    },
    # A 2026 kind with one more key.
    {
        "type": "session-event",
        "sessionId": "S1",
        "kind": "permission",
        "title": "Permission request",
        "body": "Session",
        "timestamp": 1764000000006,
        "priority": 2,
    },
]


async def test_unmodelled_happy_json_renders_back_exactly(node: str, router: Router) -> None:
    user = f"u-{uuid.uuid4().hex[:12]}"
    user_token = router.keys.mint(user, SUBSCRIBER_AUDIENCE)
    env = {
        **os.environ,
        "ER_TARGET": router.target,
        "ER_TOKEN_USER": user_token,
        "ER_COUNT": str(len(UNMODELLED)),
        "PROTO_ROOT": str(PROTO_ROOT),
    }
    proc = await asyncio.create_subprocess_exec(
        node,
        str(HAPPY_SUBSCRIBER),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    service = EventRouterClient(router.target, token=router.keys.mint("fc", SERVICE_AUDIENCE))
    try:
        async with asyncio.timeout(NODE_TIMEOUT_S):
            first = await proc.stdout.readline()  # the Node stream is open: emit after it
            assert first.startswith(b'{"opened":'), first + await proc.stderr.read()  # type: ignore[union-attr]
            async with service, service.subscribe(user_scope(), token=user_token) as python_sub:
                for event in UNMODELLED:
                    payload = from_happy_json(event)
                    if "type" in event:
                        await service.emit_ephemeral(user, payload)  # type: ignore[arg-type]
                    else:
                        await service.emit_update(user, payload)  # type: ignore[arg-type]
                received = python_sub.payloads()
                python_lines = [
                    json.dumps(to_happy_json(await anext(received))) for _ in UNMODELLED
                ]
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # Python: the same JSON text, key order and all.
    assert python_lines == [json.dumps(event) for event in UNMODELLED]
    # Node: JSON.stringify of its rendering is the sent JSON, written compactly.
    assert proc.returncode == 0, err.decode()
    compact = [json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in UNMODELLED]
    assert out.decode().splitlines() == compact, err.decode()
