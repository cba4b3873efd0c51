"""Structured logs: json and logfmt lines parse, user ids are hashed when asked,
and neither tokens nor payload contents ever reach a log line.

The formatter tests log through ``logging`` into a buffer; the server tests
run ``python -m eventrouter.server`` as a real process and read its stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from eventrouter.server.config import ServerConfig
from eventrouter.server.ops.logs import UserIdHasher, configure_logging
from eventrouter.server.security.tokens import (
    SERVICE_AUDIENCE,
    SUBSCRIBER_AUDIENCE,
    KeySet,
    generate_hs256_jwks,
)
from eventrouter.v1 import router_service_pb2 as pb
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.support.model import USER, proto_scope, update_request
from tests.support.servers import user_metadata

START_TIMEOUT_S = 30.0
_LOGFMT_PAIR = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?:\s+|$)')


def parse_logfmt(line: str) -> dict[str, str]:
    """A strict logfmt reader: the whole line must be key=value pairs."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(line):
        match = _LOGFMT_PAIR.match(line, pos)
        assert match, f"not logfmt at {pos}: {line!r}"
        key, raw = match.group(1), match.group(2)
        out[key] = json.loads(raw) if raw.startswith('"') else raw
        pos = match.end()
    return out


@contextlib.contextmanager
def captured(**overrides: Any) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of the eventrouter tree whose records go, formatted, into a buffer."""
    logger = logging.getLogger("eventrouter.test_logs")
    buffer = io.StringIO()
    config = ServerConfig(**overrides)
    handler = configure_logging(config, stream=buffer, logger=logger)
    logger.propagate = False
    try:
        yield logger, buffer
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImF1ZCI6InN1YnNjcmliZXIifQ."
    "c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
)


def test_json_lines_carry_context_fields() -> None:
    with captured(log_format="json") as (log, buffer):
        log.info("opened", extra={"connection_id": "c_1", "user_id": "alice", "scope": "user"})
        log.warning("stream of user %r ended after %d events", "bob", 3)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed for connection %s", "c_2")
    records = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert records[0]["msg"] == "opened"
    assert records[0]["level"] == "info"
    assert records[0]["logger"] == "eventrouter.test_logs"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", records[0]["ts"])
    assert (records[0]["connection_id"], records[0]["user_id"], records[0]["scope"]) == (
        "c_1",
        "alice",
        "user",
    )
    # ids passed as "user %r" / "connection %s" arguments become fields too.
    assert records[1]["user_id"] == "bob"
    assert records[1]["msg"] == "stream of user 'bob' ended after 3 events"
    assert records[2]["connection_id"] == "c_2"
    assert "RuntimeError: boom" in records[2]["exc"]


def test_logfmt_lines_parse() -> None:
    with captured(log_format="logfmt") as (log, buffer):
        log.info('a "quoted" message\nwith a newline', extra={"user_id": "a b", "n": 3})
        log.info("plain", extra={"connection_id": "c_9", "empty": ""})
    first, second = (parse_logfmt(line) for line in buffer.getvalue().splitlines())
    assert first["msg"] == 'a "quoted" message\nwith a newline'
    assert first["user_id"] == "a b"
    assert first["n"] == "3"
    assert first["level"] == "info"
    assert second == {
        "ts": second["ts"],
        "level": "info",
        "logger": "eventrouter.test_logs",
        "msg": "plain",
        "connection_id": "c_9",
        "empty": "",
    }


def test_text_is_for_people() -> None:
    with captured(log_format="text") as (log, buffer):
        log.info("listening", extra={"connection_id": "c_1"})
    line = buffer.getvalue().strip()
    assert re.fullmatch(
        r"\S+Z INFO +eventrouter\.test_logs listening {2}connection_id=c_1", line
    ), line


def test_user_ids_are_hashed_when_asked() -> None:
    with captured(log_format="json", hash_user_ids=True) as (log, buffer):
        log.info("opened", extra={"user_id": "alice"})
        log.warning("INSECURE stream: user %r trusted from metadata", "alice")
        log.info("other", extra={"user_id": "bob"})
    text = buffer.getvalue()
    assert "alice" not in text
    assert "bob" not in text
    first, second, third = (json.loads(line) for line in text.splitlines())
    assert re.fullmatch(r"u:[0-9a-f]{16}", first["user_id"])
    # The same id hashes the same in a field and in a message; others differ.
    assert second["user_id"] == first["user_id"]
    assert second["msg"] == f"INSECURE stream: user {first['user_id']!r} trusted from metadata"
    assert third["user_id"] != first["user_id"]


def test_hash_key_file_gives_stable_hashes(tmp_path: Path) -> None:
    key = tmp_path / "hash.key"
    key.write_bytes(os.urandom(32))
    config = ServerConfig(hash_user_ids=True, hash_key_file=str(key))
    first, second = UserIdHasher.from_config(config), UserIdHasher.from_config(config)
    assert first is not None
    assert second is not None
    assert first("alice") == second("alice") != first("bob")
    key.write_bytes(b"short")
    with pytest.raises(ValueError, match=r"hash_key_file: .* holds 5 bytes"):
        UserIdHasher.from_config(config)
    assert UserIdHasher.from_config(ServerConfig()) is None


def test_tokens_are_redacted_whatever_logs_them() -> None:
    with captured(log_format="json") as (log, buffer):
        log.warning("refused %s", TOKEN)
        log.warning("header was Bearer opaque-secret-value", extra={"detail": f"x {TOKEN} y"})
    text = buffer.getvalue()
    assert TOKEN not in text
    assert "opaque-secret-value" not in text
    first, second = (json.loads(line) for line in text.splitlines())
    assert first["msg"] == "refused [redacted]"
    assert second["msg"] == "header was Bearer [redacted]"
    assert second["detail"] == "x [redacted] y"


# -- a real server process ----------------------------------------------------


@dataclass
class ServerProcess:
    process: asyncio.subprocess.Process
    port: int = 0
    lines: list[str] = field(default_factory=list)

    async def stop(self) -> list[str]:
        """SIGTERM, wait for the graceful exit, return every stderr line."""
        self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(START_TIMEOUT_S):
            assert self.process.stderr is not None
            rest = await self.process.stderr.read()
            await self.process.wait()
        self.lines += rest.decode().splitlines()
        assert self.process.returncode == 0, self.lines
        return self.lines


@contextlib.asynccontextmanager
async def server_process(tmp_path: Path, parse: Any, *args: str) -> AsyncIterator[ServerProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTROUTER_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventrouter.server",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "",
        "--log-level",
        "debug",
        *args,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    server = ServerProcess(process)
    try:
        assert process.stderr is not None
        async with asyncio.timeout(START_TIMEOUT_S):
            while not server.port:
                raw = await process.stderr.readline()
                assert raw, f"server exited early: {server.lines}"
                line = raw.decode().rstrip("\n")
                server.lines.append(line)
                found = re.search(r"listening on 127\.0\.0\.1:(\d+)", parse(line)["msg"])
                if found:
                    server.port = int(found.group(1))
        yield server
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_server_json_logs_hash_user_ids_and_leave_out_payloads(tmp_path: Path) -> None:
    user_id = "alice-0f3a9c"
    marker = "PAYLOAD-CONTENT-7d1e"
    async with server_process(
        tmp_path, json.loads, "--insecure", "--log-format", "json", "--hash-user-ids"
    ) as server:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.EventRouterServiceStub(channel)
            call = stub.Subscribe(
                pb.SubscribeRequest(scope=proto_scope(USER)), metadata=user_metadata(user_id)
            )
            await call.read()
            await stub.Emit(update_request(user_id, marker))
            await stub.Disconnect(pb.DisconnectRequest(user_id=user_id))
            call.cancel()
        lines = await server.stop()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    text = "\n".join(lines)
    assert user_id not in text
    assert marker not in text
    opened = [r for r in records if r["msg"] == "stream opened"]
    assert len(opened) == 1
    assert re.fullmatch(r"u:[0-9a-f]{16}", opened[0]["user_id"])
    assert [r["msg"].split(":")[0] for r in records if "INSECURE" in r["msg"]] == ["INSECURE MODE"]
    assert any(r["msg"].startswith("shutting down") for r in records)


async def test_server_logfmt_logs_hold_no_token(tmp_path: Path) -> None:
    jwks = generate_hs256_jwks()
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps(jwks))
    keys_file.chmod(0o600)
    keys = KeySet(jwks)
    subscriber_token = keys.mint("carol", SUBSCRIBER_AUDIENCE)
    service_token = keys.mint("svc", SERVICE_AUDIENCE)
    forged = subscriber_token[:-4] + ("AAAA" if not subscriber_token.endswith("AAAA") else "BBBB")
    garbage = "not-a-jwt-9b2f"
    async with server_process(
        tmp_path, parse_logfmt, "--keys-file", str(keys_file), "--log-format", "logfmt"
    ) as server:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.EventRouterServiceStub(channel)
            request = pb.SubscribeRequest(scope=proto_scope(USER))
            call = stub.Subscribe(
                request, metadata=[("authorization", f"Bearer {subscriber_token}")]
            )
            await call.read()
            await stub.Emit(
                update_request("carol", "c-1"),
                metadata=[("authorization", f"Bearer {service_token}")],
            )
            for bad in (forged, garbage):
                refused = stub.Subscribe(request, metadata=[("authorization", f"Bearer {bad}")])
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await refused.read()
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            await stub.Disconnect(
                pb.DisconnectRequest(user_id="carol"),
                metadata=[("authorization", f"Bearer {service_token}")],
            )
            call.cancel()
        lines = await server.stop()
    for line in lines:
        parse_logfmt(line)
    text = "\n".join(lines)
    for secret in (subscriber_token, service_token, forged, garbage):
        assert secret not in text
    # The signing secret itself never shows either.
    assert jwks["keys"][0]["k"] not in text


@pytest.mark.parametrize(
    ("choice", "loop"), [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")]
)
async def test_server_runs_on_the_event_loop_it_is_told(
    tmp_path: Path, choice: str, loop: str
) -> None:
    # uvloop is in the server extra, so "auto" picks it wherever that is installed.
    async with server_process(
        tmp_path, json.loads, "--insecure", "--log-format", "json", "--event-loop", choice
    ) as server:
        started = next(json.loads(line)["msg"] for line in server.lines if "listening" in line)
        assert started.endswith(f"event loop {loop})"), started
        await server.stop()
