"""Small pieces every benchmark process shares: the line protocol, clocks, /proc.

The orchestrator (run.py) talks to its worker processes over their standard
streams, one JSON object per line: a worker *says* ``{"event": ...}`` on
stdout and waits for a command line (``next``, ``finish PATH``) on stdin.

Clocks: send and receive stamps are microseconds of CLOCK_MONOTONIC, which
every process on the machine shares (Python's ``time.monotonic_ns`` and
Node's ``process.hrtime.bigint`` both read it), so a subscriber subtracts a
publisher's stamp directly.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def now_us() -> int:
    return time.monotonic_ns() // 1000


def say(event: str, **fields: Any) -> None:
    """One protocol line on stdout."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def command() -> str:
    """The next command line from stdin ("" at end of input)."""
    line: str = await asyncio.to_thread(sys.stdin.readline)
    return line.strip()


def load_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def dump_json(path: str, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, separators=(",", ":"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, deadline_s: float = 30.0) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:port."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > end:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


@dataclass(frozen=True, slots=True)
class ProcSample:
    """CPU (all threads, user + system) and memory of one process at one moment."""

    cpu_s: float
    user_s: float
    sys_s: float
    rss_bytes: int
    hwm_bytes: int  # peak RSS so far (VmHWM)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) per thread name; threads of one name are added up."""
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def sample(pid: int) -> ProcSample:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    # Fields after the command name (which may hold spaces) start at field 3.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    rss = hwm = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return ProcSample(
        (utime + stime) / CLOCK_TICKS, utime / CLOCK_TICKS, stime / CLOCK_TICKS, rss, hwm
    )
