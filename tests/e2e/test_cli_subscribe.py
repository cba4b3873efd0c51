"""``eventrouter subscribe`` when the server is not there: it says why, and gives up when told.

Real processes: the command, and ``eventrouter serve`` stopped and started
again under it.
"""

from __future__ import annotations

import re

from tests.e2e.cli_helpers import Lines, needs_console_script, run, serve, stop, subscriber
from tests.e2e.client_helpers import free_port

pytestmark = needs_console_script

RECONNECTING = re.compile(
    r"eventrouter subscribe: UNAVAILABLE: (?P<details>.+); reconnecting in \d+\.\d\d s"
    r" \(attempt (?P<attempt>\d+) (?P<limit>of \d+|no limit)\)"
)


def test_a_port_nobody_listens_on_is_retried_aloud_then_given_up() -> None:
    target = f"127.0.0.1:{free_port()}"
    result = run("subscribe", "--user", "u1", "--target", target, "--max-retries", "3")
    assert result.returncode == 1
    assert result.stdout == ""
    *attempts, last = result.stderr.splitlines()
    matches = [RECONNECTING.fullmatch(line) for line in attempts]
    assert all(matches), attempts
    assert [(m["attempt"], m["limit"]) for m in matches if m] == [
        ("1", "of 3"),
        ("2", "of 3"),
        ("3", "of 3"),
    ]
    assert all("Connection refused" in m["details"] for m in matches if m)
    assert last.startswith("eventrouter subscribe: UNAVAILABLE: ")
    assert last.endswith(
        "(gave up after 3 reconnects); --max-retries N sets the limit, -1: none"
    ), last

    at_once = run("subscribe", "--user", "u1", "--target", target, "--max-retries", "0")
    assert at_once.returncode == 1
    assert len(at_once.stderr.splitlines()) == 1, at_once.stderr
    assert "gave up after 0 reconnects" in at_once.stderr

    bad = run("subscribe", "--user", "u1", "--target", target, "--max-retries", "-2")
    assert bad.returncode == 2


def test_a_stopped_server_is_reported_until_it_is_back() -> None:
    port = free_port()
    with serve("--insecure", "--log-level", "warning", port=port) as target:
        sub = subscriber("--user", "u2", "--target", target, "--max-retries", "-1")
        out, err = Lines(sub.stdout), Lines(sub.stderr)
        first = out.next_json()["opened"]
    try:
        # The server is gone: each attempt is said, with no limit.
        said = [RECONNECTING.fullmatch(err.next_line()) for _ in range(3)]
        assert all(said), said
        assert [m["limit"] for m in said if m] == ["no limit"] * 3
        with serve("--insecure", "--log-level", "warning", port=port):
            # Back, with a new epoch: the subscription reopens and says its
            # position could not be resumed.
            opened = out.next_json(timeout=30)["opened"]
            assert opened["resume"] == "failed"
            assert opened["position"]["epoch"] != first["position"]["epoch"]
            assert out.next_json()["refetchRequired"]["reason"] == "epoch_changed"
            assert sub.poll() is None
    finally:
        stop(sub, out, err)
