"""``make image-test``: run the image and walk through it as a user would.

    python scripts/image_test.py IMAGE [--podman "podman --runtime runc"] [--run-flags "..."]

Starts IMAGE with podman (its gRPC and HTTP ports published on free
loopback ports), then checks, printing each step:

1. it becomes SERVING over gRPC (``eventrouter health`` from this venv) and
   its own HEALTHCHECK passes (``podman healthcheck run``);
2. it runs as uid 10001, holds no compiler and no pip, and says its version;
3. the README walk-through against it: tokens minted inside the container
   from its generated keys file, ``eventrouter subscribe`` here as alice,
   ``eventrouter emit`` here as the service, and alice's subscriber prints
   the update; the web listener (turned on with EVENTROUTER_WEB_LISTEN)
   lists her connection over the Connect protocol; the status page and
   /metrics answer;
4. the drain: ``podman stop`` (SIGTERM) ends alice's stream with
   UNAVAILABLE, which she reports and retries, and the node exits 0.

The container is removed at the end, whatever happened. Exit 0 when every
step passed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tests.e2e.cli_helpers import Lines, stop
from tests.support.web import connect_call

EVENTROUTER = str(Path(sys.executable).parent / "eventrouter")
SERVICE = "eventrouter.v1.EventRouterService"
UPDATE = {
    "id": "upd_1",
    "seq": 1,
    "body": {"t": "delete-session", "sid": "sess_1"},
    "createdAt": 1764000000000,
}
START_TIMEOUT_S = 60.0


def step(message: str) -> None:
    print(f"image-test: {message}", flush=True)


class Container:
    def __init__(self, podman: Sequence[str], name: str) -> None:
        self.podman = list(podman)
        self.name = name

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.podman, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if check and result.returncode != 0:
            raise SystemExit(
                f"image-test: FAILED: {shlex.join([*self.podman, *args])}: exit"
                f" {result.returncode}\n{result.stderr.strip()}"
            )
        return result

    def exec(self, *args: str) -> str:
        return self.run("exec", self.name, *args).stdout.strip()

    def port(self, inner: int) -> str:
        # "127.0.0.1:40123" (podman prints one line per binding)
        return self.run("port", self.name, f"{inner}/tcp").stdout.split()[0]


def cli(*args: str, token: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVENTROUTER_TOKEN": token}
    env.pop("EVENTROUTER_TARGET", None)
    return subprocess.run(
        [EVENTROUTER, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"image-test: FAILED: {what}")
    step(f"ok: {what}")


def wait_serving(target: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        result = cli("health", "--target", target, "--service", SERVICE, "--timeout", "2")
        if result.returncode == 0:
            expect(json.loads(result.stdout)["status"] == "SERVING", f"{target} is SERVING")
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"image-test: FAILED: not SERVING after {START_TIMEOUT_S:.0f} s")
        time.sleep(0.5)


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def walk_through(box: Container, target: str, metrics: str, web: str) -> None:
    alice_token = box.exec("eventrouter", "token", "--user", "alice")
    service_token = box.exec("eventrouter", "token", "--service")
    step("minted alice's and the service's tokens inside the container (its keys file)")
    env = {**os.environ, "EVENTROUTER_TOKEN": alice_token}
    alice = subprocess.Popen(
        [EVENTROUTER, "subscribe", "--target", target, "--max-retries", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    out, err = Lines(alice.stdout), Lines(alice.stderr)
    try:
        opened = out.next_json(timeout=20)["opened"]
        expect(opened["userId"] == "alice", f"alice subscribed ({opened['connectionId']})")
        emitted = cli(
            "emit", "--target", target, "--user", "alice", "--json", json.dumps(UPDATE),
            token=service_token,
        )  # fmt: skip
        expect(emitted.returncode == 0, f"emit as the service: {emitted.stdout.strip()}")
        expect(json.loads(emitted.stdout)["reached"] == 1, "the emit reached alice's stream")
        received = out.next_json(timeout=20)
        expect(received["update"] == UPDATE, f"alice received it: {json.dumps(received)}")
        listed = connect_call(web, "GetConnections", {"userId": "alice"}, service_token)
        expect(len(listed["connections"]) == 1, "the web listener lists alice's connection")
        expect("eventrouter" in http_get(f"http://{metrics}/"), "status page answers")
        expect(
            "eventrouter_open_streams" in http_get(f"http://{metrics}/metrics"), "/metrics answers"
        )

        box.run("stop", "--time", "20", box.name)
        status = box.run("inspect", "--format", "{{.State.ExitCode}}", box.name).stdout.strip()
        expect(status == "0", "podman stop (SIGTERM): the node drained and exited 0")
        said = err.next_line(timeout=20)
        expect("UNAVAILABLE" in said, f"alice was told and retries: {said}")
    finally:
        stop(alice, out, err)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--podman", default="podman", help="the podman command (and its flags)")
    parser.add_argument("--run-flags", default="", help="extra `podman run` flags")
    args = parser.parse_args()
    box = Container(shlex.split(args.podman), f"eventrouter-image-test-{os.getpid()}")
    step(f"starting {args.image} as {box.name}")
    box.run(
        "run", "--detach", "--name", box.name, "--publish", "127.0.0.1::50051",
        "--publish", "127.0.0.1::9464", "--publish", "127.0.0.1::8080",
        "--env", "EVENTROUTER_WEB_LISTEN=0.0.0.0:8080", *shlex.split(args.run_flags), args.image,
    )  # fmt: skip
    try:
        target, metrics, web = box.port(50051), box.port(9464), box.port(8080)
        step(f"gRPC on {target}, metrics on {metrics}, web listener on {web}")
        wait_serving(target)
        liveness = cli("health", "--target", target, "--service", "liveness", "--timeout", "2")
        expect(liveness.returncode == 0, "liveness is SERVING (what Kubernetes probes)")
        check = box.run("healthcheck", "run", box.name, check=False)
        expect(check.returncode == 0, "the image's HEALTHCHECK passes (podman healthcheck run)")
        expect(box.exec("id", "-u") == "10001", "runs as uid 10001, not root")
        compilers = box.exec("sh", "-c", "command -v gcc cc c++ clang make || true")
        expect(compilers == "", "no compiler in the final stage")
        expect(box.exec("sh", "-c", "command -v pip pip3 || true") == "", "no pip either")
        version = box.exec("eventrouter", "--version")
        expect(version.startswith("eventrouter ") and "contract" in version, version)
        walk_through(box, target, metrics, web)
    except BaseException:
        logs = box.run("logs", "--tail", "30", box.name, check=False)
        print(logs.stdout + logs.stderr, file=sys.stderr)
        raise
    finally:
        box.run("rm", "--force", "--time", "1", box.name, check=False)
    step("passed")


if __name__ == "__main__":
    main()
