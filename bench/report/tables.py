"""The Markdown report: the main table, the workloads' sections, ratios, goals, load generators."""

from __future__ import annotations

from typing import Any

from report.fmt import f, mib
from report.layout import Layout


def markdown(
    meta: dict[str, Any], summary: dict[str, Any], profiles: dict[str, Any], layout: Layout
) -> str:
    cells = summary["cells"]
    lines = [
        "# eventrouter benchmark",
        "",
        f"Command: `{meta['command']}` — {meta['started_at']}, {meta['elapsed_s']:.0f} s,"
        f" {meta['reps']} round(s), medians over rounds. Machine: {meta['machine']['cpus']}"
        f" CPUs ({meta['machine']['cpu_model']}), Python {meta['machine']['python']}"
        f" (servers: {meta['machine'].get('server_python') or meta['machine']['python']})."
        " Server and load generators share these CPUs; server CPU is user+system time of"
        " the server process (all threads) from /proc, from the producer's start to the"
        " last delivery. The eventrouter runs with `--insecure` (benchmark setting).",
        "",
    ]
    load = meta.get("load_1m")
    if load:
        lines[-1:-1] = [
            "",
            f"Machine load (1-minute average) as each run started: {load['min']:.1f} to"
            f" {load['max']:.1f}, median {load['median']:.1f}, on {meta['machine']['cpus']}"
            " CPUs (the benchmark's own previous run counts in it, as does anything else"
            " running on the machine).",
        ]
    for note in meta.get("notes", []):
        lines.append(f"- **Note:** {note}")
    if meta.get("notes"):
        lines.append("")
    lines += [
        "| workload | mode | target | emits/s | deliveries/s | p50 ms | p99 ms | max ms"
        " | lost | dup | misrouted | CPU µs/emit | CPU µs/delivery | peak RSS MiB |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for cell in cells.values():
        if cell["workload"] in layout.hidden:
            continue
        failed = f" ({cell['failed_runs']} failed)" if cell["failed_runs"] else ""
        lines.append(
            f"| {cell['workload']} | {cell['mode']} | {cell['target']}{failed} "
            f"| {f(cell.get('emits_per_s'), 0)} | {f(cell.get('deliveries_per_s'), 0)} "
            f"| {f(cell.get('latency_p50_ms'), 2)} | {f(cell.get('latency_p99_ms'), 2)} "
            f"| {f(cell.get('latency_max_ms'), 1)} | {f(cell.get('lost'))} "
            f"| {f(cell.get('duplicated'))} | {f(cell.get('misrouted'))} "
            f"| {f(cell.get('cpu_us_per_emit'), 1)} | {f(cell.get('cpu_us_per_delivery'), 2)} "
            f"| {f(mib(cell.get('peak_rss_bytes')), 0)} |"
        )
    for section in layout.sections:
        lines += section(cells)
    lines += ["", "## Ratios (eventrouter ÷ peer, same run; < 1 = eventrouter better)", ""]
    lines += [
        "| workload | mode | vs | CPU/emit | CPU/delivery | p50 | p99 | bytes/idle stream"
        " | emits/s (> 1 better) |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for name, r in sorted(summary["ratios"].items()):
        workload, mode, other = name.split("/")
        lines.append(
            f"| {workload} | {mode} | {other} | {f(r['cpu_us_per_emit'], 2)} "
            f"| {f(r['cpu_us_per_delivery'], 2)} | {f(r['latency_p50_ms'], 2)} "
            f"| {f(r['latency_p99_ms'], 2)} | {f(r['bytes_per_stream'], 2)} "
            f"| {f(r['emits_per_s'], 2)} |"
        )
    lines += ["", "## Goals", "", "| goal | vs | limit | measured ratio | met |"]
    lines.append("|---|---|--:|--:|---|")
    for g in summary["goals"]:
        met = "n/a (not measured)" if g["met"] is None else ("yes" if g["met"] else "**NO**")
        lines.append(
            f"| {g['goal']} | {g['vs']} | ≤ {g['limit']:g}× | {f(g['ratio'], 2)} | {met} |"
        )
    lines.append(
        "\nSingle unary `Emit` (mode `emit`) is reported above with no goal."
        " `emit` = one unary call per event, 64 in flight; `batch` = the client library's"
        " auto-batching (one EmitBatch in flight, the rest queued into the next), 64 emits"
        " awaited at a time; the Socket.IO producers do the same with acknowledged"
        " `emit` / `emitBatch` events."
    )
    lines += load_generator_markdown(meta, cells, layout)
    if profiles:
        lines += profile_markdown(profiles)
    return "\n".join(lines) + "\n"


def load_generator_markdown(
    meta: dict[str, Any], cells: dict[str, Any], layout: Layout
) -> list[str]:
    """One row per measured cell: the load generators' CPU next to the server's."""
    rows = [c for c in cells.values() if c["workload"] not in layout.hidden]
    if not rows:
        return []
    cpus = meta.get("machine", {}).get("cpus")
    lines = [
        "",
        "## Load generators (CPU)",
        "",
        "Each load generator measures its own CPU (user + system, all threads: Python"
        " `time.process_time()`, Node `process.cpuUsage()`): the publisher from `go` to"
        " its `done`, the subscribers (all their processes added up) from `ready` to"
        " writing their results. Cores = CPU ÷ the run's duration (first send to last"
        " delivery), the mean cores used while measuring; server cores likewise from its"
        f" CPU above. The machine has {cpus} CPUs, shared by all of them: a total near"
        f" {cpus} cores means it was saturated.",
        "",
        "| workload | mode | target | clients | pub µs/emit | pub cores | sub µs/delivery"
        " | sub cores | server cores | total cores |",
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for c in rows:
        parts = [c.get("server_cores"), c.get("pub_cores"), c.get("sub_cores")]
        total = sum(parts) if all(p is not None for p in parts) else None
        lines.append(
            f"| {c['workload']} | {c['mode']} | {c['target']} | {_clients(c)} "
            f"| {f(c.get('pub_cpu_us_per_emit'), 1)} | {f(c.get('pub_cores'), 2)} "
            f"| {f(c.get('sub_cpu_us_per_delivery'), 2)} | {f(c.get('sub_cores'), 2)} "
            f"| {f(c.get('server_cores'), 2)} | {f(total, 2)} |"
        )
    return lines


def _clients(cell: dict[str, Any]) -> str:
    pub, sub = cell.get("pub_client"), cell.get("sub_client")
    if pub is None and sub is None:
        return "n/a"
    if pub == sub:
        return str(pub)
    return f"pub {pub or 'n/a'}, sub {sub or 'n/a'}"


def profile_markdown(profiles: dict[str, Any]) -> list[str]:
    lines = ["", "## Profile of the eventrouter (py-spy --native, separate runs)", ""]
    for name, prof in profiles.items():
        if name == "error":
            lines.append(f"- {prof}")
            continue
        lines += [
            f"**{name}, batched**: {prof['busy_samples']} busy samples of {prof['samples']}"
            " (idle waits left out); shares of busy samples:",
            "",
            "| by thread | % | by innermost frame | % |",
            "|---|--:|---|--:|",
        ]
        rows = max(len(prof["threads"]), len(prof["categories"]))
        for i in range(rows):
            t = prof["threads"][i] if i < len(prof["threads"]) else (None, "")
            c = prof["categories"][i] if i < len(prof["categories"]) else (None, "")
            lines.append(
                f"| {t[1]} | {f(t[0], 1) if t[0] is not None else ''} "
                f"| {c[1]} | {f(c[0], 1) if c[0] is not None else ''} |"
            )
        lines += ["", "| self % | function | inclusive % | eventrouter function |"]
        lines.append("|--:|---|--:|---|")
        for (s_pct, s_fn), (i_pct, i_fn) in zip(
            prof["self"][:15], prof["inclusive"][:15], strict=False
        ):
            lines.append(f"| {s_pct:.1f} | `{s_fn}` | {i_pct:.1f} | `{i_fn}` |")
        lines.append("")
    return lines
