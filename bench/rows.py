"""One row of the bench table: a target at a worker count and a concurrency, and its figures.

A row is built from a load generator's summary (bench/load_driver.py), or from several
alternating rounds of one target merged into one summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    target: str
    serving: str
    workers: int
    concurrency: int
    calls_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests: int
    errors: int
    foreign_cpu_pct: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one target: counts add up; calls/s and latency percentiles are the rounds'
    median. Each round opens new connections, and how the workers' accept loops share them
    out varies from round to round (see `connections_per_worker`): one round where a worker
    got nearly all of them must not decide the row."""
    merged: dict[str, Any] = {}
    for name in rounds[0]:
        values = [r[name] for r in rounds]
        if name.endswith("_us") and name != "duration_us":
            merged[name] = _median(values)
        elif name == "foreign_cpu_pct":
            merged[name] = sum(values) / len(values)
        elif isinstance(values[0], (int, float)):
            merged[name] = sum(values)
    merged["calls_per_s"] = _median([r["requests"] / (r["duration_us"] / 1e6) for r in rounds])
    return merged


def row_from(
    summary: dict[str, Any], target: str, serving: str, workers: int, concurrency: int
) -> Row:
    errors = sum(
        int(summary[k])
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return Row(
        foreign_cpu_pct=float(summary.get("foreign_cpu_pct", 0.0)),
        target=target,
        serving=serving,
        workers=workers,
        concurrency=concurrency,
        calls_per_s=summary.get(
            "calls_per_s", summary["requests"] / (summary["duration_us"] / 1e6)
        ),
        p50_ms=summary["p50_us"] / 1000,
        p95_ms=summary["p95_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        requests=int(summary["requests"]),
        errors=errors,
    )
