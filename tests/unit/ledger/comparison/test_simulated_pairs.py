"""The default rules against the project's V1/V2 simulator: noise absorbed, real changes found."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from comparison_factories import AT

from ledger.comparison import Category, RuleSet, compare_operations
from ledger.events import ComparisonRecorded, OperationRecorded
from producers.shadow import PoolError
from producers.simulator import DEFAULT_V1, DEFAULT_V2, Simulator, Workload

# Programs that fail on both pools alike (a bug in the user's code), whatever the error rates.
BOTH_FAIL_IN_PYTHON = ("python", "python")


def _run(simulator: Simulator, rules: RuleSet, calls: int) -> list[ComparisonRecorded]:
    comparisons = []
    for call in Workload(seed=11).calls(calls):
        halves = []
        for pool, role in (("v1", "primary"), ("v2", "shadow")):
            try:
                answer = simulator.pool(pool)(call.operation, call.args)  # type: ignore[arg-type]
                outcome = {"outcome": "ok", "result": answer.value}
                duration = answer.duration_ms
            except PoolError as failure:
                outcome = {"outcome": "error", "error": failure.native}
                duration = failure.duration_ms
            halves.append(
                OperationRecorded.model_validate(
                    {
                        "event_id": f"{call.n}-{pool}",
                        "correlation_id": f"corr-{call.n}",
                        "session_id": call.session_id,
                        "pool": pool,
                        "role": role,
                        "operation": call.operation,
                        "started_at": AT,
                        "duration_ms": duration or 1.0,
                        **outcome,
                    }
                )
            )
        comparisons.append(compare_operations(halves[0], halves[1], rules, at=AT))
    return comparisons


def _quiet(**v2_changes: float) -> Simulator:
    """Pools without errors; V2 alone injects the differences asked for."""
    return Simulator(
        seed=5,
        v1=replace(DEFAULT_V1, value_diff_rate=0.0, shape_diff_rate=0.0, error_rates={}),
        v2=replace(DEFAULT_V2, error_rates={}, **v2_changes),
    )


def _without_faulty_programs(comparisons: list[ComparisonRecorded]) -> list[ComparisonRecorded]:
    faulty = [c for c in comparisons if (c.v1_error_type, c.v2_error_type) != (None, None)]
    assert all(c.category == Category.ERROR_MATCH for c in faulty)
    assert all((c.v1_error_type, c.v2_error_type) == BOTH_FAIL_IN_PYTHON for c in faulty)
    return [c for c in comparisons if c not in faulty]


def test_the_pools_noise_alone_always_matches(default_rules: RuleSet) -> None:
    simulator = _quiet(value_diff_rate=0.0, shape_diff_rate=0.0)
    comparisons = _without_faulty_programs(_run(simulator, default_rules, 1500))
    assert len(comparisons) > 1400
    assert Counter(c.category for c in comparisons) == {Category.MATCH: len(comparisons)}


def test_every_injected_difference_is_found_and_nothing_else(default_rules: RuleSet) -> None:
    simulator = _quiet(value_diff_rate=0.05, shape_diff_rate=0.03)
    comparisons = _without_faulty_programs(_run(simulator, default_rules, 1500))
    counts = simulator.v2.counts()
    injected = counts["value_differences"] + counts["shape_differences"]
    mismatches = [c for c in comparisons if c.category != Category.MATCH]
    assert injected > 50
    assert len(mismatches) == injected
    assert {c.category for c in mismatches} == {Category.VALUE_MISMATCH, Category.SHAPE_MISMATCH}


def test_native_errors_of_both_pools_meet_in_the_canonical_taxonomy(
    default_rules: RuleSet,
) -> None:
    everything_times_out = {"timeout": 1.0}
    simulator = Simulator(seed=5).with_profiles(error_rates=everything_times_out)
    comparisons = _run(simulator, default_rules, 200)
    assert {c.category for c in comparisons} == {Category.ERROR_MATCH}
    pairs = Counter((c.v1_error_type, c.v2_error_type) for c in comparisons)
    assert set(pairs) <= {("timeout", "timeout"), BOTH_FAIL_IN_PYTHON}
    assert pairs[("timeout", "timeout")] > 150
