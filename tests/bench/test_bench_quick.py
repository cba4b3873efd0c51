"""Smoke test of the benchmark: ``bench/run.py --quick`` must route without loss.

It starts real servers and load generators as subprocesses at tiny sizes and
asserts only what does not depend on the machine: every delivery the routing
rule calls for arrived, exactly once, nowhere else, and no emit failed.  In
W2s, where some connections stop reading, that holds for the prompt ones;
the stalled ones must end closed as too slow (RESOURCE_EXHAUSTED) or still
be open, and never get an update after missing one.
Timings are the benchmark's business (``make bench``), never a test's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "bench" / "run.py"
PEER = ROOT / "bench" / "peers" / "socketio"
RUN_TIMEOUT_S = 100.0
NPM_TIMEOUT_S = 180.0

pytestmark = pytest.mark.timeout(300)


def run_quick(
    out: Path, targets: str, workloads: str, clients: str = "python", more: list[str] | None = None
) -> dict[str, Any]:
    args = ["--quick", "--out", str(out), "--targets", targets, "--workloads", workloads]
    args += ["--clients", clients, *(more or [])]
    proc = subprocess.run(
        [sys.executable, str(RUN), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=ROOT,
        check=False,
    )
    latest = out / "latest.json"
    assert latest.exists(), f"no results (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    document: dict[str, Any] = json.loads(latest.read_text())
    return document


def assert_exactly_once(document: dict[str, Any], targets: set[str], workloads: set[str]) -> None:
    runs = document["runs"]
    seen = {(r["workload"], r["mode"], r["target"]) for r in runs}
    for workload in workloads:
        for mode in ("emit", "batch"):
            for target in targets:
                assert (workload, mode, target) in seen, f"{workload}/{mode}/{target} did not run"
    for r in runs:
        name = f"{r['workload']}/{r['mode']}/{r['target']}"
        assert r["error"] == "", f"{name}: {r['error']}"
        assert r["lost"] == 0, f"{name}: lost {r['lost']}"
        assert r["duplicated"] == 0, f"{name}: duplicated {r['duplicated']}"
        assert r["misrouted"] == 0, f"{name}: misrouted {r['misrouted']}"
        assert r["producer_errors"] == 0, f"{name}: {r['first_producer_errors']}"
        assert r["stream_errors"] == 0, f"{name}: {r['first_stream_errors']}"
        assert r["deliveries"] == r["expected"], name
        # W0 routes to users nobody is connected as; every other shape delivers.
        assert (r["expected"] > 0) == (r["workload"] != "W0"), name


def assert_stalled_end_cleanly(document: dict[str, Any]) -> None:
    runs = [r for r in document["runs"] if r["workload"] == "W2s"]
    assert runs, "W2s did not run"
    for r in runs:
        name = f"{r['mode']}/{r['target']}"
        assert r["stalled_streams"] > 0, name
        assert r["stalled_other"] == 0, f"{name}: {r['stalled_problems']}"
        assert r["stalled_gaps"] == 0, f"{name}: {r['stalled_problems']}"
        assert r["stalled_closed"] + r["stalled_open"] == r["stalled_streams"], name


def test_eventrouter_and_bare_ceiling_deliver_exactly_once(tmp_path: Path) -> None:
    workloads = {"W0", "W1", "W2", "W4"}
    if shutil.which("redis-server"):
        # The same many-users shape over two and three nodes sharing Redis.
        workloads |= {"W5n2", "W5n3"}
    document = run_quick(tmp_path, "eventrouter,bare", ",".join(sorted(workloads)))
    bare = {"W0", "W1", "W2", "W4"}
    assert_exactly_once(document, {"eventrouter"}, workloads)
    assert_exactly_once(document, {"bare"}, bare)
    assert (tmp_path / "latest.md").read_text().startswith("# eventrouter benchmark")


def test_node_subscribers_see_exactly_once_too(tmp_path: Path) -> None:
    # make bench's default load generators: Node subscribers (peers/grpc/client.mjs).
    require_tool(
        shutil.which("node") is not None and (ROOT / "node_modules" / "@grpc" / "grpc-js").is_dir(),
        "node and the root node_modules (make node-deps)",
    )
    document = run_quick(tmp_path, "eventrouter,bare", "W1,W2,W4", clients="node-sub")
    assert_exactly_once(document, {"eventrouter", "bare"}, {"W1", "W2", "W4"})
    assert {r["sub_client"] for r in document["runs"]} == {"node grpc-js"}
    assert {r["pub_client"] for r in document["runs"]} == {"python grpcio"}


def test_web_subscribers_see_exactly_once_too(tmp_path: Path) -> None:
    # eventrouter-web: subscribers over the Connect protocol (peers/web/client.mjs),
    # emits over gRPC; it runs W1-W4 only (W0 here is left out by the target).
    require_tool(
        shutil.which("node") is not None
        and (ROOT / "node_modules" / "@grpc" / "proto-loader").is_dir(),
        "node and the root node_modules (make node-deps)",
    )
    document = run_quick(tmp_path, "eventrouter-web", "W0,W1,W2,W4")
    assert {r["workload"] for r in document["runs"]} == {"W1", "W2", "W4"}
    assert_exactly_once(document, {"eventrouter-web"}, {"W1", "W2", "W4"})
    assert {r["sub_client"] for r in document["runs"]} == {"node http/1.1 connect"}
    assert "## Web subscribers" in (tmp_path / "latest.md").read_text()


def test_baseline_rev_runs_another_commit_beside(tmp_path: Path) -> None:
    # --baseline-rev: eventrouter@REV from a git worktree, removed afterwards.
    require_tool(shutil.which("git") is not None and (ROOT / ".git").exists(), "a git checkout")
    document = run_quick(tmp_path, "eventrouter", "W1", more=["--baseline-rev", "HEAD"])
    assert_exactly_once(document, {"eventrouter", "eventrouter@HEAD"}, {"W1"})
    assert "## Against eventrouter@HEAD" in (tmp_path / "latest.md").read_text()
    listed = subprocess.run(
        ["git", "worktree", "list"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    assert "eventrouter-rev-" not in listed, "the worktree was left behind"


def test_stalled_consumers_leave_the_others_exactly_once(tmp_path: Path) -> None:
    # W2s: 2 of 120 connections stop reading and are sent 10 MiB each; W2p: the
    # same emits, nobody stalled.  Both run against the eventrouter and Socket.IO only.
    document = run_quick(tmp_path, "eventrouter,bare", "W2p,W2s")
    assert {r["target"] for r in document["runs"]} == {"eventrouter"}
    assert_exactly_once(document, {"eventrouter"}, {"W2p", "W2s"})
    assert_stalled_end_cleanly(document)
    assert {r["stalled_client"] for r in document["runs"] if r["workload"] == "W2s"} == {
        "python grpcio"
    }
    assert "Stalled consumers (W2s)" in (tmp_path / "latest.md").read_text()


@pytest.fixture
def socketio_peer() -> None:
    """The peer's npm packages (`make bench` installs them; installed here when missing)."""
    installed = PEER / "node_modules" / "socket.io"
    npm = shutil.which("npm")
    if not installed.is_dir() and npm is not None and shutil.which("node") is not None:
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=PEER,
            capture_output=True,
            timeout=NPM_TIMEOUT_S,
            check=False,
        )
    require_tool(
        installed.is_dir() and shutil.which("node") is not None,
        "node and bench/peers/socketio/node_modules (make bench)",
    )


@pytest.mark.usefixtures("socketio_peer")
def test_socketio_peer_delivers_exactly_once(tmp_path: Path) -> None:
    document = run_quick(tmp_path, "socketio", "W0,W1,W2,W2s,W4")
    assert_exactly_once(document, {"socketio"}, {"W0", "W1", "W2", "W2s", "W4"})
    # Its stalled sockets are paused: nothing closes them, all they are sent waits.
    assert_stalled_end_cleanly(document)


@pytest.mark.parametrize("workload", ["W0", "W1", "W2"])
def test_micro_benchmark_sides_do_the_routing_rules_work(workload: str) -> None:
    # bench/micro.py exits non-zero unless both sides delivered what the rule says.
    args = ["--quick", "--rounds", "1", "--workload", workload]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "micro.py"), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ratio eventrouter/bare" in proc.stdout
