"""The pure before/after comparison: point figures, intervals, verdicts."""

from __future__ import annotations

import pytest

from ledger.postmigration import Period, compare_periods, latency_histogram


def period(durations: list[float], errors: int = 0, seconds: float = 100.0) -> Period:
    n = len(durations)
    return Period(
        durations, [i < errors for i in range(n)], [d / 2 for d in durations], [1e6] * n, seconds
    )


def by_metric(baseline: Period, now: Period, seed: int = 0) -> dict[str, object]:
    return {c.metric: c for c in compare_periods(baseline, now, seed=seed, resamples=300)}


def test_the_same_sample_twice_is_no_clear_change() -> None:
    sample = [float(10 + i % 17) for i in range(500)]
    got = by_metric(period(sample), period(sample))
    for metric in ("p50_ms", "p95_ms", "p99_ms", "cpu_ms_mean", "error_rate"):
        change = got[metric]
        assert change.change == 0  # type: ignore[attr-defined]
        assert change.verdict == "no clear change"  # type: ignore[attr-defined]


def test_a_slower_v2_is_a_latency_regression_with_the_exact_ratio() -> None:
    before = [float(10 + i % 10) for i in range(400)]
    after = [d * 1.5 for d in before]
    got = by_metric(period(before), period(after))
    p95 = got["p95_ms"]
    assert p95.change == pytest.approx(0.5)  # type: ignore[attr-defined]
    assert p95.verdict == "regression"  # type: ignore[attr-defined]
    assert p95.low > 0  # type: ignore[attr-defined]


def test_throughput_is_the_count_over_the_period_without_verdict() -> None:
    got = by_metric(period([1.0] * 100, seconds=100), period([1.0] * 300, seconds=100))
    t = got["throughput_per_s"]
    assert (t.baseline, t.now, t.change) == (1.0, 3.0, pytest.approx(2.0))  # type: ignore[attr-defined]
    assert t.low < 2.0 < t.high  # type: ignore[attr-defined]
    assert t.verdict == "no verdict"  # type: ignore[attr-defined]


def test_an_empty_period_gives_figures_without_change() -> None:
    got = by_metric(period([5.0, 6.0]), period([]))
    assert got["p50_ms"].now is None  # type: ignore[attr-defined]
    assert got["p50_ms"].change is None  # type: ignore[attr-defined]


def test_the_histogram_shares_log_bins_between_groups() -> None:
    edges, counts = latency_histogram({"a": [1.0, 10.0], "b": [100.0]}, per_decade=1)
    assert edges == (1.0, 10.0, 100.0, 1000.0)
    assert counts == {"a": (1, 1, 0), "b": (0, 0, 1)}
