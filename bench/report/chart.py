"""The PNG chart: CPU per delivery and per emit, W4 latency and idle memory, per target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from report.layout import Layout
from report.summary import key

# (title, metric, cells as (workload, mode)); metric None: W4's p50 and p99.
PANELS: list[tuple[str, str | None, list[tuple[str, str]]]] = [
    ("server CPU µs per delivery", "cpu_us_per_delivery", [("W1", "batch"), ("W1", "emit")]),
    ("server CPU µs per emit", "cpu_us_per_emit",
     [("W0", "batch"), ("W2", "batch"), ("W2", "emit"), ("W4", "batch"), ("W4", "emit")]),
    ("W4 latency ms (batched)", None, [("W4", "batch")]),
    ("KiB per idle stream (W3)", "bytes_per_stream", [("W3", "-")]),
]  # fmt: skip


def chart(summary: dict[str, Any], path: Path, layout: Layout) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cells = summary["cells"]
    targets = [t for t in layout.colors if any(c["target"] == t for c in cells.values())]
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    for ax, (title, metric, groups) in zip(axes, PANELS, strict=True):
        width = 0.8 / max(1, len(targets))
        plotted = False
        if metric is None:
            labels = ["p50", "p99"]
            for i, t in enumerate(targets):
                c = cells.get(key("W4", "batch", t), {})
                values = [c.get("latency_p50_ms") or 0, c.get("latency_p99_ms") or 0]
                ax.bar(
                    [x + i * width for x in range(2)], values, width, label=t,
                    color=layout.colors[t],
                )  # fmt: skip
        else:
            labels = [f"{w} {m}" if m != "-" else w for w, m in groups]
            for i, t in enumerate(targets):
                values = []
                for w, m in groups:
                    v = cells.get(key(w, m, t), {}).get(metric) or 0
                    values.append(v / 1024 if metric == "bytes_per_stream" else v)
                plotted = plotted or any(v > 0 for v in values)
                ax.bar(
                    [x + i * width for x in range(len(groups))], values, width, label=t,
                    color=layout.colors[t],
                )  # fmt: skip
        ax.set_xticks([x + width * (len(targets) - 1) / 2 for x in range(len(labels))])
        ax.set_xticklabels(labels)
        if metric in ("cpu_us_per_delivery", "cpu_us_per_emit") and plotted:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        "eventrouter vs Socket.IO peer vs bare grpc.aio (lower is better; CPU on log scales)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
