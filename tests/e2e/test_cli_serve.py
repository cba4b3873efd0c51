"""``eventrouter serve`` on an address it cannot have: one line naming it and its flag, exit 1.

Each port is held by a real listening socket that set SO_REUSEADDR and
SO_REUSEPORT, the options that would let a second listener share it if the
server set them too; the server is the real console script.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cli_helpers import ENV, needs_console_script, run

pytestmark = needs_console_script

IN_USE = os.strerror(errno.EADDRINUSE)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize(
    ("flag", "other", "what"),
    [
        ("--listen", "--metrics-listen", "gRPC"),
        ("--metrics-listen", "--listen", "metrics and the status page"),
    ],
)
def test_a_busy_port_is_one_line_and_exit_1(
    busy_port: int, tmp_path: Path, flag: str, other: str, what: str
) -> None:
    env = {**ENV, "XDG_STATE_HOME": str(tmp_path)}
    address = f"127.0.0.1:{busy_port}"
    result = run("serve", flag, address, other, "127.0.0.1:0", "--log-level", "warning", env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"eventrouter serve: cannot listen on {address} for {what}: {IN_USE}; change it with {flag}"
    ]


def test_an_address_of_another_host_is_one_line_too(tmp_path: Path) -> None:
    env = {**ENV, "XDG_STATE_HOME": str(tmp_path)}
    result = run(
        "serve", "--listen", "192.0.2.1:50051", "--metrics-listen", "", "--log-level", "warning",
        env=env,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "eventrouter serve: cannot listen on 192.0.2.1:50051 for gRPC:"
        f" {os.strerror(errno.EADDRNOTAVAIL)}; change it with --listen"
    ]
