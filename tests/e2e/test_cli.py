"""The ``eventrouter`` console script, run as real processes against a real server process."""

from __future__ import annotations

import importlib.metadata
import json
import re
import signal
import subprocess
import time
import tomllib
from pathlib import Path

from eventrouter.client._blocking import BlockingEventRouterClient
from eventrouter.client._builders import build_delete_session_update
from eventrouter.client._happy_json import to_happy_json
from tests.e2e.cli_helpers import (
    ENV,
    Lines,
    command,
    needs_console_script,
    run,
    stop,
    subscriber,
)

ROOT = Path(__file__).resolve().parents[2]

pytestmark = needs_console_script


def connection_ids(target: str, user: str) -> list[str]:
    with BlockingEventRouterClient(target) as client:
        return [c.connection_id for c in client.get_connections(user)]


def test_subscribe_emit_connections_and_sigkill(cli_target: str) -> None:
    sub = subscriber("--user", "u1", "--session", "s1", "--target", cli_target)
    raw = subscriber("--user", "u1", "--format", "proto-json", "--target", cli_target)
    lines, raw_lines = Lines(sub.stdout), Lines(raw.stdout)
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
            "--target", cli_target,
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
            "--target", cli_target, stdin=json.dumps(activity),
        )  # fmt: skip
        assert emitted.returncode == 0, emitted.stderr
        assert json.loads(emitted.stdout) == {"reached": 1, "duplicate": False}
        assert lines.next_json() == {"ephemeral": activity}

        listed = run("connections", "--user", "u1", "--target", cli_target)
        assert listed.returncode == 0, listed.stderr
        ids = [c["connectionId"] for c in json.loads(listed.stdout)["connections"]]
        assert sorted(ids) == sorted([connection_id, raw_opened["connectionId"]])

        # A subscriber that dies without a word leaves the router's registry.
        sub.send_signal(signal.SIGKILL)
        sub.wait(timeout=10)
        deadline = time.monotonic() + 10
        while connection_id in connection_ids(cli_target, "u1"):
            assert time.monotonic() < deadline, "the killed subscriber's connection stayed"
            time.sleep(0.02)
        assert connection_ids(cli_target, "u1") == [raw_opened["connectionId"]]
    finally:
        stop(sub, lines)
        stop(raw, raw_lines)


def test_proto_json_emit_and_resume(cli_target: str) -> None:
    body = (
        '{"userId": "u2", "update": {"id": "p-1", "body": {"deleteSession": {"sessionId": "s"}}}}'
    )
    emitted = run("emit", "--proto-json", body, "--target", cli_target)
    assert emitted.returncode == 0, emitted.stderr
    position = json.loads(emitted.stdout)["position"]

    # Resume from before the update: it is replayed first.
    sub = subscriber(
        "--user", "u2", "--resume-offset", "0", "--resume-epoch", position["epoch"],
        "--target", cli_target,
    )  # fmt: skip
    lines = Lines(sub.stdout)
    try:
        opened = lines.next_json()["opened"]
        assert opened["resume"] == "resumed"
        assert opened["replayed"] == 1
        line = lines.next_json()
        assert line["update"]["id"] == "p-1"
        assert line["position"] == position
    finally:
        stop(sub, lines)


def _help_entries(text: str) -> list[str]:
    """Each option's help as one string (its first line and the indented lines after it)."""
    entries: list[str] = []
    for line in text.splitlines():
        if re.match(r"^  -", line):
            entries.append(line.strip())
        elif entries and re.match(r"^ {3,}\S", line):
            entries[-1] += " " + line.strip()
        elif not line.strip() or not line.startswith(" "):
            entries.append("")  # a section ends the entry before it
    return [e for e in entries if e]


def test_help_for_every_command_with_each_default_said_once() -> None:
    commands = [
        (),
        ("serve",),
        ("config",),
        ("token",),
        ("subscribe",),
        ("emit",),
        ("connections",),
        ("disconnect",),
        ("health",),
    ]
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
            entries = _help_entries(out)
            assert entries, out
            for entry in entries:
                assert entry.count("default:") <= 1, (c, entry)
        assert "--listen HOST:PORT" in outputs[("serve",)]
        assert "--insecure" in outputs[("serve",)]
        assert "(default: random; env EVENTROUTER_NODE_ID)" in " ".join(
            _help_entries(outputs[("serve",)])
        )
        assert "--resume-epoch" in outputs[("subscribe",)]
        assert "--max-retries N" in outputs[("subscribe",)]
        assert '{"update":' in outputs[("subscribe",)]
        assert "--machine-only" in outputs[("emit",)]
        assert "--user USER" in outputs[("connections",)]
        assert "--token-id JTI" in outputs[("disconnect",)]
        assert "--revoke" in outputs[("disconnect",)]
        assert "--service NAME" in outputs[("health",)]
        for name in ("disconnect", "health", "connections", "subscribe", "emit"):
            assert f"    {name}" in outputs[()]
    finally:
        for process in processes:
            stop(process)


def test_version_names_the_package_and_the_contract() -> None:
    result = run("--version")
    assert result.returncode == 0, result.stderr
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert importlib.metadata.version("eventrouter") == project["version"]
    assert result.stdout == f"eventrouter {project['version']} (contract eventrouter.v1)\n"


