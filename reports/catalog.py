"""The named reports: each builds a :class:`Report` from a connection to the ledger.

A builder only runs SQL from :mod:`reports.queries` and shapes the rows; rendering is
elsewhere. Every builder takes the same :class:`ReportOptions`, so the CLI is one command.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

from ddsketch import LogarithmicMapping

from ledger.gates import judge
from ledger.health import RELATIVE_ACCURACY
from reports import queries
from reports.cleanup import cleanup
from reports.compatibility import compatibility
from reports.gates import collect, load_thresholds
from reports.model import (
    Bar,
    BarChart,
    Chart,
    HistogramChart,
    LineChart,
    Marker,
    Report,
    ReportOptions,
    Section,
    Series,
)
from reports.postmigration import post_migration
from reports.queries import fetch

__all__ = [
    "REPORTS",
    "ReportOptions",
    "build_report",
    "charts",
    "choose_interval",
    "fetch",
    "go_no_go",
]


def _section(con: Any, name: str, title: str, sql: str, note: str = "", **params: Any) -> Section:
    columns, rows = fetch(con, sql, **params)
    return Section(name, title, columns, tuple(tuple(r) for r in rows), note)


#: Candidate bucket widths, smallest first: (DuckDB interval text, seconds).
_INTERVALS: tuple[tuple[str, int], ...] = (
    ("1 second", 1),
    ("5 seconds", 5),
    ("15 seconds", 15),
    ("1 minute", 60),
    ("5 minutes", 300),
    ("15 minutes", 900),
    ("1 hour", 3600),
    ("6 hours", 21600),
    ("1 day", 86400),
    ("7 days", 604800),
)


def choose_interval(first: datetime | None, last: datetime | None, buckets: int = 60) -> str:
    """The smallest bucket width giving at most ``buckets`` buckets over [first, last]."""
    if first is None or last is None:
        return "1 hour"
    span = (last - first).total_seconds()
    for text, seconds in _INTERVALS:
        if span / seconds <= buckets:
            return text
    return _INTERVALS[-1][0]


def _spans(con: Any) -> tuple[datetime | None, datetime | None]:
    """First and last event time in the window, computed once per window (``scope``)."""
    con.execute(f"CREATE TEMP TABLE IF NOT EXISTS scoped_spans AS {queries.SPANS}")
    _, rows = fetch(con, "SELECT first_at, last_at FROM scoped_spans")
    first, last = rows[0]
    return first, last


def step_us(con: Any, interval: str) -> int:
    """An interval's length in microseconds (DuckDB parses the text: '15 minutes', '1 day')."""
    # Deferred: DuckDB loads only when the ledger is read or written.
    import duckdb

    try:
        rows = con.execute(
            "SELECT CAST(epoch(CAST($text AS INTERVAL)) * 1000000 AS BIGINT)", {"text": interval}
        ).fetchall()
    except duckdb.Error:
        raise ValueError(f"interval {interval!r} is not a DuckDB interval ('15 minutes')") from None
    step = int(rows[0][0])
    if step < 1_000_000:
        raise ValueError(f"interval {interval!r} is shorter than one second")
    return step


def _interval(con: Any, options: ReportOptions) -> str:
    if options.interval is not None:
        return options.interval
    return choose_interval(*_spans(con))


# --- summary ----------------------------------------------------------------------------------


def summary(con: Any, options: ReportOptions) -> Report:
    sections = (
        _section(con, "overview", "Events in the ledger", queries.OVERVIEW),
        _section(con, "pools", "Operations per pool", queries.POOLS),
        _section(con, "categories", "Comparisons per category", queries.CATEGORIES),
        _section(
            con,
            "fingerprints",
            f"Top {options.top} difference fingerprints",
            queries.FINGERPRINTS,
            note="one row per kind of difference, with its count and the earliest example",
            limit=options.top,
        ),
        _section(
            con,
            "dead_letters",
            "Dead letters (input that could not be used)",
            queries.DEAD_LETTERS,
            limit=options.top,
        ),
    )
    if not options.charts:
        return Report("summary", "Summary", sections)
    interval = _interval(con, options)
    return Report(
        "summary",
        "Summary",
        sections,
        charts=(
            categories_chart(con, interval),
            latency_chart(con, options.histogram_bins),
        ),
        meta={"interval": interval},
    )


