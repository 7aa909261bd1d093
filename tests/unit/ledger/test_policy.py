"""Health policy: rollback triggers, warnings, cooldown and the canary judge."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import ConfigurationError
from ledger.events import HealthAssessed, decode_event, encode_event
from ledger.policy import (
    Classification,
    HealthPolicy,
    JudgePolicy,
    MetricDirection,
    MetricSpec,
    assess,
    classify_metric,
    judge,
    judged,
    load_policy,
)
from tests.unit.health_factories import T0, window_of

POLICY = HealthPolicy()
AT = T0 + timedelta(minutes=1)


def _lognormal(seed: int, n: int = 300, scale: float = 1.0) -> list[float]:
    rng = random.Random(seed)
    return [scale * rng.lognormvariate(3, 0.4) for _ in range(n)]


def _names(alerts: tuple[object, ...]) -> set[str]:
    return {alert.name for alert in alerts}  # type: ignore[attr-defined]


# --- triggers -------------------------------------------------------------------------------


def test_v2_error_rate_above_three_times_v1s_triggers_rollback() -> None:
    v1 = window_of("v1", count=200, errors=4)
    v2 = window_of("v2", count=200, errors=26)

    verdict = assess(v1, v2, POLICY, {}, AT)

    assert verdict.status == "rollback"
    assert "error_rate" in _names(verdict.triggers)
    assert verdict.metrics["threshold.error_rate"] == pytest.approx(0.06)


def test_v2_error_rate_just_under_three_times_v1s_does_not_trigger() -> None:
    v1 = window_of("v1", count=200, errors=10)
    v2 = window_of("v2", count=200, errors=30)

    assert "error_rate" not in _names(assess(v1, v2, POLICY, {}, AT).triggers)


def test_one_error_against_none_does_not_trigger() -> None:
    v1 = window_of("v1", count=10, errors=0)
    v2 = window_of("v2", count=10, errors=1)

    verdict = assess(v1, v2, POLICY, {}, AT)

    assert verdict.triggers == ()


@given(errors=st.integers(0, POLICY.min_error_count - 1), count=st.integers(10, 500))
@settings(max_examples=30, deadline=None)
def test_fewer_errors_than_the_floor_never_trigger(errors: int, count: int) -> None:
    v1 = window_of("v1", count=count, errors=0)
    v2 = window_of("v2", count=count, errors=errors)

    assert "error_rate" not in _names(assess(v1, v2, POLICY, {}, AT).triggers)


def test_too_few_events_decide_nothing() -> None:
    v1 = window_of("v1", count=9)
    v2 = window_of("v2", count=9, errors=9, worker_failures=9)

    verdict = assess(v1, v2, POLICY, {}, AT)

    assert verdict.triggers == ()
    assert verdict.status == "insufficient_data"


def test_without_a_v1_baseline_only_a_high_absolute_error_rate_triggers() -> None:
    low = window_of("v2", count=100, errors=8)
    high = window_of("v2", count=100, errors=12)

    assert assess(None, low, POLICY, {}, AT).triggers == ()
    assert "error_rate" in _names(assess(None, high, POLICY, {}, AT).triggers)


def test_v2_p99_above_twice_v1s_triggers_rollback() -> None:
    v1 = window_of("v1", count=200, latencies=_lognormal(1))
    v2 = window_of("v2", count=200, latencies=_lognormal(2, scale=3.0))

    verdict = assess(v1, v2, POLICY, {}, AT)

    assert "p99_latency" in _names(verdict.triggers)
    assert verdict.metrics["v2.p99_ms"] > 2 * verdict.metrics["v1.p99_ms"]


def test_a_doubled_p99_within_the_absolute_floor_does_not_trigger() -> None:
    v1 = window_of("v1", count=100, latencies=[1.0])
    v2 = window_of("v2", count=100, latencies=[3.0])

    assert "p99_latency" not in _names(assess(v1, v2, POLICY, {}, AT).triggers)


def test_v2_worker_failures_above_ten_percent_trigger_rollback() -> None:
    v1 = window_of("v1", count=100)
    healthy = window_of("v2", count=100, worker_failures=10, errors=10)
    failing = window_of("v2", count=100, worker_failures=11, errors=11)

    assert "worker_failure_rate" not in _names(assess(v1, healthy, POLICY, {}, AT).triggers)
    assert "worker_failure_rate" in _names(assess(v1, failing, POLICY, {}, AT).triggers)


def test_mismatch_rate_above_the_threshold_triggers_rollback() -> None:
    v1 = window_of("v1", count=100)
    v2 = window_of("v2", count=100, comparisons=100, mismatches=6)

    assert "mismatch_rate" in _names(assess(v1, v2, POLICY, {}, AT).triggers)


def test_mismatches_need_enough_comparisons() -> None:
    v1 = window_of("v1", count=100)
    v2 = window_of("v2", count=100, comparisons=9, mismatches=9)

    assert assess(v1, v2, POLICY, {}, AT).triggers == ()


@given(
    base_errors=st.integers(0, 30),
    extra_errors=st.integers(0, 100),
    slowdown=st.floats(1.0, 20.0),
    seed=st.integers(0, 1000),
)
@settings(max_examples=40, deadline=None)
def test_a_spike_in_v1_alone_never_rolls_v2_back(
    base_errors: int, extra_errors: int, slowdown: float, seed: int
) -> None:
    latencies = _lognormal(seed, n=100)
    v2 = window_of("v2", count=200, errors=base_errors, latencies=latencies)
    spiked_v1 = window_of(
        "v1",
        count=200,
        errors=base_errors + extra_errors,
        latencies=[value * slowdown for value in latencies],
    )

    verdict = assess(spiked_v1, v2, POLICY, {}, AT)

    assert verdict.triggers == ()
    assert verdict.status != "rollback"


@given(
    v1_errors=st.integers(0, 50),
    extra_errors=st.integers(0, 100),
    v2_errors=st.integers(0, 200),
    v2_scale=st.floats(0.5, 5.0),
    slowdown=st.floats(1.0, 5.0),
)
@settings(max_examples=40, deadline=None)
def test_making_v1_worse_never_adds_a_trigger(
    v1_errors: int, extra_errors: int, v2_errors: int, v2_scale: float, slowdown: float
) -> None:
    latencies = _lognormal(7, n=60)
    v1 = window_of("v1", count=200, errors=v1_errors, latencies=latencies)
    worse_v1 = window_of(
        "v1",
        count=200,
        errors=min(200, v1_errors + extra_errors),
        latencies=[value * slowdown for value in latencies],
    )
    v2 = window_of("v2", count=200, errors=v2_errors, latencies=[v * v2_scale for v in latencies])

    before = _names(assess(v1, v2, POLICY, {}, AT).triggers)
    after = _names(assess(worse_v1, v2, POLICY, {}, AT).triggers)

    assert after <= before


# --- warnings and cooldown ------------------------------------------------------------------


def test_warnings_at_five_percent_errors_or_200_ms_p99_on_either_pool() -> None:
    v1 = window_of("v1", count=100, errors=6)
    v2 = window_of("v2", count=100, latencies=[250.0])

    verdict = assess(v1, v2, POLICY, {}, AT)

    assert {(a.pool, a.name) for a in verdict.warnings} >= {
        ("v1", "error_rate"),
        ("v2", "p99_latency"),
    }
    assert verdict.status in ("warn", "rollback")


def test_a_healthy_pair_is_ok_and_announces_nothing() -> None:
    v1 = window_of("v1", count=300, errors=3, latencies=_lognormal(1))
    v2 = window_of("v2", count=300, errors=3, latencies=_lognormal(2))

    verdict = assess(v1, v2, POLICY, {}, AT)

    assert verdict.status == "ok"
    assert verdict.alerts == ()
    assert verdict.judgement is not None
    assert verdict.judgement.verdict == "pass"


@given(gaps=st.lists(st.integers(1, 600), min_size=1, max_size=30))
@settings(max_examples=60, deadline=None)
def test_a_persistent_alert_is_announced_at_most_once_per_cooldown(gaps: list[int]) -> None:
    v1 = window_of("v1", count=100, errors=1)
    v2 = window_of("v2", count=100, errors=30)
    cooldowns: dict[str, datetime] = {}
    announced: list[datetime] = []
    at = AT
    for gap in gaps:
        at += timedelta(seconds=gap)
        verdict = assess(v1, v2, POLICY, cooldowns, at)
        assert verdict.status == "rollback"
        if verdict.rollback_announced:
            assert not announced or at - announced[-1] >= POLICY.cooldown
            announced.append(at)
        else:
            assert at - announced[-1] < POLICY.cooldown
        cooldowns = verdict.cooldowns

    assert announced[0] == AT + timedelta(seconds=gaps[0])


def test_a_different_alert_is_not_silenced_by_anothers_cooldown() -> None:
    v1 = window_of("v1", count=100, errors=1)
    errors = window_of("v2", count=100, errors=30)
    mismatches = window_of("v2", count=100, comparisons=100, mismatches=50)

    first = assess(v1, errors, POLICY, {}, AT)
    second = assess(v1, mismatches, POLICY, first.cooldowns, AT + timedelta(seconds=60))

    assert "mismatch_rate" in _names(second.alerts)


# --- the judge ------------------------------------------------------------------------------


def test_same_distributions_pass_the_judge() -> None:
    result = judge({"latency": _lognormal(1)}, {"latency": _lognormal(2)}, _latency_only())

    assert result.verdict == "pass"
    assert result.metrics[0].classification == Classification.PASS


def test_a_slower_v2_is_high_and_fails_the_judge() -> None:
    result = judge(
        {"latency": _lognormal(1)}, {"latency": _lognormal(2, scale=1.5)}, _latency_only()
    )

    assert result.metrics[0].classification == Classification.HIGH
    assert result.verdict == "fail"
    assert result.metrics[0].ci_low is not None
    assert result.metrics[0].ci_low > 0


def test_a_faster_v2_passes_when_only_increases_matter() -> None:
    result = judge(
        {"latency": _lognormal(1)}, {"latency": _lognormal(2, scale=0.5)}, _latency_only()
    )

    assert result.verdict == "pass"


def test_a_faster_v2_is_low_when_either_direction_matters() -> None:
    spec = MetricSpec(name="latency", direction=MetricDirection.EITHER)

    judgement = classify_metric(_lognormal(1), _lognormal(2, scale=0.5), spec, JudgePolicy())

    assert judgement.classification == Classification.LOW


def test_a_significant_but_tiny_increase_is_a_pass() -> None:
    control = [float(v) for v in range(1000)]
    experiment = [v + 5.0 for v in control]

    judgement = classify_metric(
        control, experiment, MetricSpec(name="latency"), JudgePolicy(max_samples=1000)
    )

    assert judgement.classification == Classification.PASS


def test_identical_constant_samples_pass_without_any_randomness() -> None:
    judgement = classify_metric([5.0] * 50, [5.0] * 50, MetricSpec(name="latency"), JudgePolicy())

    assert judgement.classification == Classification.PASS
    assert judgement.p_value == 1.0


def test_too_few_samples_are_nodata_and_mostly_nodata_is_no_verdict() -> None:
    result = judge({"latency": [1.0] * 5}, {"latency": [1.0] * 5}, _latency_only())

    assert result.metrics[0].classification == Classification.NODATA
    assert result.verdict == "nodata"
    assert result.score == 0.0


def test_the_score_weighs_metrics_and_thresholds_are_configurable() -> None:
    policy = JudgePolicy(
        metrics=(
            MetricSpec(name="latency", weight=3.0),
            MetricSpec(name="error_rate", weight=1.0),
        ),
        pass_score=90,
        marginal_score=70,
    )
    slow = {"latency": _lognormal(2, scale=2.0), "error_rate": [0.0] * 100}
    failing = {"latency": _lognormal(2), "error_rate": [1.0] * 30 + [0.0] * 70}
    control = {"latency": _lognormal(1), "error_rate": [0.0] * 100}

    assert judge(control, slow, policy).score == pytest.approx(25.0)
    assert judge(control, slow, policy).verdict == "fail"
    assert judge(control, failing, policy).score == pytest.approx(75.0)
    assert judge(control, failing, policy).verdict == "marginal"


def test_a_critical_metric_that_fails_zeroes_the_score() -> None:
    policy = JudgePolicy(
        metrics=(
            MetricSpec(name="latency", weight=10.0),
            MetricSpec(name="error_rate", weight=1.0, critical=True),
        )
    )
    control = {"latency": _lognormal(1), "error_rate": [0.0] * 100}
    experiment = {"latency": _lognormal(2), "error_rate": [1.0] * 30 + [0.0] * 70}

    assert judge(control, experiment, policy).score == 0.0


@given(seed=st.integers(0, 10_000), scale=st.floats(0.5, 2.0))
@settings(max_examples=20, deadline=None)
def test_the_judge_is_deterministic(seed: int, scale: float) -> None:
    control = {"latency": _lognormal(seed, n=100)}
    experiment = {"latency": _lognormal(seed + 1, n=100, scale=scale)}

    assert judge(control, experiment) == judge(control, experiment)


def test_marginal_above_pass_is_refused() -> None:
    with pytest.raises(ValueError, match="marginal_score"):
        JudgePolicy(pass_score=70, marginal_score=80)


def _latency_only() -> JudgePolicy:
    return JudgePolicy(metrics=(MetricSpec(name="latency"),))


# --- recorded windows, judged windows, configuration ----------------------------------------


def test_recorded_windows_give_the_same_verdict_and_new_thresholds_a_new_one() -> None:
    v1 = window_of("v1", count=200, errors=4, latencies=_lognormal(1))
    v2 = window_of("v2", count=200, errors=10, latencies=_lognormal(2))
    stored = [decode_event(encode_event(w), HealthAssessed) for w in (v1, v2)]

    live = assess(v1, v2, POLICY, {}, AT)
    replayed = assess(stored[0], stored[1], POLICY, {}, AT)  # type: ignore[arg-type]
    stricter = assess(stored[0], stored[1], HealthPolicy(error_rate_ratio=1.5), {}, AT)  # type: ignore[arg-type]

    assert replayed == live
    assert live.triggers == ()
    assert "error_rate" in _names(stricter.triggers)


def test_judged_windows_carry_their_own_pools_findings() -> None:
    v1 = window_of("v1", count=100, errors=8)
    v2 = window_of("v2", count=100, errors=40)
    verdict = assess(v1, v2, POLICY, {}, AT)

    v2_judged = judged(v2, verdict, v1)
    v1_judged = judged(v1, verdict, None)

    assert v2_judged.verdict == "rollback"
    assert v2_judged.triggers == ("error_rate",)
    assert v2_judged.compared_with == v1.event_id
    assert v2_judged.judge_verdict is not None
    assert v2_judged.metrics["v1.error_rate"] == pytest.approx(0.08)
    assert v1_judged.verdict == "warn"
    assert v1_judged.triggers == ()
    assert v1_judged.warnings == ("error_rate",)
    assert decode_event(encode_event(v2_judged), HealthAssessed) == v2_judged


def test_a_policy_file_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "health.toml"
    path.write_text(
        "[health]\nerror_rate_ratio = 4.0\ncooldown = 60\n[health.judge]\npass_score = 90\n"
    )

    policy = load_policy(path)

    assert policy.error_rate_ratio == 4.0
    assert policy.cooldown == timedelta(seconds=60)
    assert policy.judge.pass_score == 90
    assert policy.min_events == POLICY.min_events


def test_a_policy_file_with_an_unknown_key_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "health.toml"
    path.write_text("error_rate_ration = 4.0\n")

    with pytest.raises(ConfigurationError, match="error_rate_ration"):
        load_policy(path)
