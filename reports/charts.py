"""Inline SVG for the report charts, drawn here so the HTML file needs nothing else.

Each chart is one ``<svg class="chart">`` with ``data-chart`` naming it; every plotted value
is an element carrying its figures in ``data-*`` attributes and a ``<title>`` tooltip, so a
browser test (and a curious reader's devtools) can count what was drawn.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

from reports.model import BarChart, Chart, HistogramChart, LineChart

__all__ = ["CATEGORY_COLOURS", "svg"]

WIDTH = 760
HEIGHT = 300
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 40, 44

SERIES_COLOURS = ("#2563eb", "#16a34a", "#9333ea", "#ea580c")
POOL_COLOURS = {"v1": "#2563eb", "v2": "#ea580c"}
CATEGORY_COLOURS = {
    "match": "#16a34a",
    "error_match": "#86efac",
    "value_mismatch": "#f59e0b",
    "shape_mismatch": "#c2410c",
    "error_mismatch": "#a855f7",
    "v2_error": "#dc2626",
    "v1_error": "#2563eb",
    "shadow_missing": "#9ca3af",
    "primary_missing": "#4b5563",
}
_FALLBACK = ("#0891b2", "#be185d", "#65a30d", "#7c3aed")


def _f(x: float) -> str:
    return f"{x:.1f}"


class _Frame:
    """The plotting area and the linear maps from data to pixels."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float, top: float = TOP) -> None:
        self.x0, self.x1 = x0, (x1 if x1 > x0 else x0 + 1)
        self.y0, self.y1 = y0, (y1 if y1 > y0 else y0 + 1)
        self.left, self.right = LEFT, WIDTH - RIGHT
        self.top, self.bottom = top, HEIGHT - BOTTOM

    def x(self, value: float) -> float:
        return self.left + (value - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def y(self, value: float) -> float:
        return self.bottom - (value - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)


def _open(chart_name: str, title: str) -> list[str]:
    return [
        f'<svg class="chart" data-chart="{escape(chart_name)}" xmlns="http://www.w3.org/2000/svg"'
        f' viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img"'
        f' aria-label="{escape(title)}">',
        f'<text class="title" x="{LEFT}" y="20">{escape(title)}</text>',
    ]


def _empty(chart_name: str, title: str) -> str:
    parts = _open(chart_name, title)
    parts.append(
        f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">'
        "no data in this window</text></svg>"
    )
    return "".join(parts)


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / max(ticks, 1)
    if raw <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _y_axis(frame: _Frame, label: str) -> list[str]:
    step = _nice_step(frame.y1 - frame.y0)
    parts = []
    value = frame.y0
    while value <= frame.y1 + 1e-9:
        y = frame.y(value)
        text = f"{value:g}" if value < 1e6 else f"{value:.2e}"
        parts.append(
            f'<line class="grid" x1="{frame.left}" x2="{frame.right}" y1="{_f(y)}" y2="{_f(y)}"/>'
            f'<text class="tick" x="{frame.left - 6}" y="{_f(y + 4)}" text-anchor="end">'
            f"{text}</text>"
        )
        value += step
    parts.append(
        f'<text class="axis-label" transform="translate(14 {(frame.top + frame.bottom) / 2})'
        f' rotate(-90)" text-anchor="middle">{escape(label)}</text>'
    )
    return parts


def _time_text(at: datetime, span_s: float) -> str:
    if span_s <= 2 * 3600:
        return at.strftime("%H:%M:%S")
    if span_s <= 3 * 86400:
        return at.strftime("%d %H:%M")
    return at.strftime("%Y-%m-%d")


def _time_axis(frame: _Frame, ticks: int = 6) -> list[str]:
    span = frame.x1 - frame.x0
    parts = [
        f'<line class="axis" x1="{frame.left}" x2="{frame.right}" y1="{frame.bottom}"'
        f' y2="{frame.bottom}"/>'
    ]
    for i in range(ticks + 1):
        value = frame.x0 + span * i / ticks
        x = frame.x(value)
        at = datetime.fromtimestamp(value, tz=UTC)
        anchor = "start" if i == 0 else "end" if i == ticks else "middle"
        parts.append(
            f'<text class="tick" x="{_f(x)}" y="{frame.bottom + 16}" text-anchor="{anchor}">'
            f"{_time_text(at, span)}</text>"
        )
    parts.append(
        f'<text class="axis-label" x="{frame.right}" y="{HEIGHT - 6}" text-anchor="end">'
        "time (UTC)</text>"
    )
    return parts


def _legend_rows(names: Sequence[tuple[str, str]]) -> list[list[tuple[str, str, float]]]:
    """Legend entries wrapped into rows that fit the width: (name, colour, x)."""
    rows: list[list[tuple[str, str, float]]] = [[]]
    x = float(LEFT)
    for name, colour in names:
        width = 16 + 6.5 * len(name)
        if rows[-1] and x + width > WIDTH - RIGHT:
            rows.append([])
            x = float(LEFT)
        rows[-1].append((name, colour, x))
        x += width + 12
    return rows


def _top(names: Sequence[tuple[str, str]]) -> float:
    """Where the plot starts: below the title and the legend rows."""
    return TOP + 16 * len(_legend_rows(names))


def _legend(names: Sequence[tuple[str, str]]) -> list[str]:
    parts = []
    for row_index, row in enumerate(_legend_rows(names)):
        y = 30 + 16 * row_index
        for name, colour, x in row:
            parts.append(
                f'<g class="legend-item"><rect x="{_f(x)}" y="{y}" width="10" height="10"'
                f' fill="{colour}"/><text class="legend" x="{_f(x + 14)}" y="{y + 9}">'
                f"{escape(name)}</text></g>"
            )
    return parts


def _line(chart: LineChart) -> str:
    points = [p for s in chart.series for p in s.points]
    if not points:
        return _empty(chart.name, chart.title)
    times = [at.timestamp() for at, _ in points] + [m.at.timestamp() for m in chart.markers]
    top = chart.y_max if chart.y_max is not None else max(v for _, v in points)
    colours = [
        (series.name, SERIES_COLOURS[index % len(SERIES_COLOURS)])
        for index, series in enumerate(chart.series)
    ]
    if chart.markers:
        colours.append(("rollback", "#dc2626"))
    frame = _Frame(min(times), max(times), 0.0, top or 1.0, _top(colours))
    parts = _open(chart.name, chart.title)
    parts += _y_axis(frame, chart.y_label)
    parts += _time_axis(frame)
    for index, series in enumerate(chart.series):
        colour = colours[index][1]
        coords = [(frame.x(at.timestamp()), frame.y(v)) for at, v in series.points]
        path = []
        for i, (x, y) in enumerate(coords):
            if i == 0:
                path.append(f"M{_f(x)} {_f(y)}")
            elif chart.step and index == 0:
                path.append(f"H{_f(x)} V{_f(y)}")
            else:
                path.append(f"L{_f(x)} {_f(y)}")
        dash = ' stroke-dasharray="4 3"' if index else ""
        parts.append(
            f'<path class="series" data-series="{escape(series.name)}" d="{" ".join(path)}"'
            f' fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        for (at, value), (x, y) in zip(series.points, coords, strict=True):
            parts.append(
                f'<circle class="point" data-series="{escape(series.name)}"'
                f' data-x="{at.isoformat()}" data-y="{value:g}" cx="{_f(x)}" cy="{_f(y)}"'
                f' r="3" fill="{colour}"><title>{escape(series.name)}: {value:g} at'
                f" {at.isoformat()}</title></circle>"
            )
    for marker in chart.markers:
        x = frame.x(marker.at.timestamp())
        parts.append(
            f'<g class="marker {escape(marker.kind)}" data-x="{marker.at.isoformat()}">'
            f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{frame.top}" y2="{frame.bottom}"'
            ' stroke="#dc2626" stroke-width="1.5" stroke-dasharray="5 3"/>'
            f'<path d="M{_f(x - 6)} {frame.top - 8} L{_f(x + 6)} {frame.top - 8}'
            f' L{_f(x)} {frame.top} Z" fill="#dc2626"/>'
            f"<title>{escape(marker.label)} ({marker.at.isoformat()})</title></g>"
        )
    parts += _legend(colours)
    parts.append("</svg>")
    return "".join(parts)


def _histogram(chart: HistogramChart) -> str:
    if not chart.counts or len(chart.edges) < 2:
        return _empty(chart.name, chart.title)
    # Shares of each pool's own total: pools with different volumes still compare by shape.
    shares = {
        pool: [100 * c / (sum(counts) or 1) for c in counts]
        for pool, counts in chart.counts.items()
    }
    top = max(max(values) for values in shares.values()) or 1.0
    scale = math.log10 if chart.log_x else float
    lo_edge, hi_edge = scale(chart.edges[0]), scale(chart.edges[-1])
    pools = list(chart.counts)
    legend = [
        (pool, POOL_COLOURS.get(pool, _FALLBACK[index % len(_FALLBACK)]))
        for index, pool in enumerate(pools)
    ]
    frame = _Frame(lo_edge, hi_edge, 0.0, top * 1.1, _top(legend))
    parts = _open(chart.name, chart.title)
    parts += _y_axis(frame, "% of the pool's operations")
    parts.append(
        f'<line class="axis" x1="{frame.left}" x2="{frame.right}" y1="{frame.bottom}"'
        f' y2="{frame.bottom}"/>'
    )
    ticks = 6
    for i in range(ticks + 1):
        value = lo_edge + (hi_edge - lo_edge) * i / ticks
        ms = 10**value if chart.log_x else value
        anchor = "start" if i == 0 else "end" if i == ticks else "middle"
        parts.append(
            f'<text class="tick" x="{_f(frame.x(value))}" y="{frame.bottom + 16}"'
            f' text-anchor="{anchor}">{ms:.3g}</text>'
        )
    parts.append(
        f'<text class="axis-label" x="{frame.right}" y="{HEIGHT - 6}" text-anchor="end">'
        f"{escape(chart.x_label)}</text>"
    )
    for pool, colour in legend:
        for i, count in enumerate(chart.counts[pool]):
            if not count:
                continue
            lo, hi = chart.edges[i], chart.edges[i + 1]
            x0, x1 = frame.x(scale(lo)), frame.x(scale(hi))
            y = frame.y(shares[pool][i])
            parts.append(
                f'<rect class="bar" data-pool="{escape(pool)}" data-count="{count}"'
                f' data-lo="{lo:.4g}" data-hi="{hi:.4g}" x="{_f(x0 + 0.5)}" y="{_f(y)}"'
                f' width="{_f(max(x1 - x0 - 1, 1))}" height="{_f(frame.bottom - y)}"'
                f' fill="{colour}" fill-opacity="0.55"><title>{escape(pool)}: {count} operations'
                f" between {lo:.3g} and {hi:.3g} ms ({shares[pool][i]:.1f} %)</title></rect>"
            )
    parts += _legend(legend)
    parts.append("</svg>")
    return "".join(parts)


def _bars(chart: BarChart) -> str:
    if not chart.bars:
        return _empty(chart.name, chart.title)
    times = [bar.at.timestamp() for bar in chart.bars]
    # Each bar spans to the next bucket; the last one as wide as the smallest gap.
    gaps = [b - a for a, b in itertools.pairwise(times)]
    width_s = min(gaps) if gaps else 60.0
    top = max(sum(bar.parts.values()) for bar in chart.bars)
    colours = {
        key: CATEGORY_COLOURS.get(key, _FALLBACK[i % len(_FALLBACK)])
        for i, key in enumerate(chart.keys)
    }
    legend = [(key, colours[key]) for key in chart.keys]
    frame = _Frame(times[0], times[-1] + width_s, 0.0, top * 1.05 or 1.0, _top(legend))
    parts = _open(chart.name, chart.title)
    parts += _y_axis(frame, chart.y_label)
    parts += _time_axis(frame)
    for bar in chart.bars:
        start = bar.at.timestamp()
        x0, x1 = frame.x(start), frame.x(start + width_s)
        base = 0
        for key in chart.keys:
            count = bar.parts.get(key, 0)
            if not count:
                continue
            y_top, y_base = frame.y(base + count), frame.y(base)
            parts.append(
                f'<rect class="bar" data-key="{escape(key)}" data-x="{bar.at.isoformat()}"'
                f' data-count="{count}" x="{_f(x0 + 0.5)}" y="{_f(y_top)}"'
                f' width="{_f(max(x1 - x0 - 1, 1))}" height="{_f(max(y_base - y_top, 0.5))}"'
                f' fill="{colours[key]}"><title>{escape(key)}: {count} at'
                f" {bar.at.isoformat()}</title></rect>"
            )
            base += count
    parts += _legend(legend)
    parts.append("</svg>")
    return "".join(parts)


def svg(chart: Chart) -> str:
    """The chart as one inline ``<svg>`` element."""
    if isinstance(chart, LineChart):
        return _line(chart)
    if isinstance(chart, HistogramChart):
        return _histogram(chart)
    return _bars(chart)
