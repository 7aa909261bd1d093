"""Each report's figures equal the same figures computed in Python from the events written."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from report_factories import T0, Ledger

from reports.catalog import ReportOptions, build_report, choose_interval
from reports.model import HistogramChart
from reports.queries import MISMATCH_CATEGORIES


def test_summary_counts_operations_per_pool_and_role(con: Any, built: Ledger) -> None:
    report = build_report(con, "summary")
    got = {(r["pool"], r["role"]): r for r in report.section("pools").records()}
    expected = Counter((op.pool, op.role) for op in built.operations)
    errors = Counter((op.pool, op.role) for op in built.operations if op.outcome == "error")
    assert {key: row["operations"] for key, row in got.items()} == dict(expected)
    assert {key: row["errors"] for key, row in got.items()} == {k: errors[k] for k in expected}


def test_summary_counts_comparisons_per_category(con: Any, built: Ledger) -> None:
    rows = build_report(con, "summary").section("categories").records()
    assert {r["category"]: r["comparisons"] for r in rows} == dict(
        Counter(c.category for c in built.comparisons)
    )
    assert sum(r["share"] for r in rows) == pytest.approx(1.0, abs=1e-3)


def test_summary_groups_differences_by_fingerprint_with_the_earliest_example(
    con: Any, built: Ledger
) -> None:
    report = build_report(con, "summary", ReportOptions(top=3))
    rows = report.section("fingerprints").records()
    counts = Counter(c.fingerprint for c in built.comparisons if c.category != "match")
    assert [r["count"] for r in rows] == sorted(counts.values(), reverse=True)[:3]
    for row in rows:
        assert row["count"] == counts[row["fingerprint"]]
        first = min(
            (c for c in built.comparisons if c.fingerprint == row["fingerprint"]),
            key=lambda c: c.at,
        )
        assert row["example_correlation_id"] == first.correlation_id
        if first.differences:
            assert row["example"].startswith(first.differences[0].path)


def test_summary_counts_dead_letters(con: Any, built: Ledger) -> None:
    rows = build_report(con, "summary").section("dead_letters").records()
    assert sum(r["count"] for r in rows) == len(built.garbage)


def test_performance_gives_latency_quantiles_within_one_percent_per_pool_and_operation(
    con: Any, built: Ledger
) -> None:
    # DDSketch (the rollups' latency bins): within 1 % of the value at rank q * (n - 1).
    rows = build_report(con, "performance").section("pools").records()
    assert len(rows) == len({(op.operation, op.pool) for op in built.operations})
    for row in rows:
        durations = [
            op.duration_ms
            for op in built.operations
            if op.operation == row["operation"] and op.pool == row["pool"]
        ]
        assert row["count"] == len(durations)
        for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
            lower = sorted(durations)[int(q * (len(durations) - 1))]
            assert row[name] == pytest.approx(lower, rel=0.0101, abs=0.006)
        assert row["mean_ms"] == pytest.approx(statistics.fmean(durations), abs=0.006)


def test_performance_compares_v2_with_v1_per_operation(con: Any) -> None:
    report = build_report(con, "performance")
    pools = {(r["operation"], r["pool"]): r for r in report.section("pools").records()}
    for row in report.section("v2_vs_v1").records():
        v1, v2 = pools[(row["operation"], "v1")], pools[(row["operation"], "v2")]
        assert row["p99_ratio"] == pytest.approx(v2["p99_ms"] / v1["p99_ms"], abs=1e-3)


def test_rollout_lists_the_flag_history_by_version(con: Any, built: Ledger) -> None:
    rows = build_report(con, "rollout").section("flag_history").records()
    assert [r["version"] for r in rows] == [c.version for c in built.flag_changes]
    assert [r["rollout_pct"] for r in rows] == [c.v2_rollout_bp / 100 for c in built.flag_changes]
    assert [r["command"] for r in rows] == [c.command for c in built.flag_changes]


def test_rollout_counts_decisions_by_pool_and_reason(con: Any, built: Ledger) -> None:
    report = build_report(con, "rollout")
    totals = report.section("decisions").records()
    expected = Counter((d.pool, str(d.reason)) for d in built.decisions)
    assert {(r["pool"], r["reason"]): r["decisions"] for r in totals} == dict(expected)
    over_time = report.section("decisions_over_time").records()
    assert sum(r["decisions"] for r in over_time) == len(built.decisions)
    assert sum(r["v2"] for r in over_time) == sum(d.pool == "v2" for d in built.decisions)


def test_rollout_chart_marks_every_rollback(con: Any, built: Ledger) -> None:
    (chart,) = build_report(con, "rollout").charts
    rollbacks = [c for c in built.flag_changes if c.command == "rollback"]
    assert rollbacks
    assert [m.at for m in chart.markers] == [c.at for c in rollbacks]  # type: ignore[union-attr]


def test_daily_has_one_row_per_utc_day_with_that_days_figures(con: Any, built: Ledger) -> None:
    rows = build_report(con, "daily").section("days").records()
    days = sorted({op.started_at.date() for op in built.operations})
    assert [r["day"] for r in rows] == days
    for row in rows:
        ops = [op for op in built.operations if op.started_at.date() == row["day"]]
        cmps = [c for c in built.comparisons if c.at.date() == row["day"]]
        assert row["v1_operations"] == sum(op.pool == "v1" for op in ops)
        assert row["v2_operations"] == sum(op.pool == "v2" for op in ops)
        assert row["comparisons"] == len(cmps)
        mismatches = sum(c.category in MISMATCH_CATEGORIES for c in cmps)
        assert row["mismatch_rate"] == pytest.approx(mismatches / len(cmps), abs=1e-4)
        changes = [c for c in built.flag_changes if c.at.date() == row["day"]]
        assert row["flag_changes"] == len(changes)
        assert row["rollbacks"] == sum(c.command == "rollback" for c in changes)


def test_a_window_restricts_every_figure_to_it(con: Any, built: Ledger) -> None:
    since, until = T0 + timedelta(hours=6), T0 + timedelta(hours=18)
    report = build_report(con, "summary", ReportOptions(since=since, until=until))
    inside = [op for op in built.operations if since <= op.started_at < until]
    pools = report.section("pools").records()
    assert sum(r["operations"] for r in pools) == len(inside)
    categories = report.section("categories").records()
    assert sum(r["comparisons"] for r in categories) == sum(
        since <= c.at < until for c in built.comparisons
    )


def test_an_unknown_report_is_refused_with_the_known_names(con: Any) -> None:
    names = "summary, performance, rollout, go-no-go, daily, verdicts"
    with pytest.raises(ValueError, match=names):
        build_report(con, "weekly")


@pytest.mark.parametrize(
    ("span", "interval"),
    [
        (timedelta(seconds=30), "1 second"),
        (timedelta(minutes=30), "1 minute"),
        (timedelta(hours=3), "5 minutes"),
        (timedelta(days=2), "1 hour"),
        (timedelta(days=40), "1 day"),
    ],
)
def test_the_automatic_interval_gives_at_most_sixty_buckets(span: timedelta, interval: str) -> None:
    assert choose_interval(T0, T0 + span) == interval


def test_the_latency_histogram_holds_every_operation_within_its_edges(
    con: Any, built: Ledger
) -> None:
    (chart,) = build_report(con, "performance").charts
    assert isinstance(chart, HistogramChart)
    for pool in ("v1", "v2"):
        durations = [op.duration_ms for op in built.operations if op.pool == pool]
        assert sum(chart.counts[pool]) == len(durations)
        counts = chart.counts[pool]
        for duration in durations:
            bin_ = max(i for i, edge in enumerate(chart.edges[:-1]) if edge <= duration)
            assert counts[bin_] > 0
    assert chart.edges[0] <= min(op.duration_ms for op in built.operations)
    assert chart.edges[-1] > max(op.duration_ms for op in built.operations)


def test_charts_are_left_out_unless_asked_for(con: Any) -> None:
    for name in ("summary", "performance", "rollout", "daily"):
        assert build_report(con, name, ReportOptions(charts=False)).charts == ()