# --- performance ------------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def performance(con: Any, options: ReportOptions) -> Report:
    per_pool = _section(
        con,
        "pools",
        "Per pool and operation",
        queries.PERFORMANCE,
    )
    quantiles = queries.sketches(con, ("operation", "pool"))
    filled = []
    for row in per_pool.rows:
        sketch = quantiles.get((row[0], row[1]))
        q = [None if sketch is None else sketch.quantile(f) for f in (0.50, 0.95, 0.99)]
        filled.append((*row[:5], *(None if v is None else round(v, 2) for v in q), *row[8:]))
    per_pool = replace(
        per_pool,
        rows=tuple(filled),
        note="latency in ms (DDSketch quantiles, within 1 % of the exact ones); "
        "resources as reported by the pools",
    )
    by_key = {(r["operation"], r["pool"]): r for r in per_pool.records()}
    rows = []
    for operation in sorted({operation for operation, _ in by_key}):
        v1 = by_key.get((operation, "v1"), {})
        v2 = by_key.get((operation, "v2"), {})
        rows.append(
            (
                operation,
                v1.get("count", 0),
                v2.get("count", 0),
                v1.get("error_rate"),
                v2.get("error_rate"),
                _ratio(v2.get("p50_ms"), v1.get("p50_ms")),
                _ratio(v2.get("p99_ms"), v1.get("p99_ms")),
                _ratio(v2.get("cpu_ms_mean"), v1.get("cpu_ms_mean")),
            )
        )
    versus = Section(
        "v2_vs_v1",
        "V2 against V1 per operation",
        (
            "operation",
            "v1_count",
            "v2_count",
            "v1_error_rate",
            "v2_error_rate",
            "p50_ratio",
            "p99_ratio",
            "cpu_ratio",
        ),
        tuple(rows),
        note="ratios are V2 / V1 (above 1: V2 slower or heavier)",
    )
    return Report(
        "performance",
        "Performance",
        (per_pool, versus),
        charts=(latency_chart(con, options.histogram_bins),) if options.charts else (),
    )


# --- rollout ----------------------------------------------------------------------------------


def _decisions_over_time(con: Any, interval: str) -> Section:
    step = step_us(con, interval)
    _, rows = fetch(con, queries.bucketed("DECISIONS_OVER_TIME", step), step_us=step)
    reasons = sorted({reason for _, _, reason, _ in rows})
    table: dict[datetime, dict[str, int]] = {}
    for bucket, pool, reason, n in rows:
        cell = table.setdefault(bucket, {})
        cell["decisions"] = cell.get("decisions", 0) + n
        cell[pool] = cell.get(pool, 0) + n
        cell[reason] = cell.get(reason, 0) + n
    out = []
    for bucket in sorted(table):
        cell = table[bucket]
        total = cell["decisions"]
        out.append(
            (
                bucket,
                total,
                cell.get("v1", 0),
                cell.get("v2", 0),
                round(cell.get("v2", 0) / total, 4),
                *(cell.get(reason, 0) for reason in reasons),
            )
        )
    return Section(
        "decisions_over_time",
        f"Decisions per {interval}",
        ("bucket", "decisions", "v1", "v2", "v2_share", *(r.lower() for r in reasons)),
        tuple(out),
        note="reason columns count decisions of either pool",
    )


def rollout(con: Any, options: ReportOptions) -> Report:
    interval = _interval(con, options)
    flag = options.flag
    sections = (
        _section(con, "decisions", "Decisions by pool and reason", queries.DECISION_TOTALS),
        _decisions_over_time(con, interval),
        _section(
            con,
            "flag_history",
            f"Flag history of {flag}",
            queries.FLAG_HISTORY,
            note="every accepted change, by version (rollout_pct is the configured split)",
            flag=flag,
        ),
        _section(con, "rejections", "Refused flag commands", queries.FLAG_REJECTIONS, flag=flag),
        _section(
            con, "rollbacks", "Rollbacks triggered, with their cause", queries.ROLLBACKS, flag=flag
        ),
    )
    return Report(
        "rollout",
        "Rollout",
        sections,
        charts=(rollout_chart(con, flag, interval),) if options.charts else (),
        meta={"interval": interval, "flag": flag},
    )


