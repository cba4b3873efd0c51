"""Turns the runs into the results: JSON, a Markdown report and a PNG chart.

``summary`` takes medians over the rounds and the ratios within the run,
``tables`` writes the Markdown, ``chart`` the PNG, ``profile`` summarizes
py-spy profiles; ``layout`` is what run.py tells the report of the targets
and workloads.  A figure that was not measured is reported as "n/a", never
estimated.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from report.chart import chart
from report.layout import Layout, Section
from report.profile import profile_summary
from report.summary import summarize
from report.tables import markdown


def write(
    out: Path,
    meta: dict[str, Any],
    runs: list[dict[str, Any]],
    profiles: dict[str, Any],
    layout: Layout,
) -> list[Path]:
    summary = summarize(runs, layout)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = out / f"bench-{stamp}"
    document = {"meta": meta, "summary": summary, "runs": runs, "profiles": profiles}
    paths = [base.with_suffix(".json"), base.with_suffix(".md")]
    paths[0].write_text(json.dumps(document, indent=1))
    paths[1].write_text(markdown(meta, summary, profiles, layout))
    png = base.with_suffix(".png")
    if chart(summary, png, layout):
        paths.append(png)
    else:
        meta.setdefault("notes", []).append("no PNG: matplotlib is not installed")
    for p in paths:
        shutil.copyfile(p, out / f"latest{p.suffix}")
    return paths


__all__ = ["Layout", "Section", "profile_summary", "summarize", "write"]
