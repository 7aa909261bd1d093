"""The go/no-go judgement (pure) and its thresholds file."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import ConfigurationError
from ledger.gates import Figures, Thresholds, judge
from ledger.sample_ratio import SplitCount
from ledger.sample_ratio import check as check_split
from reports.gates import load_thresholds

GOOD = Figures(
    comparisons=5000,
    mismatches=10,
    missing=5,
    v1_operations=5000,
    v1_errors=50,
    v2_operations=5000,
    v2_errors=55,
    v1_p99_ms=100.0,
    v2_p99_ms=110.0,
    records=20000,
    dead_letters=1,
    rollbacks=0,
    chain_ok=True,
    chain_detail="6 versions verified",
    audit_ok=True,
    audit_detail="5000 decisions agree",
)

counts = st.integers(min_value=0, max_value=100_000)


def by_name(figures: Figures, limits: Thresholds) -> dict[str, bool]:
    return {check.name: check.passed for check in judge(figures, limits)}


def test_healthy_figures_pass_every_line() -> None:
    assert all(by_name(GOOD, Thresholds()).values())


def test_each_line_carries_its_figure_and_threshold() -> None:
    for check in judge(GOOD, Thresholds()):
        assert check.figure
        assert check.threshold


@given(counts, counts)
def test_mismatch_line_passes_exactly_when_the_rate_is_within_the_limit(
    comparisons: int, mismatches: int
) -> None:
    figures = replace(GOOD, comparisons=comparisons, mismatches=min(mismatches, comparisons))
    limits = Thresholds()
    # No comparison yet: nothing mismatched (the sample-count line says they are too few).
    rate = figures.mismatches / comparisons if comparisons else 0.0
    expected = rate <= limits.max_mismatch_rate
    assert by_name(figures, limits)["mismatch rate"] is expected


@given(counts, counts, counts, counts)
def test_v2_error_line_compares_v2_with_a_multiple_of_v1(
    v1_ops: int, v1_errors: int, v2_ops: int, v2_errors: int
) -> None:
    figures = replace(
        GOOD,
        v1_operations=v1_ops,
        v1_errors=min(v1_errors, v1_ops),
        v2_operations=v2_ops,
        v2_errors=min(v2_errors, v2_ops),
    )
    limits = Thresholds()
    passed = by_name(figures, limits)["V2 error rate vs V1"]
    if not v1_ops or not v2_ops:
        assert not passed  # no figure, no go
    else:
        allowed = figures.v1_errors / v1_ops * limits.max_v2_error_ratio
        assert passed is (figures.v2_errors / v2_ops <= allowed + limits.v2_error_allowance)


@given(st.floats(min_value=0.1, max_value=1000), st.floats(min_value=0, max_value=1000))
def test_p99_line_judges_the_ratio_of_v2_to_v1(v1: float, v2: float) -> None:
    figures = replace(GOOD, v1_p99_ms=v1, v2_p99_ms=v2)
    assert by_name(figures, Thresholds())["p99 latency ratio"] is (v2 / v1 <= 1.5)


def test_missing_latency_figures_fail_the_p99_line() -> None:
    assert not by_name(replace(GOOD, v2_p99_ms=None), Thresholds())["p99 latency ratio"]


def test_too_few_samples_fail_even_when_every_rate_is_perfect() -> None:
    figures = replace(GOOD, comparisons=999, mismatches=0)
    result = by_name(figures, Thresholds())
    assert not result["sample count"]
    assert result["mismatch rate"]


def test_a_broken_chain_or_a_dirty_audit_is_a_no_go() -> None:
    assert not by_name(replace(GOOD, chain_ok=False), Thresholds())["flag log chain"]
    assert not by_name(replace(GOOD, audit_ok=False), Thresholds())["decision audit"]


figures_strategy = st.builds(
    Figures,
    comparisons=counts,
    mismatches=counts,
    missing=counts,
    v1_operations=counts,
    v1_errors=counts,
    v2_operations=counts,
    v2_errors=counts,
    v1_p99_ms=st.none() | st.floats(min_value=0, max_value=1e4),
    v2_p99_ms=st.none() | st.floats(min_value=0, max_value=1e4),
    records=counts,
    dead_letters=counts,
    rollbacks=st.integers(min_value=0, max_value=5),
    chain_ok=st.booleans(),
    audit_ok=st.booleans(),
)


@given(figures_strategy, st.floats(min_value=1, max_value=10))
def test_looser_thresholds_never_turn_a_pass_into_a_fail(figures: Figures, factor: float) -> None:
    strict = Thresholds()
    loose = Thresholds(
        min_comparisons=int(strict.min_comparisons / factor),
        max_mismatch_rate=strict.max_mismatch_rate * factor,
        max_missing_rate=strict.max_missing_rate * factor,
        max_v2_error_ratio=strict.max_v2_error_ratio * factor,
        v2_error_allowance=strict.v2_error_allowance * factor,
        max_p99_ratio=strict.max_p99_ratio * factor,
        max_dead_letter_rate=strict.max_dead_letter_rate * factor,
        max_rollbacks=strict.max_rollbacks + int(factor),
    )
    before, after = by_name(figures, strict), by_name(figures, loose)
    assert all(after[name] for name, passed in before.items() if passed)


def test_thresholds_file_overrides_only_the_keys_it_names(tmp_path: Path) -> None:
    path = tmp_path / "gates.toml"
    path.write_text("[go_no_go]\nmin_comparisons = 50\nmax_p99_ratio = 2.0\n")
    limits = load_thresholds(path)
    assert limits.min_comparisons == 50
    assert limits.max_p99_ratio == 2.0
    defaults = Thresholds()
    for field in fields(Thresholds):
        if field.name not in ("min_comparisons", "max_p99_ratio"):
            assert getattr(limits, field.name) == getattr(defaults, field.name)


def test_thresholds_file_may_use_top_level_keys(tmp_path: Path) -> None:
    path = tmp_path / "gates.toml"
    path.write_text("max_rollbacks = 2\n")
    assert load_thresholds(path).max_rollbacks == 2


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[go_no_go]\nmax_mismatch = 0.1\n", "unknown threshold(s) max_mismatch"),
        ("[go_no_go]\nmin_comparisons = 'many'\n", "min_comparisons must be a number"),
        ("[go_no_go]\nmin_comparisons = 1.5\n", "min_comparisons must be a whole number"),
        ("[go_no_go]\nmax_p99_ratio = -1\n", "max_p99_ratio must not be negative"),
        ("[go_no_go\n", "cannot read thresholds"),
    ],
)
def test_a_bad_thresholds_file_is_refused_with_the_reason(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "gates.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        load_thresholds(path)


def test_a_broken_split_fails_the_sample_ratio_gate_and_a_sound_one_passes() -> None:
    sound = check_split([SplitCount("f", 3, 1000, 905, 95)], unit="decisions")
    skewed = check_split([SplitCount("f", 3, 1000, 860, 140)], unit="operations")  # p = 2.5e-5
    checks = {c.gate: c for c in judge(replace(GOOD, sample_ratios=(sound, skewed)), Thresholds())}
    assert checks["sample_ratio_decisions"].passed
    assert not checks["sample_ratio_operations"].passed
    assert "V2 140 of 1000 (expected 100.0)" in checks["sample_ratio_operations"].figure
    # the threshold is the gate's: 0 turns it off, None leaves it unjudged
    off = {
        c.gate: c.passed
        for c in judge(replace(GOOD, sample_ratios=(skewed,)), Thresholds(sample_ratio_alpha=0.0))
    }
    assert off["sample_ratio_operations"]
    unjudged = judge(replace(GOOD, sample_ratios=(skewed,)), Thresholds(sample_ratio_alpha=None))
    assert "sample_ratio_operations" not in {c.gate for c in unjudged}


def test_a_sample_ratio_with_nothing_counted_is_not_judged() -> None:
    empty = check_split([], unit="decisions")
    assert "sample_ratio_decisions" not in {
        c.gate for c in judge(replace(GOOD, sample_ratios=(empty,)), Thresholds())
    }
