"""Running the ``eventrouter`` console script as real processes: commands, servers, output."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import grpc
import pytest

from tests.e2e.client_helpers import free_port

_BESIDE_PYTHON = Path(sys.executable).parent / "eventrouter"
EVENTROUTER = str(_BESIDE_PYTHON) if _BESIDE_PYTHON.exists() else shutil.which("eventrouter")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
# The commands read these; a developer's own must not leak into the tests.
for _name in ("EVENTROUTER_TARGET", "EVENTROUTER_TOKEN"):
    ENV.pop(_name, None)
START_TIMEOUT_S = 20.0

needs_console_script = pytest.mark.skipif(
    EVENTROUTER is None, reason="console script not installed"
)


def command(*args: str) -> list[str]:
    assert EVENTROUTER is not None
    return [EVENTROUTER, *args]


def run(
    *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args),
        input=stdin,
        capture_output=True,
        text=True,
        env=dict(env or ENV),
        timeout=60,
        check=False,
    )


def stop(process: subprocess.Popen[Any], *readers: Lines) -> None:
    """Terminate a process we started (by its PID), reap it and close its pipes."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    for reader in readers:
        reader.join()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


class Lines:
    """One pipe of a process, read line by line on a thread so that reads can time out."""

    def __init__(self, stream: IO[str] | None) -> None:
        assert stream is not None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Wait for end of file (the process has exited) so that the pipe can be closed."""
        self._thread.join(timeout=10)

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def next_line(self, timeout: float = 10.0) -> str:
        line = self._lines.get(timeout=timeout)
        assert line is not None, "the process closed the pipe"
        return line.rstrip("\n")

    def next_json(self, timeout: float = 10.0) -> Any:
        return json.loads(self.next_line(timeout))

    def rest(self, timeout: float = 30.0) -> list[str]:
        """Every line until end of file (the process exits)."""
        lines = []
        while (line := self._lines.get(timeout=timeout)) is not None:
            lines.append(line.rstrip("\n"))
        self._lines.put(None)  # end of file stays end of file
        return lines


def subscriber(*args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """``eventrouter subscribe ARGS`` with both pipes open (wrap them in ``Lines``)."""
    return subprocess.Popen(
        command("subscribe", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env or ENV),
    )


@contextlib.contextmanager
def serve(
    *flags: str,
    env: Mapping[str, str] | None = None,
    tls_ca: bytes | None = None,
    port: int | None = None,
) -> Iterator[str]:
    """``eventrouter serve FLAGS`` on ``port`` or a free one (no metrics port), as a process.

    Yields its ``HOST:PORT`` once it accepts connections (over TLS with
    ``tls_ca``, the CA of its certificate); stopped with SIGTERM on exit.
    """
    address = f"127.0.0.1:{port or free_port()}"
    process = subprocess.Popen(
        command("serve", "--listen", address, "--metrics-listen", "", *flags),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env or ENV),
    )
    log = Lines(process.stderr)
    try:
        channel = (
            grpc.insecure_channel(address)
            if tls_ca is None
            else grpc.secure_channel(address, grpc.ssl_channel_credentials(tls_ca))
        )
        with channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT_S)
            except grpc.FutureTimeoutError:
                process.terminate()
                pytest.fail(f"server did not start: {log.rest()}")
        yield address
    finally:
        stop(process, log)
