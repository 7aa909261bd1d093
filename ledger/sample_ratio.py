"""The sample-ratio check: is the traffic split the way the flag says it is?

GrowthBook's Safe Rollouts call it a sample-ratio mismatch (SRM): when the observed share of
units on the new variant disagrees with the configured split, the router (or the recording of
what it did) is broken, and no figure comparing the two pools can be trusted. We test it the
same way: a chi-square goodness-of-fit test of the V1/V2 counts against the counts the split
predicts, alarm at p < 0.001.

What is counted:

Units, not requests: the bucket is sticky per session, so one session's requests all land on
one pool and are not independent draws; a chi-square over requests would alarm on any
healthy split with a few busy sessions. The unit is the session (the request when it has no
session), counted once per group.

- **decisions**: ``RolloutDecided`` with reason ``SPLIT`` only. Overrides (session,
  environment), a disabled flag and the circuit breaker send requests to a pool on purpose,
  not by the hash, so they are not a sample of the split; an open breaker is judged by its own
  events and the error-rate gates.
- **operations**: primary executions (``role = "primary"``; shadows run on the other pool by
  design) of requests whose decision was a ``SPLIT``, by the pool that actually answered. This
  catches a router that records a decision and then sends the request elsewhere.

Groups: a flag version fixes the configured split (``threshold_bp`` / 10,000 is V2's share),
so every group is one (flag, flag version, threshold) and, per window, one window of it.
``overall`` is one test over all the flag-version groups: the smallest p-value times the number
of versions (Bonferroni; a session keeps its bucket across versions, so the versions' tests are
not independent and a summed chi-square would over-alarm). Checking every window at 0.001
would raise a false alarm in about one in ten runs of 100 windows, so a window alone raises
the alarm only below 0.001 divided by the number of windows tested (Bonferroni); the
family-wise false-alarm rate stays at most 0.2 %.

A split of 0 % or 100 % predicts every unit on one side: one unit on the other is a mismatch
for certain (p = 0), with no statistic.

Pure: counts in, verdicts out (scipy computes the distribution).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from ledger.events import DecisionReason, OperationRecorded, RolloutDecided, is_skipped_shadow
from ledger.health import DEFAULT_WINDOW, window_start

__all__ = [
    "DEFAULT_ALPHA",
    "RatioTest",
    "SampleRatio",
    "SplitCount",
    "check",
    "check_decisions",
    "decision_counts",
    "operation_counts",
    "split_test",
    "unit_of",
]

#: GrowthBook's threshold: below it, the split is broken.
DEFAULT_ALPHA: Final = 0.001
_FULL_BP: Final = 10_000


@dataclass(frozen=True)
class SplitCount:
    """Units seen on each pool in one group whose configured V2 share is ``expected_bp``."""

    flag: str
    flag_version: int
    expected_bp: int
    v1: int
    v2: int
    #: The window's start, or None for the whole period.
    window_start: datetime | None = None


@dataclass(frozen=True)
class RatioTest:
    """One group's chi-square test (``statistic`` None: a 0 % or 100 % split, decided exactly)."""

    group: SplitCount
    observed_share: float | None
    statistic: float | None
    p_value: float

    @property
    def total(self) -> int:
        return self.group.v1 + self.group.v2

    def to_dict(self) -> dict[str, Any]:
        g = self.group
        return {
            "flag": g.flag,
            "flag_version": g.flag_version,
            "window_start": g.window_start.isoformat() if g.window_start else None,
            "expected_share": g.expected_bp / _FULL_BP,
            "observed_share": self.observed_share,
            "v1": g.v1,
            "v2": g.v2,
            "statistic": self.statistic,
            "p_value": self.p_value,
        }


@dataclass(frozen=True)
class SampleRatio:
    """The check over a period: every flag version's test, every window's, and the verdict."""

    #: What was counted: "decisions" or "operations".
    unit: str
    versions: tuple[RatioTest, ...]
    windows: tuple[RatioTest, ...]
    #: Overall: the smallest flag version's p-value times the versions tested (Bonferroni).
    p_value: float | None
    alpha: float

    @property
    def window_alpha(self) -> float:
        return self.window_alpha_at(self.alpha)

    def window_alpha_at(self, alpha: float) -> float:
        return alpha / max(len(self.windows), 1)

    @property
    def mismatched_windows(self) -> tuple[RatioTest, ...]:
        return self.mismatched_windows_at(self.alpha)

    def mismatched_windows_at(self, alpha: float) -> tuple[RatioTest, ...]:
        return tuple(w for w in self.windows if w.p_value < self.window_alpha_at(alpha))

    @property
    def mismatch(self) -> bool:
        """The alarm: overall p below alpha, or one window below alpha / windows."""
        return self.mismatch_at(self.alpha)

    def mismatch_at(self, alpha: float) -> bool:
        """The alarm at another alpha (the gates' threshold)."""
        overall = self.p_value is not None and self.p_value < alpha
        return overall or bool(self.mismatched_windows_at(alpha))

    @property
    def units(self) -> int:
        return sum(t.total for t in self.versions)

    def summary(self) -> str:
        if self.p_value is None:
            return f"no {self.unit} of a split"
        v2 = sum(t.group.v2 for t in self.versions)
        expected = sum(t.total * t.group.expected_bp / _FULL_BP for t in self.versions)
        text = (
            f"{self.unit}: V2 {v2} of {self.units} (expected {expected:.1f}), "
            f"p = {self.p_value:.3g}"
        )
        bad = self.mismatched_windows
        if bad:
            text += f"; {len(bad)} of {len(self.windows)} windows below {self.window_alpha:.2g}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "p_value": self.p_value,
            "alpha": self.alpha,
            "window_alpha": self.window_alpha,
            "mismatch": self.mismatch,
            "units": self.units,
            "versions": [t.to_dict() for t in self.versions],
            "mismatched_windows": [t.to_dict() for t in self.mismatched_windows],
            "windows_tested": len(self.windows),
        }


