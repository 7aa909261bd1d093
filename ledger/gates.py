"""The go/no-go gates: one evaluation of measured figures against thresholds, used everywhere.

``report go-no-go`` measures its figures in the ledger (SQL, the audit); the switchover
controller measures them in the health windows of a soak. Both hand them to :func:`judge`,
which says, gate by gate, whether the figure is within its limit. A gate whose figure was not
measured, or whose threshold is not set, is not judged: the controller knows no dead-letter
rate, the report runs no Mann-Whitney judge.

Latency figures describe answers only, as the health windows do: a failure is judged by the
error rate, and a timeout's duration is the timeout setting, not a latency.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from ledger.errors import ConfigurationError
from ledger.sample_ratio import SampleRatio

__all__ = ["Check", "Figures", "Thresholds", "judge", "parse_thresholds"]


@dataclass(frozen=True)
class Thresholds:
    """Limits a switchover must stay within; each set one is a line of the checklist."""

    #: Fewest comparisons for the other figures to mean anything.
    min_comparisons: int | None = 1000
    #: Fewest V2 executions seen (the controller's soak sample).
    min_samples: int | None = None
    #: Value, shape and error mismatches plus V2-only errors, over all comparisons.
    max_mismatch_rate: float | None = 0.01
    #: Comparisons where one half never arrived.
    max_missing_rate: float | None = 0.02
    #: V2's error rate may be at most this multiple of V1's ...
    max_v2_error_ratio: float | None = 1.5
    #: ... plus this absolute allowance (so a V1 with no errors does not forbid any V2 error).
    v2_error_allowance: float = 0.002
    #: V2's p99 latency (answers only) over V1's.
    max_p99_ratio: float | None = 1.5
    #: Dead letters over every stored record.
    max_dead_letter_rate: float | None = 0.001
    #: Rollbacks of the flag in the window.
    max_rollbacks: int | None = 0
    #: Sample-ratio check (``ledger.sample_ratio``): the split is broken below this p-value.
    sample_ratio_alpha: float | None = 0.001
    #: Whether the statistical judge must not say "fail".
    require_judge: bool = False
    #: Decisions re-decided in Python besides the SQL audit (the report's, not a gate).
    audit_sample: int = 200


@dataclass(frozen=True)
class Figures:
    """What was measured; ``None`` means not measured here (that gate is not judged)."""

    comparisons: int | None = None
    mismatches: int | None = None
    missing: int | None = None
    v1_operations: int | None = None
    v1_errors: int | None = None
    v2_operations: int | None = None
    v2_errors: int | None = None
    v1_p99_ms: float | None = None
    v2_p99_ms: float | None = None
    records: int | None = None
    dead_letters: int | None = None
    rollbacks: int | None = None
    chain_ok: bool | None = None
    chain_detail: str = ""
    audit_ok: bool | None = None
    audit_detail: str = ""
    judge_verdict: str | None = None
    judge_detail: str = ""
    #: Sample-ratio checks (decisions, operations); empty: not measured.
    sample_ratios: tuple[SampleRatio, ...] = ()


@dataclass(frozen=True)
class Check:
    """One gate's verdict: ``gate`` is its stable id (records name failed gates by it)."""

    gate: str
    name: str
    passed: bool
    figure: str
    threshold: str


def _rate(part: int | None, whole: int | None) -> float | None:
    return part / whole if part is not None and whole else None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f} %"


