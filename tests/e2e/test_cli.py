"""The ``eventrouter`` console script, run as real processes against a real server process."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from eventrouter.client._blocking import BlockingEventRouterClient
from eventrouter.client._builders import build_delete_session_update
from eventrouter.client._happy_json import to_happy_json
from tests.e2e.client_helpers import free_port

_BESIDE_PYTHON = Path(sys.executable).parent / "eventrouter"
EVENTROUTER = str(_BESIDE_PYTHON) if _BESIDE_PYTHON.exists() else shutil.which("eventrouter")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
ENV.pop("EVENTROUTER_TARGET", None)
ENV.pop("EVENTROUTER_TOKEN", None)

pytestmark = pytest.mark.skipif(EVENTROUTER is None, reason="console script not installed")


def command(*args: str) -> list[str]:
    assert EVENTROUTER is not None
    return [EVENTROUTER, *args]


def stop(process: subprocess.Popen[Any], lines: Lines | None = None) -> None:
    """Terminate a process we started (by its PID), reap it and close its pipes."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    if lines is not None:
        lines.join()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


class Lines:
    """A process's stdout, read line by line on a thread so that reads can time out."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        self._thread = threading.Thread(target=self._pump, args=(process.stdout,), daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Wait for end of file (the process has exited) so that the pipe can be closed."""
        self._thread.join(timeout=10)

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def next_json(self, timeout: float = 10.0) -> Any:
        line = self._lines.get(timeout=timeout)
        assert line is not None, "the process closed its stdout"
        return json.loads(line)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``eventrouter serve --insecure`` on a free port, as its own process."""
    address = f"127.0.0.1:{free_port()}"
    log = tmp_path_factory.mktemp("serve") / "stderr.log"
    with open(log, "wb") as stderr:
        server = subprocess.Popen(
            command("serve", "--insecure", "--listen", address, "--log-level", "warning"),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=ENV,
        )
    try:
        with grpc.insecure_channel(address) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=20)
            except grpc.FutureTimeoutError:
                pytest.fail(f"server did not start: {log.read_text()}")
        yield address
    finally:
        stop(server)


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args), input=stdin, capture_output=True, text=True, env=ENV, timeout=30
    )


def subscriber(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command("subscribe", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=ENV,
    )


def connection_ids(target: str, user: str) -> list[str]:
    with BlockingEventRouterClient(target) as client:
        return [c.connection_id for c in client.get_connections(user)]


def test_subscribe_emit_connections_and_sigkill(target: str) -> None:
    sub = subscriber("--user", "u1", "--session", "s1", "--target", target)
    raw = subscriber("--user", "u1", "--format", "proto-json", "--target", target)
    lines, raw_lines = Lines(sub), Lines(raw)
    try:
        opened = lines.next_json()["opened"]
        assert opened["userId"] == "u1"
        assert opened["scope"] == {"session": {"sessionId": "s1"}}
        assert opened["resume"] == "not_requested"
        connection_id = opened["connectionId"]
        raw_opened = raw_lines.next_json()["opened"]

        update = to_happy_json(build_delete_session_update("s1", 7, "upd-cli-1", now_ms=1000))
        emitted = run(
            "emit", "--user", "u1", "--json", json.dumps(update), "--session-filter", "s1",
            "--target", target,
        )  # fmt: skip
        assert emitted.returncode == 0, emitted.stderr
        response = json.loads(emitted.stdout)
        assert response["reached"] == 2
        assert response["duplicate"] is False
        assert response["position"]["offset"] == 1

        line = lines.next_json()
        assert line == {"update": update, "position": response["position"]}
        raw_line = raw_lines.next_json()
        assert raw_line["update"]["payload"]["id"] == "upd-cli-1"
        assert raw_line["update"]["position"]["offset"] == "1"

        activity = {"type": "machine-status", "machineId": "m1", "online": True, "timestamp": 5}
        emitted = run(
            "emit", "--user", "u1", "--json", "-", "--skip", raw_opened["connectionId"],
            "--target", target, stdin=json.dumps(activity),
        )  # fmt: skip
        assert emitted.returncode == 0, emitted.stderr
        assert json.loads(emitted.stdout) == {"reached": 1, "duplicate": False}
        assert lines.next_json() == {"ephemeral": activity}

        listed = run("connections", "u1", "--target", target)
        assert listed.returncode == 0, listed.stderr
        ids = [c["connectionId"] for c in json.loads(listed.stdout)["connections"]]
        assert sorted(ids) == sorted([connection_id, raw_opened["connectionId"]])

        # A subscriber that dies without a word leaves the router's registry.
        sub.send_signal(signal.SIGKILL)
        sub.wait(timeout=10)
        deadline = time.monotonic() + 10
        while connection_id in connection_ids(target, "u1"):
            assert time.monotonic() < deadline, "the killed subscriber's connection stayed"
            time.sleep(0.02)
        assert connection_ids(target, "u1") == [raw_opened["connectionId"]]
    finally:
        stop(sub, lines)
        stop(raw, raw_lines)


def test_proto_json_emit_and_resume(target: str) -> None:
    body = (
        '{"userId": "u2", "update": {"id": "p-1", "body": {"deleteSession": {"sessionId": "s"}}}}'
    )
    emitted = run("emit", "--proto-json", body, "--target", target)
    assert emitted.returncode == 0, emitted.stderr
    position = json.loads(emitted.stdout)["position"]

    # Resume from before the update: it is replayed first.
    sub = subscriber(
        "--user", "u2", "--resume-offset", "0", "--resume-epoch", position["epoch"],
        "--target", target,
    )  # fmt: skip
    lines = Lines(sub)
    try:
        opened = lines.next_json()["opened"]
        assert opened["resume"] == "resumed"
        assert opened["replayed"] == 1
        line = lines.next_json()
        assert line["update"]["id"] == "p-1"
        assert line["position"] == position
    finally:
        stop(sub, lines)


def test_help_for_every_command() -> None:
    commands = [(), ("serve",), ("subscribe",), ("emit",), ("connections",)]
    processes = [
        subprocess.Popen(
            command(*c, "--help"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for c in commands
    ]
    try:
        outputs = {}
        for c, process in zip(commands, processes, strict=True):
            out, err = process.communicate(timeout=30)
            assert process.returncode == 0, err
            assert out.startswith("usage: eventrouter"), (c, out)
            outputs[c[:1]] = out
        assert "--listen" in outputs[("serve",)]
        assert "--insecure" in outputs[("serve",)]
        assert "--resume-epoch" in outputs[("subscribe",)]
        assert '{"update":' in outputs[("subscribe",)]
        assert "--machine-only" in outputs[("emit",)]
        assert "USER" in outputs[("connections",)]
    finally:
        for process in processes:
            stop(process)


def test_usage_and_rpc_errors(target: str) -> None:
    bad_flag = run("emit", "--bogus")
    assert bad_flag.returncode == 2
    assert "usage:" in bad_flag.stderr
    no_user = run("subscribe", "--target", target)
    assert no_user.returncode == 2
    bad_json = run("emit", "--user", "u3", "--json", "{not json", "--target", target)
    assert bad_json.returncode == 2
    assert "--json" in bad_json.stderr
    not_happy = run("emit", "--user", "u3", "--json", '{"t": "nope"}', "--target", target)
    assert not_happy.returncode == 2

    update = json.dumps(to_happy_json(build_delete_session_update("s1", 1, "x", now_ms=1)))
    rejected = run(
        "emit", "--user", "u3", "--json", update, "--session-filter", "has space",
        "--target", target,
    )  # fmt: skip
    assert rejected.returncode == 1
    assert "INVALID_ARGUMENT" in rejected.stderr
    assert "recipient_filter.all_interested_in_session.session_id" in rejected.stderr
