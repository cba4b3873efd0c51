"""The report's same-run comparisons beyond the main ratio tables.

* **Web subscribers**: the ``eventrouter-web`` target (subscribers over the
  Connect protocol, HTTP/1.1) against the Socket.IO peer, with issue 16's
  goals for the web path, and against the eventrouter's gRPC subscribers.
* **Against a previous commit** (``--baseline-rev REV``): the eventrouter ÷
  ``eventrouter@REV`` on W1 and W2 (issue 20: a refactor must stay within noise).

Each is a section (layout.Section): Markdown from the summary's cells, empty
when its targets did not run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from report.fmt import f, kib, ratio
from report.summary import key

WEB = "eventrouter-web"
GRPC = "eventrouter"
PEER = "socketio"

# (goal, workload, mode, metric, limit): web ÷ Socket.IO (issue 16, item 5).
WEB_GOALS: list[tuple[str, str, str, str, float]] = [
    ("server CPU per delivery, W2 many users (batched)", "W2", "batch", "cpu_us_per_delivery", 0.6),
    ("server CPU per delivery, W1 fan-out (batched)", "W1", "batch", "cpu_us_per_delivery", 0.4),
    ("memory per idle stream (W3)", "W3", "-", "bytes_per_stream", 0.9),
    ("W4 latency p50 (batched)", "W4", "batch", "latency_p50_ms", 1.0),
]  # fmt: skip
# (column, metric, digits) of the comparison tables.
COLUMNS: list[tuple[str, str, int]] = [
    ("CPU µs/emit", "cpu_us_per_emit", 1),
    ("CPU µs/delivery", "cpu_us_per_delivery", 2),
    ("p50 ms", "latency_p50_ms", 2),
    ("p99 ms", "latency_p99_ms", 2),
]
BASELINE_WORKLOADS = ("W1", "W2")


def _shown(metric: str, value: float | None) -> float | None:
    return kib(value) if metric == "bytes_per_stream" else value


def _ratio_rows(
    cells: Mapping[str, dict[str, Any]], subject: str, other: str, workloads: tuple[str, ...]
) -> list[str]:
    """| workload | mode | each column's subject ÷ other |, for the cells both have."""
    rows = []
    for cell in cells.values():
        if cell["target"] != subject or cell["workload"] not in workloads:
            continue
        peer = cells.get(key(cell["workload"], cell["mode"], other))
        if peer is None:
            continue
        figures = " | ".join(
            f"{f(cell.get(m), d)} ÷ {f(peer.get(m), d)} = {f(ratio(cell.get(m), peer.get(m)), 2)}"
            for _, m, d in COLUMNS
        )
        rows.append(f"| {cell['workload']} | {cell['mode']} | {figures} |")
    return rows


def _table_head() -> list[str]:
    names = " | ".join(name for name, _, _ in COLUMNS)
    return [f"| workload | mode | {names} |", "|---|---|" + "--:|" * len(COLUMNS)]


def web_section(cells: Mapping[str, dict[str, Any]]) -> list[str]:
    if not any(c["target"] == WEB for c in cells.values()):
        return []
    lines = [
        "",
        "## Web subscribers (Connect protocol over HTTP/1.1)",
        "",
        f"`{WEB}`: the eventrouter with `--web-listen`, its subscribers Node clients speaking"
        " Connect streaming (`application/connect+proto`), each stream its own TCP connection"
        " (bench/peers/web/client.mjs); emits are gRPC, as for `eventrouter`. Goals (issue 16):"
        " ratios to the Socket.IO peer in this run.",
        "",
        "| goal | limit | eventrouter-web | socketio | measured ratio | met |",
        "|---|--:|--:|--:|--:|---|",
    ]
    for goal, workload, mode, metric, limit in WEB_GOALS:
        web = cells.get(key(workload, mode, WEB), {}).get(metric)
        peer = cells.get(key(workload, mode, PEER), {}).get(metric)
        measured = ratio(web, peer)
        met = (
            "n/a (not measured)" if measured is None else ("yes" if measured <= limit else "**NO**")
        )
        lines.append(
            f"| {goal} | ≤ {limit:g}× | {f(_shown(metric, web), 2)} | {f(_shown(metric, peer), 2)}"
            f" | {f(measured, 2)} | {met} |"
        )
    for other, what in ((PEER, "the Socket.IO peer"), (GRPC, "the gRPC subscribers")):
        rows = _ratio_rows(cells, WEB, other, ("W1", "W2", "W4"))
        if rows:
            lines += ["", f"eventrouter-web ÷ {what} ({other}), same run:", ""]
            lines += [*_table_head(), *rows]
    return lines


def baseline_section(cells: Mapping[str, dict[str, Any]]) -> list[str]:
    revs = sorted({c["target"] for c in cells.values() if c["target"].startswith(GRPC + "@")})
    lines: list[str] = []
    for rev in revs:
        rows = _ratio_rows(cells, GRPC, rev, BASELINE_WORKLOADS)
        if not rows:
            continue
        lines += [
            "",
            f"## Against {rev} (`--baseline-rev`)",
            "",
            f"The eventrouter of this checkout ÷ the eventrouter of commit {rev.partition('@')[2]}"
            " (a git worktree on this venv), same run, medians over the rounds:",
            "",
            *_table_head(),
            *rows,
        ]
    return lines


SECTIONS = (web_section, baseline_section)