def judge(figures: Figures, limits: Thresholds) -> list[Check]:
    """One line per judged gate: passed or not, with the figure and the limit it was held to."""
    f, t = figures, limits
    checks: list[Check] = []
    if t.min_comparisons is not None and f.comparisons is not None:
        checks.append(
            Check(
                "comparisons",
                "sample count",
                f.comparisons >= t.min_comparisons,
                f"{f.comparisons} comparisons",
                f">= {t.min_comparisons}",
            )
        )
    if t.min_samples is not None and f.v2_operations is not None:
        checks.append(
            Check(
                "samples",
                "V2 samples",
                f.v2_operations >= t.min_samples,
                f"{f.v2_operations} V2 executions",
                f">= {t.min_samples}",
            )
        )
    if t.max_mismatch_rate is not None and f.comparisons is not None:
        mismatch = _rate(f.mismatches, f.comparisons)
        checks.append(
            Check(
                "mismatch_rate",
                "mismatch rate",
                # No comparison yet: nothing mismatched (the sample gates say it is too few).
                (mismatch or 0.0) <= t.max_mismatch_rate,
                f"{_pct(mismatch)} ({f.mismatches} of {f.comparisons})",
                f"<= {_pct(t.max_mismatch_rate)}",
            )
        )
    if t.max_missing_rate is not None and f.missing is not None and f.comparisons is not None:
        missing = _rate(f.missing, f.comparisons)
        checks.append(
            Check(
                "missing_rate",
                "missing halves",
                missing is not None and missing <= t.max_missing_rate,
                f"{_pct(missing)} ({f.missing} of {f.comparisons})",
                f"<= {_pct(t.max_missing_rate)}",
            )
        )
    if (
        t.max_v2_error_ratio is not None
        and f.v2_operations is not None
        and f.v1_operations is not None
    ):
        v1_rate = _rate(f.v1_errors, f.v1_operations)
        v2_rate = _rate(f.v2_errors, f.v2_operations)
        allowed = None if v1_rate is None else v1_rate * t.max_v2_error_ratio + t.v2_error_allowance
        checks.append(
            Check(
                "error_ratio",
                "V2 error rate vs V1",
                v2_rate is not None and allowed is not None and v2_rate <= allowed,
                f"v2 {_pct(v2_rate)}, v1 {_pct(v1_rate)}",
                f"v2 <= {t.max_v2_error_ratio:g} x v1 + {_pct(t.v2_error_allowance)}"
                + (f" = {_pct(allowed)}" if allowed is not None else ""),
            )
        )
    if t.max_p99_ratio is not None and f.v1_operations is not None:
        ratio = f.v2_p99_ms / f.v1_p99_ms if f.v1_p99_ms and f.v2_p99_ms is not None else None
        checks.append(
            Check(
                "p99_ratio",
                "p99 latency ratio",
                ratio is not None and ratio <= t.max_p99_ratio,
                "n/a"
                if ratio is None
                else f"{ratio:.3f} (v2 {f.v2_p99_ms:.1f} ms / v1 {f.v1_p99_ms:.1f} ms, answers)",
                f"<= {t.max_p99_ratio:g}",
            )
        )
    if t.max_dead_letter_rate is not None and f.dead_letters is not None:
        dead = _rate(f.dead_letters, f.records)
        checks.append(
            Check(
                "dead_letters",
                "dead letters",
                (dead or 0.0) <= t.max_dead_letter_rate,
                f"{_pct(dead)} ({f.dead_letters} of {f.records} records)",
                f"<= {_pct(t.max_dead_letter_rate)}",
            )
        )
    if t.max_rollbacks is not None and f.rollbacks is not None:
        checks.append(
            Check(
                "rollbacks",
                "rollbacks",
                f.rollbacks <= t.max_rollbacks,
                f"{f.rollbacks}",
                f"<= {t.max_rollbacks}",
            )
        )
    if t.sample_ratio_alpha is not None:
        for srm in f.sample_ratios:
            if srm.p_value is None:
                continue  # nothing of a split was counted: nothing to compare with it
            checks.append(
                Check(
                    f"sample_ratio_{srm.unit}",
                    f"sample ratio ({srm.unit})",
                    not srm.mismatch_at(t.sample_ratio_alpha),
                    srm.summary(),
                    f"p >= {t.sample_ratio_alpha:g} overall and "
                    f">= {srm.window_alpha_at(t.sample_ratio_alpha):.2g} per window",
                )
            )
    if f.chain_ok is not None:
        checks.append(Check("chain", "flag log chain", f.chain_ok, f.chain_detail, "verified"))
    if f.audit_ok is not None:
        checks.append(Check("audit", "decision audit", f.audit_ok, f.audit_detail, "clean"))
    if t.require_judge and f.judge_verdict is not None:
        checks.append(
            Check("judge", "judge", f.judge_verdict != "fail", f.judge_detail, "not fail")
        )
    return checks


def parse_thresholds(table: Mapping[str, Any], source: str) -> Thresholds:
    """The defaults overridden by a ``[go_no_go]`` table; unknown keys and wrong types refused."""
    known = {f.name: f for f in fields(Thresholds)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigurationError(
            f"{source}: unknown threshold(s) {', '.join(unknown)}; known: {', '.join(known)}"
        )
    values: dict[str, Any] = {}
    for key, value in table.items():
        kind = str(known[key].type)
        if "bool" in kind:
            if not isinstance(value, bool):
                raise ConfigurationError(f"{source}: {key} must be true or false, got {value!r}")
            values[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigurationError(f"{source}: {key} must be a number, got {value!r}")
        if "int" in kind and not isinstance(value, int):
            raise ConfigurationError(f"{source}: {key} must be a whole number, got {value!r}")
        if value < 0:
            raise ConfigurationError(f"{source}: {key} must not be negative, got {value!r}")
        values[key] = int(value) if "int" in kind else float(value)
    return replace(Thresholds(), **values)
