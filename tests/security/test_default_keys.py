"""The secure default: a generated secret file, `eventrouter token`, and the --insecure mode."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import stat
import sys
from pathlib import Path

import grpc
import pytest

from eventrouter.server import RouterServer, ServerConfig
from eventrouter.server.security.tokens import SUBSCRIBER_AUDIENCE, KeySet
from eventrouter.v1 import router_service_pb2 as pb
from tests.security.helpers import (
    Keys,
    bearer,
    connect,
    expect_markers,
    machine_scope,
    marker_emit,
    no_fixed_ports,
    open_stream,
    secure_server,
    subscribe_error,
    user_scope,
)
from tests.support.servers import running_server, user_metadata

CONSOLE_SCRIPT = Path(sys.executable).parent / "eventrouter"
# Fallback while `eventrouter token` is not wired into the console script.
RUN_TOKEN = (
    "import argparse, sys\n"
    "from eventrouter.server.security.token_cli import add_token_arguments, run_token\n"
    "parser = argparse.ArgumentParser(prog='eventrouter token')\n"
    "add_token_arguments(parser)\n"
    "sys.exit(run_token(parser.parse_args(sys.argv[1:])))\n"
)
SUBPROCESS_TIMEOUT_S = 30.0


async def _run(*argv: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(SUBPROCESS_TIMEOUT_S):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.communicate()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


_token_wired: bool | None = None


async def eventrouter_token(*args: str) -> tuple[int, str, str]:
    """``eventrouter token ARGS`` (console script, or token_cli.run_token if not wired yet)."""
    global _token_wired
    if _token_wired is None:
        code, _, _ = await _run(str(CONSOLE_SCRIPT), "token", "--help")
        _token_wired = code == 0
    if _token_wired:
        return await _run(str(CONSOLE_SCRIPT), "token", *args)
    return await _run(sys.executable, "-c", RUN_TOKEN, *args)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _assert_generated_keyset(path: Path) -> None:
    assert _mode(path) == 0o600
    document = json.loads(path.read_text())
    (key,) = document["keys"]
    assert (key["kty"], key["alg"]) == ("oct", "HS256")
    assert key["kid"]
    secret = base64.urlsafe_b64decode(key["k"] + "=" * (-len(key["k"]) % 4))
    assert len(secret) == 32
    KeySet(document)  # the server's own loader accepts it


async def test_first_start_generates_a_private_secret_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eventrouter.server")
    path = tmp_path / "state" / "eventrouter" / "signing-keys.json"
    assert not path.parent.exists()
    async with secure_server(path) as server, connect(server) as stub:
        _assert_generated_keyset(path)
        assert _mode(path.parent) & 0o077 == 0
        assert any("generated a new signing secret" in r.getMessage() for r in caplog.records)
        assert not any("INSECURE" in r.getMessage() for r in caplog.records)
        token = KeySet.load(path).mint("alice", SUBSCRIBER_AUDIENCE)
        stream = await open_stream(stub, token)
        assert stream.opened.user_id == "alice"
        stream.cancel()
        # Nothing else gets in: the secret is random, not some fixed default.
        assert (await subscribe_error(stub, Keys().user("alice"))).code() == (
            grpc.StatusCode.UNAUTHENTICATED
        )
    content = path.read_text()
    # A restart keeps the file, so tokens minted earlier stay valid.
    async with secure_server(path) as server, connect(server) as stub:
        assert path.read_text() == content
        (await open_stream(stub, token)).cancel()


async def test_default_path_is_under_xdg_state_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    config = ServerConfig(listen="127.0.0.1:0", **no_fixed_ports())
    assert not config.insecure  # the default is secure
    server = RouterServer(config)
    await server.start()
    try:
        _assert_generated_keyset(tmp_path / "xdg" / "eventrouter" / "signing-keys.json")
    finally:
        await server.stop(grace_s=0)


async def test_token_command_mints_tokens_the_server_accepts(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "keys.json"
    # The command creates the file when it is missing, as the server would.
    code, user_token, err = await eventrouter_token("--user", "carol", "--keys-file", str(path))
    assert code == 0, err
    assert "created a new signing secret" in err
    _assert_generated_keyset(path)
    code, service_token, err = await eventrouter_token("--service", "--keys-file", str(path))
    assert code == 0, err
    code, machine_token, err = await eventrouter_token(
        "--user", "carol", "--machine", "m1", "--keys-file", str(path)
    )
    assert code == 0, err
    code, _, err = await eventrouter_token("--service", "--machine", "m1", "--keys-file", str(path))
    assert code == 2
    assert "--session/--machine" in err

    async with secure_server(path) as server, connect(server) as stub:
        stream = await open_stream(stub, user_token.strip())
        assert stream.opened.user_id == "carol"
        daemon = await open_stream(stub, machine_token.strip(), machine_scope("m1"))
        refused = await subscribe_error(stub, machine_token.strip(), user_scope())
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        sent = await stub.Emit(
            marker_emit("carol", "hello"), metadata=bearer(service_token.strip())
        )
        assert sent.reached == 2
        await expect_markers(stream, ["hello"])
        await expect_markers(daemon, ["hello"])
        # A user token from the same file cannot emit.
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.Emit(marker_emit("carol", "x"), metadata=bearer(user_token.strip()))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        stream.cancel()
        daemon.cancel()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_keys_file_readable_by_others_is_refused(keys: Keys, tmp_path: Path, mode: int) -> None:
    path = keys.write(tmp_path / "keys.json")
    path.chmod(mode)
    with pytest.raises(ValueError, match=r"readable by others: chmod 600") as refused:
        RouterServer(ServerConfig(listen="127.0.0.1:0", keys_file=str(path)))
    assert str(path) in str(refused.value)


async def test_serve_refuses_readable_keys_file_with_its_message(
    keys: Keys, tmp_path: Path
) -> None:
    path = keys.write(tmp_path / "keys.json")
    path.chmod(0o644)
    code, _, err = await _run(
        str(CONSOLE_SCRIPT), "serve", "--keys-file", str(path), "--listen", "127.0.0.1:0"
    )
    assert code != 0
    assert "chmod 600" in err


async def test_serve_refuses_readable_keys_file_without_a_traceback(
    keys: Keys, tmp_path: Path
) -> None:
    path = keys.write(tmp_path / "keys.json")
    path.chmod(0o644)
    code, _, err = await _run(
        str(CONSOLE_SCRIPT), "serve", "--keys-file", str(path), "--listen", "127.0.0.1:0"
    )
    assert code != 0
    assert "Traceback" not in err, err


def test_insecure_mode_cannot_be_combined_with_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="insecure"):
        ServerConfig(insecure=True, keys_file=str(tmp_path / "k.json"))
    with pytest.raises(ValueError, match="insecure"):
        ServerConfig(insecure=True, revoked_token_ids="t1")


async def test_insecure_mode_warns_once_at_start_not_per_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="eventrouter.server")
    async with running_server(insecure=True, **no_fixed_ports()) as server, connect(server) as stub:
        streams = []
        for user in ("u1", "u2", "u1", "u3", "u1"):
            call = stub.Subscribe(
                pb.SubscribeRequest(scope=user_scope()), metadata=user_metadata(user)
            )
            first = await call.read()
            assert first.events[0].opened.user_id == user
            streams.append(call)
        insecure = [r for r in caplog.records if "INSECURE" in r.getMessage()]
        assert [(r.levelno, r.getMessage().split(":")[0]) for r in insecure] == [
            (logging.WARNING, "INSECURE MODE")
        ]
        # Anyone may emit: no credential at all.
        sent = await stub.Emit(marker_emit("u1", "m"))
        assert sent.reached == 3
        for call in streams:
            call.cancel()
