"""Geometry for the dashboard's server-rendered SVG charts.

The templates draw what these functions measure, so the page needs no chart library, no
script and no inline style (the Content Security Policy allows neither): colours come from CSS
classes named after the outcome groups, sizes from SVG attributes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from controlplane.operator.dashboard import OUTCOME_GROUPS, MinuteBucket, OutcomeCounts, ToolCount

OUTCOME_LABELS = {
    "ok": "ok",
    "denied": "denied",
    "rate_limited": "rate-limited",
    "client_error": "client errors",
    "qontak_error": "Qontak errors",
    "error": "control plane errors",
}

# The per-minute chart's drawing box, in SVG user units (it scales to the page width).
WIDTH = 1000
HEIGHT = 150
LEFT = 34  # room for the y-axis labels
BOTTOM = 18  # room for the time labels
TOP = 6


@dataclass(frozen=True)
class Segment:
    group: str
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Bar:
    title: str
    segments: list[Segment]


@dataclass(frozen=True)
class Tick:
    position: float
    label: str
    anchor: str = "middle"  # SVG text-anchor, so the first and last labels stay inside


@dataclass(frozen=True)
class MinuteChart:
    width: int
    height: int
    left: int
    plot_bottom: float
    plot_right: float
    bars: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    peak: int


@dataclass(frozen=True)
class Share:
    group: str
    label: str
    count: int
    percent: float
    x: float  # percent offset of the segment in a 100 %-wide bar
    width: float


@dataclass(frozen=True)
class ToolBar:
    tool: str
    calls: int
    failed: int
    segments: list[Share]  # x and width in percent of the busiest tool's bar


def latency_label(milliseconds: float | None) -> str:
    """12 ms, 3.4 ms, 0.2 ms: whole milliseconds once they stop being small."""
    if milliseconds is None:
        return "\u2013"  # an en dash: no value yet
    return f"{milliseconds:.0f}" if milliseconds >= 10 else f"{milliseconds:.1f}"


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 x 10^k at or above `value`: y-axis maxima people can read."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def _minute_title(bucket: MinuteBucket) -> str:
    counts = bucket.outcomes
    parts = [f"{n} {OUTCOME_LABELS[group]}" for group, n in counts.items() if n]
    detail = ": " + ", ".join(parts) if parts else ""
    plural = "" if counts.total == 1 else "s"
    return f"{bucket.start:%H:%M} UTC, {counts.total} call{plural}{detail}"


def minute_chart(minutes: list[MinuteBucket]) -> MinuteChart:
    """Stacked bars of calls per minute by outcome group, oldest minute on the left."""
    plot_bottom = float(HEIGHT - BOTTOM)
    plot_height = plot_bottom - TOP
    plot_width = WIDTH - LEFT - 4
    peak = max((bucket.outcomes.total for bucket in minutes), default=0)
    scale_max = nice_ceiling(peak)
    slot = plot_width / max(len(minutes), 1)
    bar_width = max(slot * 0.78, 1.0)
    bars = []
    for index, bucket in enumerate(minutes):
        x = LEFT + index * slot + (slot - bar_width) / 2
        y = plot_bottom
        segments = []
        for group in OUTCOME_GROUPS:
            count = getattr(bucket.outcomes, group)
            if not count:
                continue
            height = plot_height * count / scale_max
            y -= height
            segments.append(
                Segment(group, round(x, 2), round(y, 2), round(bar_width, 2), round(height, 2))
            )
        if not segments:
            # An empty minute is still hoverable: a hairline shows the minute exists.
            segments.append(Segment("empty", round(x, 2), plot_bottom - 1, round(bar_width, 2), 1))
        bars.append(Bar(title=_minute_title(bucket), segments=segments))
    y_ticks = [Tick(plot_bottom, "0"), Tick(float(TOP), str(scale_max))]
    if scale_max % 2 == 0:
        y_ticks.insert(1, Tick(round(plot_bottom - plot_height / 2, 2), str(scale_max // 2)))
    x_ticks = []
    last = len(minutes) - 1
    for index, bucket in enumerate(minutes):
        label = f"{bucket.start:%H:%M}"
        if index == 0:
            x_ticks.append(Tick(float(LEFT), label, "start"))
        elif index == last:
            x_ticks.append(Tick(round(LEFT + len(minutes) * slot, 2), label, "end"))
        elif index % 15 == 0:
            x_ticks.append(Tick(round(LEFT + (index + 0.5) * slot, 2), label))
    return MinuteChart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        plot_bottom=plot_bottom,
        plot_right=float(WIDTH - 4),
        bars=bars,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        peak=peak,
    )


def outcome_shares(outcomes: OutcomeCounts) -> list[Share]:
    """Each outcome group's part of all calls, laid end to end along a 100 %-wide bar."""
    total = outcomes.total
    shares = []
    offset = 0.0
    for group, count in outcomes.items():
        percent = 100.0 * count / total if total else 0.0
        shares.append(
            Share(
                group=group,
                label=OUTCOME_LABELS[group],
                count=count,
                percent=round(percent, 1),
                x=round(offset, 3),
                width=round(percent, 3),
            )
        )
        offset += percent
    return shares


def tool_bars(tools: list[ToolCount]) -> list[ToolBar]:
    """Horizontal bars for the top tools, scaled to the busiest, split by outcome group."""
    longest = max((tool.calls for tool in tools), default=0)
    bars = []
    for tool in tools:
        segments = []
        offset = 0.0
        for group, count in tool.outcomes.items():
            if not count:
                continue
            width = 100.0 * count / longest
            share = 100.0 * count / tool.calls
            segments.append(
                Share(
                    group,
                    OUTCOME_LABELS[group],
                    count,
                    round(share, 1),
                    round(offset, 3),
                    round(width, 3),
                )
            )
            offset += width
        bars.append(
            ToolBar(tool=tool.tool, calls=tool.calls, failed=tool.failed, segments=segments)
        )
    return bars