def test_connections_takes_the_user_as_a_flag(cli_target: str) -> None:
    sub = subscriber("--user", "u4", "--target", cli_target)
    lines = Lines(sub.stdout)
    try:
        connection_id = lines.next_json()["opened"]["connectionId"]
        by_flag = run("connections", "--user", "u4", "--target", cli_target)
        assert by_flag.returncode == 0, by_flag.stderr
        listed = json.loads(by_flag.stdout)["connections"]
        assert [c["connectionId"] for c in listed] == [connection_id]
        # The first release's positional form still works, and says the same.
        positional = run("connections", "u4", "--target", cli_target)
        assert positional.stdout == by_flag.stdout
        missing = run("connections", "--target", cli_target)
        assert missing.returncode == 2
        assert "--user USER is required" in missing.stderr
        both = run("connections", "u4", "--user", "u5", "--target", cli_target)
        assert both.returncode == 2
    finally:
        stop(sub, lines)


def test_disconnect_by_session_connection_and_machine(cli_target: str) -> None:
    viewer = subscriber("--user", "u6", "--session", "s1", "--target", cli_target)
    daemon = subscriber("--user", "u6", "--machine", "m1", "--target", cli_target)
    viewer_out, viewer_err = Lines(viewer.stdout), Lines(viewer.stderr)
    daemon_out, daemon_err = Lines(daemon.stdout), Lines(daemon.stderr)
    try:
        viewer_id = viewer_out.next_json()["opened"]["connectionId"]
        daemon_out.next_json()

        ended = run(
            "disconnect", "--user", "u6", "--session", "s1", "--reason", "moved",
            "--target", cli_target,
        )  # fmt: skip
        assert ended.returncode == 0, ended.stderr
        assert json.loads(ended.stdout) == {"disconnected": 1}
        # The viewer says why, reconnects and resumes; the daemon is untouched.
        said = viewer_err.next_line()
        assert said.startswith(
            "eventrouter subscribe: UNAVAILABLE: disconnected by the service: moved;"
            " reconnecting in "
        ), said
        reopened = viewer_out.next_json()["opened"]
        assert reopened["resume"] == "resumed"
        assert reopened["connectionId"] != viewer_id

        ended = run("disconnect", "--connection", reopened["connectionId"], "--target", cli_target)
        assert json.loads(ended.stdout) == {"disconnected": 1}
        assert "disconnected by the service;" in viewer_err.next_line()
        viewer_out.next_json()  # reopened once more

        ended = run(
            "disconnect", "--user", "u6", "--machine", "m1", "--revoke", "--reason", "sold",
            "--target", cli_target,
        )  # fmt: skip
        assert json.loads(ended.stdout) == {"disconnected": 1}
        assert daemon.wait(timeout=30) == 1
        assert daemon_err.rest() == [
            "eventrouter subscribe: a service revoked this stream; not reconnecting"
            " (PERMISSION_DENIED: disconnected by the service: sold)"
        ]
        assert viewer.poll() is None

        unknown = run("disconnect", "--connection", "c_nobody", "--target", cli_target)
        assert json.loads(unknown.stdout) == {"disconnected": 0}
        narrowed = run("disconnect", "--connection", "c1", "--session", "s1")
        assert narrowed.returncode == 2
        assert "--session and --machine select streams of one --user" in narrowed.stderr
    finally:
        stop(viewer, viewer_out, viewer_err)
        stop(daemon, daemon_out, daemon_err)


def test_health_exits_zero_when_serving(cli_target: str) -> None:
    for service in ("", "eventrouter.v1.EventRouterService"):
        checked = run("health", "--service", service, "--target", cli_target)
        assert checked.returncode == 0, checked.stderr
        assert json.loads(checked.stdout) == {"service": service, "status": "SERVING"}
    unknown = run("health", "--service", "no.such.Service", "--target", cli_target)
    assert unknown.returncode == 1
    assert unknown.stderr == (
        "eventrouter health: NOT_FOUND: no health status for 'no.such.Service'\n"
    )


def test_usage_and_rpc_errors(cli_target: str) -> None:
    bad_flag = run("emit", "--bogus")
    assert bad_flag.returncode == 2
    assert "usage:" in bad_flag.stderr
    no_user = run("subscribe", "--target", cli_target)
    assert no_user.returncode == 2
    bad_json = run("emit", "--user", "u3", "--json", "{not json", "--target", cli_target)
    assert bad_json.returncode == 2
    assert "--json" in bad_json.stderr
    not_happy = run("emit", "--user", "u3", "--json", '{"t": "nope"}', "--target", cli_target)
    assert not_happy.returncode == 2

    update = json.dumps(to_happy_json(build_delete_session_update("s1", 1, "x", now_ms=1)))
    rejected = run(
        "emit", "--user", "u3", "--json", update, "--session-filter", "has space",
        "--target", cli_target,
    )  # fmt: skip
    assert rejected.returncode == 1
    assert "INVALID_ARGUMENT" in rejected.stderr
    assert "recipient_filter.all_interested_in_session.session_id" in rejected.stderr
