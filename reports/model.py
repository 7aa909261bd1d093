"""What a report is, independent of how it is shown: titled sections of rows, and charts.

Every rendering (terminal table, JSON, CSV, HTML) reads these values, so the figures in the
HTML file are the figures of ``--format json`` by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = [
    "Bar",
    "BarChart",
    "Chart",
    "HistogramChart",
    "LineChart",
    "Marker",
    "Report",
    "Section",
    "Series",
]


@dataclass(frozen=True)
class Section:
    """One table of a report: a name for machines, a title for people, typed rows."""

    name: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    note: str = ""

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass(frozen=True)
class Series:
    """One named line: (time, value) points in time order."""

    name: str
    points: tuple[tuple[datetime, float], ...]


@dataclass(frozen=True)
class Marker:
    """A labelled moment on a time chart (a rollback, for instance)."""

    at: datetime
    label: str
    kind: str = "rollback"


@dataclass(frozen=True)
class LineChart:
    """Values over time; ``step`` draws each value until the next (a flag's percentage)."""

    name: str
    title: str
    y_label: str
    series: tuple[Series, ...]
    markers: tuple[Marker, ...] = ()
    step: bool = False
    y_max: float | None = None


@dataclass(frozen=True)
class HistogramChart:
    """Counts per bin for several groups on one (logarithmic) axis of bin edges."""

    name: str
    title: str
    x_label: str
    edges: tuple[float, ...]
    #: group name -> one count per bin (``len(edges) - 1`` counts).
    counts: Mapping[str, tuple[int, ...]]
    log_x: bool = True


@dataclass(frozen=True)
class Bar:
    """One stacked bar: its time and the count of each part."""

    at: datetime
    parts: Mapping[str, int]


@dataclass(frozen=True)
class BarChart:
    """Stacked counts per time bucket (comparison categories over time)."""

    name: str
    title: str
    y_label: str
    bars: tuple[Bar, ...]
    #: Stacking order, bottom first.
    keys: tuple[str, ...]


Chart = LineChart | HistogramChart | BarChart


@dataclass(frozen=True)
class Report:
    """A named report over one ledger; ``passed`` is set by reports that give a verdict."""

    name: str
    title: str
    sections: tuple[Section, ...]
    charts: tuple[Chart, ...] = ()
    passed: bool | None = None
    notes: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> Section:
        for section in self.sections:
            if section.name == name:
                return section
        known = ", ".join(s.name for s in self.sections)
        raise KeyError(f"report {self.name} has no section {name!r} (sections: {known})")


@dataclass(frozen=True)
class ReportOptions:
    """What every report accepts; each uses the parts it needs."""

    flag: str = "v2_migration"
    since: datetime | None = None
    until: datetime | None = None
    #: Time bucket of "over time" tables and charts (DuckDB interval text); None = automatic.
    interval: str | None = None
    top: int = 10
    #: go-no-go: a TOML file of thresholds (None = the defaults).
    thresholds: Path | None = None
    #: go-no-go: decisions re-decided in Python besides the SQL audit.
    audit_sample: int = 200
    #: Latency histogram bins per factor of ten.
    histogram_bins: int = 8
    #: Build the charts (only the HTML form shows them; they cost extra scans).
    charts: bool = True
    #: Read the busy tables through their per-minute rollups (False: raw rows only; the
    #: same figures, for checking and for ledgers whose rollups are suspect).
    rollups: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
