"""What the report needs to know of the harness's targets and workloads, handed in by run.py.

The report reads only the runs' JSON and this; it imports nothing of the
targets or workloads, so a workload module can use the report's formatting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The Markdown a workload adds below the main table, from the summary's cells
# (``"W2/batch/eventrouter"`` -> that cell's medians and sums).
Section = Callable[[Mapping[str, dict[str, Any]]], list[str]]


@dataclass(frozen=True, slots=True)
class Layout:
    # The target every ratio is about ("eventrouter") and those it is compared
    # with, each a "peer" of the ratio tables.
    subject: str
    baselines: tuple[str, ...]
    # The chart's bar color of each target, in the chart's order.
    colors: Mapping[str, str]
    # Workloads whose cells stay out of the main and load-generator tables (W3).
    hidden: frozenset[str] = frozenset()
    sections: tuple[Section, ...] = field(default=())
