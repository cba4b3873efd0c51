"""The wheel of ``make dist`` installs alone and runs: no checkout, no editable install.

A fresh virtual environment outside the repository gets the server's locked
dependencies (requirements/server.txt, hashes required), then the wheel,
then ``eventrouter[server]`` is resolved against what is installed with no
index at all (the extra's requirements must be what the lock holds). From a
folder outside the checkout, its own console script then serves, mints
tokens, subscribes and emits, and its status page answers: generated code,
py.typed markers or status-page assets missing from the wheel fail here,
where an editable install would have found them in the source tree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.cli_helpers import Lines, stop
from tests.e2e.client_helpers import free_port
from tests.packaging.conftest import ROOT, Dist
from tests.support.web import connect_call

INSTALL_TIMEOUT_S = 300
UPDATE = {
    "id": "upd_1",
    "seq": 1,
    "body": {"t": "delete-session", "sid": "sess_1"},
    "createdAt": 1764000000000,
}

pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT_S + 60)


@dataclass(frozen=True)
class Installed:
    venv: Path
    home: Path  # the working folder and XDG_STATE_HOME: outside the checkout
    env: dict[str, str]

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def eventrouter(self, *args: str) -> list[str]:
        return [str(self.venv / "bin" / "eventrouter"), *args]

    def run(self, *args: str, token: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.eventrouter(*args),
            capture_output=True,
            text=True,
            cwd=self.home,
            env={**self.env, "EVENTROUTER_TOKEN": token},
            timeout=60,
            check=False,
        )


def _pip(venv: Path, *args: str) -> None:
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"pip install {' '.join(args)}:\n{result.stderr}"


@pytest.fixture(scope="module")
def installed(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("installed")
    venv, home = base / "venv", base / "home"
    home.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    lock = ROOT / "requirements" / "server.txt"
    _pip(venv, "--require-hashes", "--no-deps", "-r", str(lock))
    _pip(venv, "--no-deps", str(dist.wheel))
    # The extra's requirements, resolved offline against the lock just installed.
    _pip(venv, "--no-index", "--find-links", str(dist.wheel.parent), "eventrouter[server]")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("EVENTROUTER_", "PYTHON", "VIRTUAL_ENV"))
    }
    env |= {"XDG_STATE_HOME": str(home / "state"), "PYTHONUNBUFFERED": "1"}
    return Installed(venv, home, env)


@dataclass(frozen=True)
class Node:
    target: str  # gRPC
    metrics: str  # /metrics, the status page
    web: str  # the web listener (Connect, gRPC-Web)


@pytest.fixture(scope="module")
def node(installed: Installed) -> Iterator[Node]:
    """``eventrouter serve`` of the installed wheel, every listener on."""
    node = Node(*(f"127.0.0.1:{free_port()}" for _ in range(3)))
    listeners = [
        "--listen",
        node.target,
        "--metrics-listen",
        node.metrics,
        "--web-listen",
        node.web,
    ]
    process = subprocess.Popen(
        installed.eventrouter("serve", *listeners),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=installed.home,
        env=installed.env,
    )
    log = Lines(process.stderr)
    try:
        deadline = time.monotonic() + 30
        while installed.run("health", "--target", node.target, "--timeout", "1").returncode:
            assert process.poll() is None, f"serve exited: {log.rest()}"
            assert time.monotonic() < deadline, "serve never became SERVING"
            time.sleep(0.2)
        yield node
    finally:
        stop(process, log)


def test_version_is_the_package_and_the_contract(installed: Installed) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = installed.run("--version")
    assert result.stdout.strip() == f"eventrouter {version} (contract eventrouter.v1)"


def test_everything_is_imported_from_the_venv_with_its_package_data(
    installed: Installed, dist: Dist
) -> None:
    code = (
        "import json, eventrouter.v1.router_service_pb2 as pb, eventrouter.client as c,"
        " eventrouter.server as s, eventrouter.jsontext as j, eventrouter.server.ops.status_page"
        " as p\nprint(json.dumps([m.__file__ for m in (pb, c, s, j, p)]))"
    )
    result = subprocess.run(
        [installed.python, "-c", code],
        capture_output=True,
        text=True,
        cwd=installed.home,
        env=installed.env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for path in json.loads(result.stdout):
        assert Path(path).is_relative_to(installed.venv), f"{path} is not the installed copy"
    site = next((installed.venv / "lib").glob("python3.*/site-packages"))
    with zipfile.ZipFile(dist.wheel) as zf:
        package_data = [n for n in zf.namelist() if n.endswith(("py.typed", ".pyi"))]
    assert package_data, "the wheel holds no py.typed or .pyi"
    missing = [name for name in package_data if not (site / name).is_file()]
    assert not missing, f"package data not installed: {missing}"


def test_the_walk_through_runs_from_the_installed_wheel(installed: Installed, node: Node) -> None:
    target, metrics = node.target, node.metrics
    alice_token = installed.run("token", "--user", "alice").stdout.strip()
    service_token = installed.run("token", "--service").stdout.strip()
    alice = subprocess.Popen(
        installed.eventrouter("subscribe", "--target", target, "--no-reconnect"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=installed.home,
        env={**installed.env, "EVENTROUTER_TOKEN": alice_token},
    )
    out, err = Lines(alice.stdout), Lines(alice.stderr)
    try:
        assert out.next_json(timeout=20)["opened"]["userId"] == "alice"
        emitted = installed.run(
            "emit", "--target", target, "--user", "alice", "--json", json.dumps(UPDATE),
            token=service_token,
        )  # fmt: skip
        assert emitted.returncode == 0, emitted.stderr
        assert json.loads(emitted.stdout)["reached"] == 1
        assert out.next_json(timeout=20)["update"] == UPDATE
        # The web listener (uvicorn, in the server extra) serves the same router.
        listed = connect_call(node.web, "GetConnections", {"userId": "alice"}, service_token)
        assert len(listed["connections"]) == 1
    finally:
        stop(alice, out, err)
    with urllib.request.urlopen(f"http://{metrics}/", timeout=10) as page:
        assert page.status == 200
        assert "<html" in page.read().decode().lower()
    with urllib.request.urlopen(f"http://{metrics}/status.json", timeout=10) as status:
        assert "slowest_consumers" in json.loads(status.read())


def test_the_sdist_holds_what_the_wheel_is_built_from(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as tf:
        names = {name.split("/", 1)[1] for name in tf.getnames() if "/" in name}
    for needed in ("pyproject.toml", "README.md", "client/eventrouter/v1/events_pb2.py"):
        assert needed in names, f"the sdist lacks {needed}"
