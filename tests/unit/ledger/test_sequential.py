"""Sequential gates: the window likelihood ratio against scipy, the martingale property
computed exactly, and verdicts over health windows."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import hypergeom, nchypergeom_fisher

from ledger.events import HealthAssessed
from ledger.sequential import (
    EProcess,
    SequentialPolicy,
    Table,
    exceedance_table,
    log_likelihood_ratio,
    sequential_verdicts,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("table", "psi"),
    [
        (Table(900, 9, 100, 4), 1.5),
        (Table(900, 9, 100, 4), 5.0),
        (Table(500, 5, 500, 12), 2.0),
        (Table(50, 0, 950, 30), 3.0),
        (Table(10, 10, 10, 3), 2.0),
    ],
)
def test_the_window_likelihood_ratio_is_scipys_fisher_over_the_hypergeometric(
    table: Table, psi: float
) -> None:
    total, k = table.v1_n + table.v2_n, table.v1_events + table.v2_events
    expected = nchypergeom_fisher.pmf(table.v2_events, total, table.v2_n, k, psi) / hypergeom.pmf(
        table.v2_events, total, table.v2_n, k
    )
    assert log_likelihood_ratio(table, psi) == pytest.approx(math.log(expected), rel=1e-9)


@given(
    st.integers(1, 300), st.integers(1, 300), st.integers(1, 40), st.sampled_from([1.5, 2.0, 8.0])
)
def test_under_the_null_the_likelihood_ratio_has_expectation_exactly_one(
    n1: int, n2: int, k: int, psi: float
) -> None:
    # Ville's inequality needs a martingale: E[LR | margins] = 1 when both pools are alike.
    k = min(k, n1 + n2 - 1)
    low, high = max(0, k - n1), min(k, n2)
    expectation = sum(
        hypergeom.pmf(x, n1 + n2, n2, k)
        * math.exp(log_likelihood_ratio(Table(n1, k - x, n2, x), psi))
        for x in range(low, high + 1)
    )
    assert expectation == pytest.approx(1.0, rel=1e-7)


def test_a_window_without_events_or_without_one_pool_says_nothing() -> None:
    for table in (Table(100, 0, 100, 0), Table(0, 0, 100, 3), Table(5, 5, 5, 5)):
        assert log_likelihood_ratio(table, 2.0) == 0.0
        assert EProcess.start([2.0]).update(table).windows == 0


def test_the_mixture_is_the_mean_of_the_products() -> None:
    tables = [Table(900, 9, 100, 4), Table(800, 7, 200, 5)]
    process = EProcess.start([1.5, 3.0])
    for table in tables:
        process = process.update(table)
    products = [math.exp(sum(log_likelihood_ratio(t, psi) for t in tables)) for psi in (1.5, 3.0)]
    assert process.e_value == pytest.approx(sum(products) / 2, rel=1e-12)
    assert (process.windows, process.v2_n, process.v2_events) == (2, 300, 9)
    # Mantel-Haenszel: sum(a d / n) / sum(b c / n)
    a_d = 4 * 891 / 1000 + 5 * 793 / 1000
    b_c = 96 * 9 / 1000 + 195 * 7 / 1000
    assert process.odds_ratio == pytest.approx(a_d / b_c)


def test_exceedances_are_counted_above_the_pooled_order_statistic() -> None:
    v1 = [float(v) for v in range(1, 11)]  # 1..10
    v2 = [float(v) for v in range(6, 16)]  # 6..15; pooled sorted, index 16 of 20 is 12
    assert exceedance_table(v1, v2, 0.8) == Table(10, 0, 10, 3)  # 13, 14, 15
    assert exceedance_table([], v2, 0.8) == Table(0, 0, 10, 0)


def window(
    pool: str, i: int, n: int, errors: int, latencies: tuple[float, ...] = ()
) -> HealthAssessed:
    start = T0 + timedelta(minutes=i)
    return HealthAssessed(
        event_id=f"h-{pool}-{i}",
        pool=pool,  # type: ignore[arg-type]
        operation="*",
        window_start=start,
        window_end=start + timedelta(minutes=1),
        count=n,
        error_count=errors,
        latency_sample_ms=latencies,
        at=start + timedelta(minutes=1),
    )


def test_twice_the_error_rate_is_proven_harm_at_the_window_that_crosses() -> None:
    policy = SequentialPolicy()
    windows = []
    for i in range(20):
        windows += [window("v1", i, 1000, 10), window("v2", i, 1000, 20)]
    errors, latency = sequential_verdicts(windows, policy)
    assert errors.harm
    assert errors.proven_at is not None
    # proven at the first window whose running e-value reaches 2 / alpha = 200
    process = EProcess.start(policy.error_odds_ratios)
    first = None
    for i in range(20):
        process = process.update(Table(1000, 10, 1000, 20))
        if first is None and process.e_value >= 200:
            first = i
    assert first is not None
    assert errors.proven_at == T0 + timedelta(minutes=first + 1)
    assert errors.odds_ratio == pytest.approx((20 * 990) / (980 * 10))
    assert not latency.harm  # no latency samples: nothing to say
    assert len(errors.windows) == 20


def test_equal_error_rates_prove_nothing_and_unpaired_windows_are_skipped() -> None:
    windows = [window("v1", i, 1000, 10) for i in range(10)]
    windows += [window("v2", i, 1000, 10) for i in range(12)]  # 10, 11: no V1 window
    errors, _ = sequential_verdicts(windows, SequentialPolicy())
    assert not errors.harm
    assert errors.e_value < 1.0
    assert len(errors.windows) == 10
    assert errors.to_dict()["v2_n"] == 10_000


def test_a_slow_v2_tail_is_proven_harm_on_latency() -> None:
    fast = tuple(float(v) for v in range(1, 201))
    slow = tuple(v * 1.5 for v in fast)
    windows = []
    for i in range(5):
        windows += [window("v1", i, 200, 0, fast), window("v2", i, 200, 0, slow)]
    _, latency = sequential_verdicts(windows, SequentialPolicy())
    assert latency.harm
    assert latency.v2_events > latency.v1_events
