"""Where the server's busy samples went: a summary of py-spy's ``--format raw --native`` output."""

from __future__ import annotations

from collections import Counter
from typing import Any

IDLE_LEAVES = ("epoll_wait", "epoll_pwait", "poll", "ppoll", "select", "pselect", "futex",
               "cond_wait", "cond_timedwait", "nanosleep", "sem_wait", "sem_timedwait")  # fmt: skip
GC_FUNCTIONS = ("visit_decref", "visit_reachable", "subtract_refs", "move_unreachable")
ROUTER_FILES = ("server/", "core/", "broker/", "ops/", "security/")
SYSCALLS = {
    "sendmsg": "syscall sendmsg (TCP writes)",
    "send": "syscall sendmsg (TCP writes)",
    "writev": "syscall sendmsg (TCP writes)",
    "write": "syscall write (wakeup fds between event loop and grpc poller)",
    "recvmsg": "syscall recv (TCP reads)",
    "recv": "syscall recv (TCP reads)",
    "read": "syscall read",
    "getpid": "syscall getpid (asyncio get_running_loop, Python 3.11)",
}


def profile_summary(raw: str) -> dict[str, Any]:
    """Where the server's busy samples went, from py-spy's ``--format raw --native`` output.

    Samples whose innermost frame is a wait (epoll, futex, ...) are idle and
    left out; the rest are attributed by innermost frame to a category, to a
    function (self), and to every eventrouter function on the stack (inclusive).
    """
    categories: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    busy = idle = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f]
        leaf = frames[-1]
        leaf_name = leaf.split(" (", 1)[0]
        if any(word in leaf_name for word in IDLE_LEAVES):
            idle += count
            continue
        busy += count
        thread = (
            "event loop (main thread)"
            if any("_run_module_as_main" in f for f in frames)
            else "grpc completion-queue poller thread"
            if any("Thread.run" in f for f in frames)
            else "other threads"
        )
        threads[thread] += count
        categories[_category(leaf, leaf_name)] += count
        self_counts[leaf] += count
        for f in {f for f in frames if any(p in f for p in ROUTER_FILES) and "__main__" not in f}:
            incl_counts[f] += count

    def pct(counter: Counter[str], top: int = 25) -> list[tuple[float, str]]:
        return [(100.0 * n / max(1, busy), f) for f, n in counter.most_common(top)]

    return {
        "samples": busy + idle,
        "busy_samples": busy,
        "threads": pct(threads),
        "categories": pct(categories),
        "self": pct(self_counts),
        "inclusive": pct(incl_counts),
    }


def _category(leaf: str, name: str) -> str:
    if "libc.so" in leaf and name in SYSCALLS:
        return SYSCALLS[name]
    if "libc.so" in leaf and not name.startswith("0x"):
        return f"libc {name}"
    if "gc_collect" in name or "_traverse" in name or name in GC_FUNCTIONS:
        return "Python cyclic GC"
    if "cygrpc" in leaf or "libgrpc" in leaf:
        return "grpc Cython/C-core"
    if "_message" in leaf or "upb" in name or "protobuf" in leaf:
        return "protobuf (upb)"
    if any(p in leaf for p in ROUTER_FILES):
        return "eventrouter Python code"
    if "asyncio" in leaf:
        return "asyncio"
    if "libpython" in leaf or ".py)" in leaf or "<string>" in leaf:
        return "Python interpreter / stdlib"
    return "other native"


def _frame(text: str) -> str:
    """``func (path/to/module.py:123)`` -> ``func (to/module.py)``; native frames keep their lib."""
    name, _, where = text.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0] if where.rstrip(")")[-1:].isdigit() else where[:-1]
    short = "/".join(path.split("/")[-2:]) if path else ""
    return f"{name} ({short})" if short else name
