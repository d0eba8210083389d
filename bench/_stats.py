"""Numbers for benchmarks: percentiles and a side-by-side table with ratios to a baseline row."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO


def percentiles(samples: Sequence[float], points: Sequence[float] = (50, 95, 99)) -> list[float]:
    """Percentiles by linear interpolation between closest ranks (numpy's default)."""
    if not samples:
        raise ValueError("percentiles of no samples")
    ordered = sorted(samples)
    values = []
    for point in points:
        if not 0 <= point <= 100:
            raise ValueError(f"percentile {point} is outside 0..100")
        rank = (len(ordered) - 1) * point / 100
        low, high = math.floor(rank), math.ceil(rank)
        values.append(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))
    return values


@dataclass
class Result:
    """One benchmarked path: `count` operations in `seconds`, optional per-operation latencies."""

    name: str
    count: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds
    note: str = ""

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else math.inf


def format_table(
    results: Sequence[Result], *, baseline: int = 0, points: Sequence[float] = (50, 95, 99)
) -> str:
    """An aligned table: ops/s, latency percentiles in ms, and ratios to `results[baseline]`.

    `rate/base` above 1 is faster than the baseline; `p50/base` above 1 is slower.
    """
    base = results[baseline]
    base_p50 = percentiles(base.latencies, (50,))[0] if base.latencies else None
    header = ["path", "ops/s", *(f"p{p:g} ms" for p in points), "rate/base", "p50/base", ""]
    rows = [header]
    for result in results:
        marks = percentiles(result.latencies, points) if result.latencies else None
        p50 = percentiles(result.latencies, (50,))[0] if result.latencies else None
        rows.append(
            [
                result.name,
                f"{result.rate:,.0f}",
                *([f"{value * 1000:.3f}" for value in marks] if marks else ["-"] * len(points)),
                f"{result.rate / base.rate:.2f}",
                f"{p50 / base_p50:.2f}" if p50 is not None and base_p50 else "-",
                result.note,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for number, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:-1], widths[1:-1], strict=True)]
        cells.append(row[-1])
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def print_table(
    results: Sequence[Result], *, baseline: int = 0, file: TextIO | None = None
) -> None:
    print(format_table(results, baseline=baseline), file=file or sys.stdout)