# --- daily ------------------------------------------------------------------------------------


def daily(con: Any, options: ReportOptions) -> Report:
    day = _section(
        con,
        "days",
        "Day by day (UTC)",
        queries.DAILY,
        note="mismatch_rate counts value/shape/error mismatches and V2-only errors",
        flag=options.flag,
    )
    p99 = {
        (date(1970, 1, 1) + timedelta(days=int(d)), pool): sketch.quantile(0.99)
        for (d, pool), sketch in queries.sketches(con, ("minute // 1440", "pool")).items()
    }
    at = {name: i for i, name in enumerate(day.columns)}
    filled = []
    for row in day.rows:
        cells = list(row)
        for pool in ("v1", "v2"):
            value = p99.get((row[at["day"]], pool))
            cells[at[f"{pool}_p99_ms"]] = None if value is None else round(value, 2)
        filled.append(tuple(cells))
    day = replace(day, rows=tuple(filled))
    if not options.charts:
        return Report("daily", "Daily", (day,))
    interval = _interval(con, options)
    return Report(
        "daily",
        "Daily",
        (day,),
        charts=charts(con, options, interval),
        meta={"interval": interval},
    )


# --- charts -----------------------------------------------------------------------------------


def rollout_chart(con: Any, flag: str, interval: str) -> LineChart:
    """Configured V2 percentage as a step line, the observed V2 share, rollbacks marked."""
    _, steps = fetch(con, queries.CHART_FLAG_STEPS, flag=flag)
    configured = [(at, float(pct)) for at, pct, *_ in steps]
    last = _spans(con)[1]
    if configured and last is not None and last > configured[-1][0]:
        configured.append((last, configured[-1][1]))  # hold the last value to the end
    markers = tuple(
        Marker(at, f"v{version} rollback by {actor}: {reason}")
        for at, _, command, version, actor, reason in steps
        if command == "rollback"
    )
    step = step_us(con, interval)
    _, share = fetch(con, queries.bucketed("CHART_V2_SHARE", step), step_us=step)
    series = [Series("configured rollout %", tuple(configured))]
    if share:
        series.append(Series("observed V2 share %", tuple((at, float(pct)) for at, pct in share)))
    return LineChart(
        "rollout",
        "Rollout percentage over time",
        "% to V2",
        tuple(series),
        markers=markers,
        step=True,
        y_max=100.0,
    )


def latency_chart(con: Any, per_decade: int) -> HistogramChart:
    """Latency distribution per pool on logarithmic bins shared by both pools."""
    # From the DDSketch bins: each bin's value (within 1 % of its latencies) goes to the
    # chart's logarithmic bin; the zero bucket counts as 1 us.
    mapping = LogarithmicMapping(RELATIVE_ACCURACY)
    binned: dict[tuple[str, int], int] = {}
    for (pool,), sketch in queries.sketches(con, ("pool",)).items():
        values = [(0.001, sketch.zero_count)] if sketch.zero_count else []
        values += [(mapping.value(key), n) for key, n in sketch.bins.items()]
        for value, n in values:
            bin_ = math.floor(math.log10(max(value, 0.001)) * per_decade)
            binned[(pool, bin_)] = binned.get((pool, bin_), 0) + n
    rows = [(pool, bin_, n) for (pool, bin_), n in sorted(binned.items())]
    if not rows:
        return HistogramChart("latency", "Latency distribution per pool", "ms", (), {})
    low = min(bin_ for _, bin_, _ in rows)
    high = max(bin_ for _, bin_, _ in rows)
    edges = tuple(10 ** (k / per_decade) for k in range(low, high + 2))
    counts: dict[str, list[int]] = {}
    for pool, bin_, n in rows:
        counts.setdefault(pool, [0] * (high - low + 1))[bin_ - low] += n
    return HistogramChart(
        "latency",
        "Latency distribution per pool",
        "duration (ms, log scale)",
        edges,
        {pool: tuple(values) for pool, values in sorted(counts.items())},
    )


