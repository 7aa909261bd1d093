"""The sample-ratio check: exact statistics on fixed counts (hand-computed), and its groups."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.events import DecisionReason, OperationRecorded, RolloutDecided
from ledger.sample_ratio import (
    SplitCount,
    check,
    check_decisions,
    decision_counts,
    operation_counts,
    split_test,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def group(
    v1: int, v2: int, bp: int = 5000, version: int = 1, start: datetime | None = T0
) -> SplitCount:
    return SplitCount("checkout", version, bp, v1, v2, start)


def test_an_even_split_seen_480_520_has_chi_square_1_6() -> None:
    # expected 500 / 500: (20^2 + 20^2) / 500 = 1.6; one degree of freedom: p = erfc(sqrt(x/2))
    result = split_test(group(480, 520))
    assert result is not None
    assert result.statistic == pytest.approx(1.6, rel=1e-12)
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(0.8)), rel=1e-9)
    assert result.observed_share == 0.52


def test_a_ten_percent_split_seen_at_13_percent_is_not_yet_an_alarm_but_14_is() -> None:
    # n = 1000, expected 900 / 100: 30^2/900 + 30^2/100 = 10 -> p = erfc(sqrt(5)) = 0.00157
    at_13 = check([group(870, 130, bp=1000)])
    assert at_13.versions[0].statistic == pytest.approx(10.0, rel=1e-12)
    assert at_13.p_value == pytest.approx(math.erfc(math.sqrt(5.0)), rel=1e-9)
    assert not at_13.mismatch
    # 40^2/900 + 40^2/100 = 17.78 -> p = 2.5e-5
    at_14 = check([group(860, 140, bp=1000)])
    assert at_14.versions[0].statistic == pytest.approx(1600 / 900 + 16.0, rel=1e-12)
    assert at_14.p_value == pytest.approx(math.erfc(math.sqrt((1600 / 900 + 16.0) / 2)), rel=1e-9)
    assert at_14.mismatch


def test_overall_is_the_smallest_flag_version_p_value_times_the_versions() -> None:
    # version 1: chi-square 1.6 (p 0.206); version 2: 10 (p 0.00157); Bonferroni over two
    result = check([group(480, 520, version=1), group(870, 130, bp=1000, version=2)])
    assert [t.statistic for t in result.versions] == [pytest.approx(1.6), pytest.approx(10.0)]
    assert result.p_value == pytest.approx(2 * math.erfc(math.sqrt(5.0)), rel=1e-9)
    assert [t.group.flag_version for t in result.versions] == [1, 2]


def test_windows_of_one_version_are_pooled_for_the_overall_test() -> None:
    later = T0 + timedelta(minutes=1)
    result = check([group(480, 520, start=None)], [group(240, 260), group(240, 260, start=later)])
    assert result.versions[0].statistic == pytest.approx(1.6, rel=1e-12)
    assert len(result.windows) == 2
    assert result.windows[0].statistic == pytest.approx(0.8, rel=1e-12)


def test_one_window_alone_alarms_only_below_alpha_over_the_windows_tested() -> None:
    quiet = [group(500, 500, start=T0 + timedelta(minutes=i)) for i in range(1, 10)]
    # 10 windows: a window needs p < 0.0001; 440/560 gives 14.4 -> p = 1.5e-4 (no alarm)
    overall = [group(5060, 4940, start=None)]
    result = check(overall, [group(560, 440), *quiet])
    assert result.window_alpha == pytest.approx(0.0001)
    assert not result.mismatched_windows
    # 425/575: 22.5 -> p = 2.1e-6
    result = check(overall, [group(575, 425), *quiet])
    assert [w.group.window_start for w in result.mismatched_windows] == [T0]
    assert result.mismatch


def test_a_zero_split_with_any_v2_unit_is_a_certain_mismatch() -> None:
    assert split_test(group(10, 0, bp=0)).p_value == 1.0  # type: ignore[union-attr]
    assert split_test(group(10, 1, bp=0)).p_value == 0.0  # type: ignore[union-attr]
    assert split_test(group(1, 10, bp=10_000)).p_value == 0.0  # type: ignore[union-attr]
    assert check([group(10, 1, bp=0, start=None)]).mismatch
    assert check([group(10, 0, bp=0, start=None)]).p_value == 1.0


def test_nothing_counted_is_no_verdict_and_no_alarm() -> None:
    result = check([])
    assert result.p_value is None
    assert not result.mismatch
    assert "no decisions" in result.summary()


@given(st.integers(1, 5000), st.integers(1, 9999))
def test_the_statistic_is_the_squared_distance_over_the_binomial_variance(n: int, bp: int) -> None:
    v2 = n * bp // 10_000  # the expected count, rounded down: less than one unit off
    share = bp / 10_000
    result = split_test(group(n - v2, v2, bp=bp))
    assert result is not None
    assert result.statistic is not None
    assert result.statistic == pytest.approx((v2 - n * share) ** 2 / (n * share * (1 - share)))
    assert result.statistic <= 1 / (n * share * (1 - share)) + 1e-9


def decision(
    i: int,
    pool: str,
    *,
    reason: DecisionReason = DecisionReason.SPLIT,
    bp: int = 5000,
    version: int = 3,
    at: datetime = T0,
) -> RolloutDecided:
    return RolloutDecided(
        event_id=f"d-{i}",
        flag="checkout",
        session_id=f"s-{i}",
        correlation_id=f"c-{i}",
        pool=pool,  # type: ignore[arg-type]
        reason=reason,
        bucket=i % 10_000,
        threshold_bp=bp,
        flag_version=version,
        at=at,
    )


def operation(i: int, pool: str, role: str = "primary") -> OperationRecorded:
    return OperationRecorded(
        event_id=f"o-{i}-{pool}-{role}",
        correlation_id=f"c-{i}",
        session_id=f"s-{i}",
        pool=pool,  # type: ignore[arg-type]
        role=role,  # type: ignore[arg-type]
        operation="price",
        outcome="ok",
        started_at=T0,
        duration_ms=1.0,
    )


def test_decision_counts_take_split_decisions_only_per_version_and_window() -> None:
    minute = timedelta(minutes=1)
    decisions = [
        decision(1, "v2"),
        decision(2, "v1"),
        decision(3, "v1", at=T0 + minute + timedelta(seconds=5)),
        decision(4, "v2", reason=DecisionReason.SESSION_OVERRIDE),
        decision(5, "v1", reason=DecisionReason.CIRCUIT_OPEN),
        decision(6, "v2", version=4, bp=1000),
    ]
    counts = decision_counts(decisions, minute)
    assert counts == [
        SplitCount("checkout", 3, 5000, 1, 1, T0),
        SplitCount("checkout", 3, 5000, 1, 0, T0 + minute),
        SplitCount("checkout", 4, 1000, 0, 1, T0),
    ]


def test_operation_counts_take_primaries_of_split_requests_by_the_pool_that_answered() -> None:
    decisions = [
        decision(1, "v2"),
        decision(2, "v1"),
        decision(3, "v2", reason=DecisionReason.SESSION_OVERRIDE),
    ]
    operations = [
        operation(1, "v1"),  # decided V2, answered by V1: the router sent it elsewhere
        operation(1, "v2", role="shadow"),
        operation(2, "v1"),
        operation(3, "v2"),  # an override: not a sample of the split
        operation(9, "v2"),  # no decision seen
    ]
    assert operation_counts(decisions, operations) == [SplitCount("checkout", 3, 5000, 2, 0, T0)]


def test_a_session_is_one_unit_however_many_requests_it_makes() -> None:
    # 50 sessions on each pool, but one V2 session made 1,000 requests: by requests this would
    # be 1,049 V2 of 1,099 (p ~ 0); by units it is 50 of 100, an exact fit.
    decisions = [decision(i, "v2" if i % 2 else "v1") for i in range(100)]
    busy = decisions[1]
    decisions += [
        busy.model_copy(update={"event_id": f"busy-{k}", "correlation_id": f"busy-{k}"})
        for k in range(1000)
    ]
    result = check_decisions(decisions)
    assert result.units == 100
    assert result.versions[0].statistic == 0.0
    assert result.p_value == 1.0
    assert not result.mismatch


def test_check_decisions_tests_each_window_and_the_whole_period() -> None:
    minute = timedelta(minutes=1)
    decisions = [
        decision(i, "v2" if i < 30 else "v1", at=T0 + minute * (i // 50)) for i in range(100)
    ]
    result = check_decisions(decisions, minute)
    # overall: 30 V2 of 100 at 50 %: (20^2 + 20^2) / 50 = 16 -> p = erfc(sqrt(8)) = 6.3e-5
    assert result.versions[0].statistic == pytest.approx(16.0)
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(8.0)), rel=1e-9)
    assert result.mismatch
    # windows: 30 of 50 (chi-square 2) and 0 of 50 (chi-square 50)
    assert [w.statistic for w in result.windows] == [pytest.approx(2.0), pytest.approx(50.0)]
    assert [w.group.window_start for w in result.mismatched_windows] == [T0 + minute]
    document = result.to_dict()
    assert document["mismatch"] is True
    assert document["windows_tested"] == 2