def split_test(group: SplitCount) -> RatioTest | None:
    """Chi-square goodness of fit of (v1, v2) to the split; None for an empty group."""
    # Deferred: scipy.stats takes ~3 s to import; command modules import this one.
    from scipy.stats import chisquare

    n = group.v1 + group.v2
    if n == 0:
        return None
    share = group.v2 / n
    if group.expected_bp in (0, _FULL_BP):
        wrong = group.v2 if group.expected_bp == 0 else group.v1
        return RatioTest(group, share, None, 0.0 if wrong else 1.0)
    expected_v2 = n * group.expected_bp / _FULL_BP
    result = chisquare([group.v1, group.v2], f_exp=[n - expected_v2, expected_v2])
    return RatioTest(group, share, float(result.statistic), float(result.pvalue))


def check(
    overall: Iterable[SplitCount],
    windows: Iterable[SplitCount] = (),
    *,
    unit: str = "decisions",
    alpha: float = DEFAULT_ALPHA,
) -> SampleRatio:
    """The check: one test over the flag versions' counts, and one per window.

    ``overall`` holds one count per flag version over the whole period (a unit counted once
    however many windows it appears in: counts of distinct units cannot be summed over windows),
    ``windows`` one per window and flag version.
    """
    tested_windows = [t for g in windows if (t := split_test(g)) is not None]
    tested_windows.sort(
        key=lambda t: (str(t.group.window_start), t.group.flag, t.group.flag_version)
    )
    versions = [t for g in overall if (t := split_test(g)) is not None]
    versions.sort(key=lambda t: (t.group.flag, t.group.flag_version, t.group.expected_bp))
    if not versions:
        return SampleRatio(unit, (), tuple(tested_windows), None, alpha)
    # One flag version's sessions are mostly the next one's (the bucket is sticky), so the
    # versions' tests are not independent and their statistics cannot be summed into one
    # chi-square; Bonferroni holds under any dependence.
    smallest = min(t.p_value for t in versions)
    p_value = min(1.0, smallest * len(versions))
    return SampleRatio(unit, tuple(versions), tuple(tested_windows), p_value, alpha)


def unit_of(session_id: str | None, correlation_id: str) -> str:
    """The unit the split assigns: the session (sticky bucketing), else the request."""
    return session_id if session_id is not None else correlation_id


def _is_split(decision: RolloutDecided) -> bool:
    return decision.reason == DecisionReason.SPLIT and decision.threshold_bp is not None


_Keyed = tuple[str, int, int, datetime, str, str]  # flag, version, bp, at, unit, pool


def _tally(keyed: Iterable[_Keyed], window: timedelta | None) -> list[SplitCount]:
    """Distinct units per pool, per (flag, version, threshold) and window (None: the period)."""
    seen: set[tuple[str, int, int, datetime | None, str, str]] = set()
    for flag, version, bp, at, unit, pool in keyed:
        start = None if window is None else window_start(at, window)
        seen.add((flag, version, bp, start, unit, pool))
    tally: Counter[tuple[str, int, int, datetime | None, str]] = Counter(
        (flag, version, bp, start, pool) for flag, version, bp, start, _, pool in seen
    )
    groups = sorted({key[:4] for key in tally}, key=lambda g: (g[0], g[1], g[2], str(g[3])))
    return [
        SplitCount(
            flag,
            version,
            bp,
            tally[(flag, version, bp, start, "v1")],
            tally[(flag, version, bp, start, "v2")],
            start,
        )
        for flag, version, bp, start in groups
    ]


def decision_counts(
    decisions: Iterable[RolloutDecided], window: timedelta | None = DEFAULT_WINDOW
) -> list[SplitCount]:
    """Distinct units per pool of the SPLIT decisions, per flag version and window (by the
    decision's ``at``; ``window=None``: over the whole period)."""
    return _tally(
        (
            (
                d.flag,
                d.flag_version,
                d.threshold_bp or 0,
                d.at,
                unit_of(d.session_id, d.correlation_id),
                d.pool,
            )
            for d in decisions
            if _is_split(d)
        ),
        window,
    )


def operation_counts(
    decisions: Mapping[str, RolloutDecided] | Iterable[RolloutDecided],
    operations: Iterable[OperationRecorded],
    window: timedelta | None = DEFAULT_WINDOW,
) -> list[SplitCount]:
    """Distinct units per answering pool of the primary executions of requests whose decision
    was a SPLIT (``decisions`` by correlation id, or any iterable of them); a unit answered by
    both pools counts on both."""
    by_id = (
        decisions if isinstance(decisions, Mapping) else {d.correlation_id: d for d in decisions}
    )
    keyed: list[_Keyed] = []
    for op in operations:
        if op.role != "primary" or is_skipped_shadow(op):
            continue
        decision = by_id.get(op.correlation_id)
        if decision is None or not _is_split(decision):
            continue
        unit = unit_of(decision.session_id, decision.correlation_id)
        keyed.append(
            (
                decision.flag,
                decision.flag_version,
                decision.threshold_bp or 0,
                decision.at,
                unit,
                op.pool,
            )
        )
    return _tally(keyed, window)


def check_decisions(
    decisions: Iterable[RolloutDecided],
    window: timedelta = DEFAULT_WINDOW,
    *,
    alpha: float = DEFAULT_ALPHA,
) -> SampleRatio:
    """The whole check over decisions: per flag version overall, and per window."""
    listed = list(decisions)
    return check(
        decision_counts(listed, None),
        decision_counts(listed, window),
        unit="decisions",
        alpha=alpha,
    )