def categories_chart(con: Any, interval: str) -> BarChart:
    """Comparison categories per time bucket, stacked (matches at the bottom)."""
    step = step_us(con, interval)
    _, rows = fetch(con, queries.bucketed("CHART_CATEGORIES", step), step_us=step)
    by_bucket: dict[datetime, dict[str, int]] = {}
    for bucket, category, n in rows:
        by_bucket.setdefault(bucket, {})[category] = n
    present = {category for _, category, _ in rows}
    order = [c for c in _CATEGORY_ORDER if c in present]
    order += sorted(present - set(order))
    return BarChart(
        "categories",
        f"Comparison categories per {interval}",
        "comparisons",
        tuple(Bar(at, parts) for at, parts in sorted(by_bucket.items())),
        tuple(order),
    )


_CATEGORY_ORDER = (
    "match",
    "error_match",
    "value_mismatch",
    "shape_mismatch",
    "error_mismatch",
    "v2_error",
    "v1_error",
    "shadow_missing",
    "primary_missing",
)


def charts(con: Any, options: ReportOptions, interval: str | None = None) -> tuple[Chart, ...]:
    """The three charts of the HTML report."""
    interval = interval or _interval(con, options)
    return (
        rollout_chart(con, options.flag, interval),
        latency_chart(con, options.histogram_bins),
        categories_chart(con, interval),
    )


def go_no_go(con: Any, options: ReportOptions) -> Report:
    """The switchover checklist: the window's figures judged by ``ledger.gates.judge``."""
    limits = load_thresholds(options.thresholds)
    if options.audit_sample != ReportOptions().audit_sample:
        limits = replace(limits, audit_sample=options.audit_sample)
    figures = collect(con, options, limits)
    checks = judge(figures, limits)
    split_rows = tuple(
        (
            ratio.unit,
            test.group.flag_version,
            test.group.expected_bp / 10_000,
            test.observed_share,
            test.group.v1,
            test.group.v2,
            test.statistic,
            test.p_value,
        )
        for ratio in figures.sample_ratios
        for test in ratio.versions
    )
    split = Section(
        "sample_ratio",
        "Sample ratio per flag version (distinct sessions of SPLIT decisions)",
        ("unit", "flag_version", "expected_v2_share", "observed_v2_share", "v1", "v2",
         "chi_square", "p_value"),
        split_rows,
        note="overall: the smallest p-value times the versions; windows: see the checklist",
    )  # fmt: skip
    section = Section(
        "checklist",
        "Switchover checklist",
        ("check", "status", "figure", "threshold"),
        tuple((c.name, "PASS" if c.passed else "FAIL", c.figure, c.threshold) for c in checks),
        note="thresholds: " + (str(options.thresholds) if options.thresholds else "defaults"),
    )
    return Report(
        "go-no-go",
        "Go / no-go",
        (section, split),
        charts=charts(con, options) if options.charts else (),
        passed=all(c.passed for c in checks),
        meta={"flag": options.flag},
    )


def verdicts(con: Any, options: ReportOptions) -> Report:
    """Why the switchover did what it did: each step beside the gate verdicts it cites."""
    columns, rows = queries.fetch(
        con, queries.VERDICTS, flag=options.flag, since=options.since, until=options.until
    )
    section = Section(
        "verdicts",
        "Switchover steps and the verdicts they cite",
        columns,
        tuple(tuple(row) for row in rows),
        note="p_value of a mixture_sprt verdict is the always-valid 1 / e_value",
    )
    return Report("verdicts", "Gate verdicts", (section,), meta={"flag": options.flag})


#: Report name -> builder.
REPORTS: dict[str, Callable[[Any, ReportOptions], Report]] = {
    "summary": summary,
    "performance": performance,
    "rollout": rollout,
    "go-no-go": go_no_go,
    "daily": daily,
    "verdicts": verdicts,
    "compatibility": compatibility,
    "cleanup": cleanup,
    "post-migration": post_migration,
}


def build_report(con: Any, name: str, options: ReportOptions | None = None) -> Report:
    """Build report ``name`` over ``con`` (a DuckDB connection with the ledger's tables)."""
    options = options or ReportOptions()
    try:
        builder = REPORTS[name]
    except KeyError:
        raise ValueError(f"unknown report {name!r}; choose one of {', '.join(REPORTS)}") from None
    queries.scope(con, options.since, options.until, use_rollups=options.rollups)
    return builder(con, options)
