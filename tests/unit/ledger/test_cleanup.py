"""The pure cleanup judgement: when 100 % began, and each readiness line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ledger.cleanup import CleanupFacts, FlagStep, full_since, judge_cleanup

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def step(version: int, day: float, command: str, bp: int, *, shadow: bool = True) -> FlagStep:
    return FlagStep(version, T0 + timedelta(days=day), command, True, bp, shadow)


def test_full_since_is_the_start_of_the_current_unbroken_run_at_100_percent() -> None:
    steps = [
        step(1, 0, "set_percentage", 10_000),
        step(2, 1, "rollback", 0),
        step(3, 2, "set_percentage", 10_000),
        step(4, 3, "set_shadow_mode", 10_000, shadow=False),
    ]
    assert full_since(steps) == T0 + timedelta(days=2)
    assert full_since(steps[:2]) is None
    assert full_since([]) is None


def test_every_line_passes_only_when_every_condition_holds() -> None:
    steps = [step(1, 0, "set_percentage", 10_000, shadow=False)]
    ready = CleanupFacts(T0 + timedelta(days=8), 7, steps, full_since(steps))
    assert all(c.passed for c in judge_cleanup(ready))
    late = CleanupFacts(T0 + timedelta(days=8), 7, steps, full_since(steps), rollbacks=1)
    failed = [c.name for c in judge_cleanup(late) if not c.passed]
    assert failed == ["no_rollback_since"]
    pinned = [
        FlagStep(
            1, T0, "set_percentage", True, 10_000, False, {"s1": "v1", "s2": "v2"}, {"qa": "v1"}
        )
    ]
    lines = judge_cleanup(CleanupFacts(T0 + timedelta(days=8), 7, pinned, T0))
    assert [(c.name, c.figure) for c in lines if not c.passed] == [
        ("no_override_pinned_to_v1", "session s1, environment qa")
    ]
