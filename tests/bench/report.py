"""Results: one ``Metric`` per measured quantity, its physical limit, and its budget.

Every repeat of a workload adds one sample to each of its metrics (a throughput, a median
latency, a memory figure); the table shows the median, min and max of those samples, the
median of the limit measured in the same run, their ratio, and whether the budget holds.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least ``fraction`` at or below it."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Budget:
    """``ratio >= value``, ``ratio <= value`` or ``median <= value`` (in the metric's unit)."""

    kind: str  # "ratio_min" | "ratio_max" | "value_max"
    value: float

    def describe(self) -> str:
        if self.kind == "ratio_min":
            return f">= {self.value:g}x"
        if self.kind == "ratio_max":
            return f"<= {self.value:g}x"
        return f"<= {self.value:g}"


@dataclass
class Metric:
    workload: str
    name: str
    unit: str
    higher_is_better: bool = False
    samples: list[float] = field(default_factory=list)
    limit: list[float] = field(default_factory=list)
    limit_name: str = ""
    budget: Budget | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return median(self.samples)

    @property
    def limit_median(self) -> float:
        return median(self.limit)

    @property
    def ratio(self) -> float | None:
        """Daemon over limit: a rate ratio for rates, a cost ratio for times and sizes."""
        if not self.samples or not self.limit or not self.limit_median:
            return None
        return self.median / self.limit_median

    @property
    def met(self) -> bool | None:
        if self.budget is None or not self.samples:
            return None
        if self.budget.kind == "value_max":
            return self.median <= self.budget.value
        ratio = self.ratio
        if ratio is None:
            return None
        return ratio >= self.budget.value if self.budget.kind == "ratio_min" else ratio <= self.budget.value

    def as_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "metric": self.name,
            "unit": self.unit,
            "higherIsBetter": self.higher_is_better,
            "samples": self.samples,
            "median": _finite(self.median),
            "min": min(self.samples) if self.samples else None,
            "max": max(self.samples) if self.samples else None,
            "limit": (
                {"name": self.limit_name, "samples": self.limit, "median": _finite(self.limit_median),
                 "min": min(self.limit), "max": max(self.limit)}
                if self.limit else None
            ),
            "ratio": self.ratio,
            "budget": {"kind": self.budget.kind, "value": self.budget.value} if self.budget else None,
            "met": self.met,
            "note": self.note or None,
        }


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def _number(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def table(metrics: list[Metric]) -> str:
    header = ("workload", "metric", "unit", "median", "min", "max", "limit", "ratio", "budget", "result")
    rows = [header]
    for m in metrics:
        ratio = m.ratio
        verdict = {True: "MET", False: "MISSED", None: ""}[m.met]
        rows.append((
            m.workload, m.name, m.unit, _number(m.median),
            _number(min(m.samples)) if m.samples else "-",
            _number(max(m.samples)) if m.samples else "-",
            _number(m.limit_median) if m.limit else "",
            f"{ratio:.3g}x" if ratio is not None else "",
            m.budget.describe() if m.budget else "",
            verdict,
        ))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    right = {3, 4, 5, 6, 7}
    lines = []
    for n, row in enumerate(rows):
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"  [{m.workload} / {m.name}] {m.note}" for m in metrics if m.note]
    limits = sorted({f"  {m.workload}: limit = {m.limit_name}" for m in metrics if m.limit_name})
    return "\n".join(lines + ([""] + limits if limits else []) + ([""] + notes if notes else []))


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpuModel": model,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def write_json(path: str, metrics: list[Metric], config: dict[str, Any], notes: list[str]) -> None:
    document = {
        "machine": machine(),
        "config": config,
        "results": [m.as_json() for m in metrics],
        "notes": notes,
    }
    with open(path, "w") as f:
        json.dump(document, f, indent=2)
        f.write("\n")
