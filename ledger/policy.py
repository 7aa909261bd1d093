"""Health policy: when V2 must be rolled back, when to warn, and a canary judge.

``assess`` compares one closed V2 window with V1's window of the same operation and period
and returns a ``HealthVerdict``: rollback triggers, warnings, which of them are announced now
(the others are inside their cooldown), the figures behind every threshold and a Kayenta-style
judgement. Everything is a pure function of the windows, the policy, the previous alert times
and ``at``, so any gate can be re-run over recorded ``HealthAssessed`` events with other
thresholds and give the same answer every time.

The judge follows Netflix Kayenta's idea (described, not adapted): each metric is classified
``pass``/``high``/``low``/``nodata`` by a Mann-Whitney U test plus an effect size, and a
weighted score of the classifications gives ``pass``/``marginal``/``fail``. It is
deterministic: samples are deterministic (``ledger.health``'s bottom-k sample, counts), large
samples are thinned by evenly spaced order statistics, and nothing random is ever drawn.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ledger.errors import ConfigurationError
from ledger.events import HealthAssessed, Pool
from ledger.frozen import Frozen

__all__ = [
    "Alert",
    "Classification",
    "HealthPolicy",
    "HealthVerdict",
    "JudgePolicy",
    "Judgement",
    "MetricDirection",
    "MetricJudgement",
    "MetricSpec",
    "assess",
    "classify_metric",
    "judge",
    "judge_windows",
    "judged",
    "load_policy",
    "window_samples",
]


class MetricDirection(StrEnum):
    """Which way a metric may not move: latency may not go up, throughput may not go down."""

    INCREASE = "increase"
    DECREASE = "decrease"
    EITHER = "either"


class Classification(StrEnum):
    PASS = "pass"
    HIGH = "high"
    LOW = "low"
    NODATA = "nodata"


class MetricSpec(Frozen):
    """One judged metric. ``allowed_increase`` is the smallest ratio of V2's mean to V1's that
    counts as an increase worth failing on (a significant 2% shift is real but harmless)."""

    name: str
    direction: MetricDirection = MetricDirection.INCREASE
    weight: float = Field(default=1.0, gt=0)
    critical: bool = False
    allowed_increase: float = Field(default=1.1, ge=1.0)
    allowed_decrease: float = Field(default=0.9, gt=0, le=1.0)


class JudgePolicy(Frozen):
    """The canary judge: confidence of the test, score thresholds, sample bound, metrics."""

    confidence: float = Field(default=0.98, gt=0.5, lt=1.0)
    pass_score: float = Field(default=95.0, ge=0, le=100)
    marginal_score: float = Field(default=75.0, ge=0, le=100)
    #: Samples longer than this are thinned to this many evenly spaced order statistics.
    max_samples: int = Field(default=512, ge=8)
    #: Below this many values on either side a metric is ``nodata``.
    min_samples: int = Field(default=10, ge=1)
    #: When at least this share of the weight has no data, the whole judgement is ``nodata``.
    nodata_share: float = Field(default=0.5, gt=0, le=1.0)
    metrics: tuple[MetricSpec, ...] = (
        MetricSpec(name="latency", direction=MetricDirection.INCREASE, weight=1.0),
        MetricSpec(name="error_rate", direction=MetricDirection.INCREASE, weight=1.0),
    )

    @model_validator(mode="after")
    def _marginal_below_pass(self) -> JudgePolicy:
        if self.marginal_score > self.pass_score:
            raise ValueError("marginal_score: must not exceed pass_score")
        return self


class HealthPolicy(Frozen):
    """Rollback triggers, warnings and alert cooldown; defaults from the migration design."""

    #: Fewer executions than this in a V2 window (or its baseline) decide nothing.
    min_events: int = Field(default=10, ge=1)
    #: Roll back when V2's error rate exceeds this multiple of V1's...
    error_rate_ratio: float = Field(default=3.0, gt=1.0)
    #: ...and exceeds V1's by at least this much (absolute), so 0 vs 1 error never fires...
    error_rate_floor: float = Field(default=0.02, ge=0, le=1)
    #: ...and V2 has at least this many errors.
    min_error_count: int = Field(default=3, ge=1)
    #: With no usable V1 window to compare with, V2's error rate alone must exceed this.
    error_rate_without_baseline: float = Field(default=0.10, gt=0, le=1)
    #: Roll back when V2's p99 exceeds this multiple of V1's p99...
    p99_ratio: float = Field(default=2.0, gt=1.0)
    #: ...and exceeds it by at least this many milliseconds (a 1 ms vs 2.5 ms p99 is noise).
    p99_floor_ms: float = Field(default=10.0, ge=0)
    #: Roll back when more than this share of V2's executions failed in the worker itself.
    worker_failure_rate: float = Field(default=0.10, gt=0, le=1)
    #: Roll back when more than this share of compared pairs mismatch...
    mismatch_rate: float = Field(default=0.05, gt=0, le=1)
    #: ...out of at least this many comparisons...
    min_comparisons: int = Field(default=10, ge=1)
    #: ...with at least this many mismatches (2 of 13 is chance at a 1 % base rate, not a
    #: regression: short per-operation windows would otherwise roll back a healthy V2).
    min_mismatch_count: int = Field(default=4, ge=1)
    warn_error_rate: float = Field(default=0.05, gt=0, le=1)
    warn_p99_ms: float = Field(default=200.0, gt=0)
    #: An alert is announced again only after this long (a flapping metric does not spam).
    cooldown: timedelta = timedelta(minutes=5)
    judge: JudgePolicy = JudgePolicy()


def load_policy(path: Path | None = None) -> HealthPolicy:
    """The policy in a TOML file (keys as in ``HealthPolicy``; ``cooldown`` in seconds).

    ``None`` gives the defaults. A bad file raises ``ConfigurationError`` naming the key.
    """
    if path is None:
        return HealthPolicy()
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc
    data = dict(data.get("health", data))
    try:
        return HealthPolicy.model_validate(data)
    except ValueError as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc


# --- the judge ------------------------------------------------------------------------------


class MetricJudgement(Frozen):
    """One metric's classification and the statistics behind it (V2 = experiment)."""

    name: str
    classification: Classification
    control_n: int
    experiment_n: int
    p_value: float | None = None
    #: Hodges-Lehmann estimate of V2 minus V1, with its confidence interval.
    shift: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    #: V2's mean over V1's; None when V1's mean is 0 (V2's then is infinitely worse or equal).
    mean_ratio: float | None = None


class Judgement(Frozen):
    score: float
    verdict: Literal["pass", "marginal", "fail", "nodata"]
    metrics: tuple[MetricJudgement, ...]

    def classifications(self) -> dict[str, str]:
        return {m.name: m.classification.value for m in self.metrics}


def _thinned(values: Sequence[float], limit: int) -> list[float]:
    ordered = sorted(values)
    if len(ordered) <= limit:
        return ordered
    last = len(ordered) - 1
    return [ordered[round(i * last / (limit - 1))] for i in range(limit)]


def _hodges_lehmann(
    control: Sequence[float], experiment: Sequence[float], confidence: float
) -> tuple[float, float, float]:
    """Shift estimate (median of pairwise differences) and its distribution-free interval."""
    # Deferred: numpy loads only where arrays are built; scipy.stats takes ~3 s to import: only the
    # judge needs it.
    import numpy as np
    from scipy.stats import norm

    x = np.asarray(experiment, dtype=float)
    y = np.asarray(control, dtype=float)
    differences = np.sort(np.subtract.outer(x, y).ravel())
    m, n = len(x), len(y)
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    k = math.floor(m * n / 2 - z * math.sqrt(m * n * (m + n + 1) / 12))
    k = min(max(k, 0), len(differences) - 1)
    return (
        float(np.median(differences)),
        float(differences[k]),
        float(differences[len(differences) - 1 - k]),
    )


def classify_metric(
    control: Sequence[float],
    experiment: Sequence[float],
    spec: MetricSpec,
    policy: JudgePolicy,
) -> MetricJudgement:
    """Pass, high, low or nodata for one metric: V2's values (experiment) against V1's.

    High needs a significant Mann-Whitney U test (p below 1 - confidence), V2 ranking above
    V1, and a mean ratio at or above ``allowed_increase``; low mirrors it. A direction the
    metric is allowed to move in is a pass.
    """
    if len(control) < policy.min_samples or len(experiment) < policy.min_samples:
        return MetricJudgement(
            name=spec.name,
            classification=Classification.NODATA,
            control_n=len(control),
            experiment_n=len(experiment),
        )
    y = _thinned(control, policy.max_samples)
    x = _thinned(experiment, policy.max_samples)
    if min(x) == max(x) == min(y) == max(y):
        # Identical constants: nothing to test (and no noise is added to make a test possible).
        return MetricJudgement(
            name=spec.name,
            classification=Classification.PASS,
            control_n=len(control),
            experiment_n=len(experiment),
            p_value=1.0,
            shift=0.0,
            ci_low=0.0,
            ci_high=0.0,
            mean_ratio=1.0,
        )
    from scipy.stats import mannwhitneyu

    test = mannwhitneyu(x, y, alternative="two-sided", method="asymptotic")
    p_value = float(test.pvalue)
    u_experiment = float(test.statistic)
    shift, ci_low, ci_high = _hodges_lehmann(y, x, policy.confidence)
    mean_x, mean_y = sum(x) / len(x), sum(y) / len(y)
    if mean_y > 0:
        ratio: float | None = mean_x / mean_y
    else:
        ratio = 1.0 if mean_x == 0 else None
    significant = p_value < 1 - policy.confidence
    ranks_higher = u_experiment > len(x) * len(y) / 2
    ranks_lower = u_experiment < len(x) * len(y) / 2
    increased = ratio is None or ratio >= spec.allowed_increase
    decreased = ratio is not None and ratio <= spec.allowed_decrease
    classification = Classification.PASS
    if significant and ranks_higher and increased and spec.direction != MetricDirection.DECREASE:
        classification = Classification.HIGH
    elif significant and ranks_lower and decreased and spec.direction != MetricDirection.INCREASE:
        classification = Classification.LOW
    return MetricJudgement(
        name=spec.name,
        classification=classification,
        control_n=len(control),
        experiment_n=len(experiment),
        p_value=p_value,
        shift=shift,
        ci_low=ci_low,
        ci_high=ci_high,
        mean_ratio=ratio,
    )


def judge(
    control: Mapping[str, Sequence[float]],
    experiment: Mapping[str, Sequence[float]],
    policy: JudgePolicy | None = None,
) -> Judgement:
    """Classify every metric of ``policy`` and score them (100 = every weighted metric passed).

    A critical metric that is not a pass scores 0; when ``nodata_share`` of the weight has no
    data the judgement is ``nodata`` (score 0): too little traffic is not a pass.
    """
    policy = policy or JudgePolicy()
    judgements = tuple(
        classify_metric(control.get(spec.name, ()), experiment.get(spec.name, ()), spec, policy)
        for spec in policy.metrics
    )
    total = sum(spec.weight for spec in policy.metrics)
    nodata = sum(
        spec.weight
        for spec, j in zip(policy.metrics, judgements, strict=True)
        if j.classification == Classification.NODATA
    )
    if total == 0 or nodata / total >= policy.nodata_share:
        return Judgement(score=0.0, verdict="nodata", metrics=judgements)
    passed = sum(
        spec.weight
        for spec, j in zip(policy.metrics, judgements, strict=True)
        if j.classification == Classification.PASS
    )
    score = 100.0 * passed / (total - nodata)
    critical_failed = any(
        spec.critical and j.classification in (Classification.HIGH, Classification.LOW)
        for spec, j in zip(policy.metrics, judgements, strict=True)
    )
    if critical_failed:
        score = 0.0
    verdict: Literal["pass", "marginal", "fail"]
    if score >= policy.pass_score:
        verdict = "pass"
    elif score >= policy.marginal_score:
        verdict = "marginal"
    else:
        verdict = "fail"
    return Judgement(score=round(score, 6), verdict=verdict, metrics=judgements)


def _binary(count: int, errors: int, limit: int) -> list[float]:
    """Executions as 0 (ok) / 1 (error), thinned to ``limit`` keeping the proportion."""
    if count > limit:
        errors = round(errors * limit / count)
        count = limit
    return [1.0] * errors + [0.0] * (count - errors)


def window_samples(windows: Sequence[HealthAssessed], limit: int = 512) -> dict[str, list[float]]:
    """The judge's samples of one pool over some windows: latencies and 0/1 errors."""
    latencies = [value for window in windows for value in window.latency_sample_ms]
    count = sum(window.count for window in windows)
    errors = sum(window.error_count for window in windows)
    return {"latency": latencies, "error_rate": _binary(count, errors, limit)}


def judge_windows(
    v1: Sequence[HealthAssessed], v2: Sequence[HealthAssessed], policy: JudgePolicy | None = None
) -> Judgement:
    """Judge V2's windows against V1's (one window each, or every window of a soak)."""
    policy = policy or JudgePolicy()
    return judge(
        window_samples(v1, policy.max_samples), window_samples(v2, policy.max_samples), policy
    )


# --- triggers, warnings, cooldown -----------------------------------------------------------


class Alert(Frozen):
    """One threshold crossed: a rollback trigger or a warning, with its figures."""

    name: str
    level: Literal["rollback", "warning"]
    pool: Pool
    operation: str
    value: float
    threshold: float
    message: str

    @property
    def key(self) -> str:
        """What the cooldown is kept per: the same alert on the same pool and operation."""
        return f"{self.level}:{self.name}:{self.pool}:{self.operation}"


class HealthVerdict(Frozen):
    """The outcome of ``assess``. Pass ``cooldowns`` as ``previous_alerts`` next time."""

    status: Literal["ok", "warn", "rollback", "insufficient_data"]
    triggers: tuple[Alert, ...] = ()
    warnings: tuple[Alert, ...] = ()
    #: Triggers and warnings announced now; the rest are within their cooldown.
    alerts: tuple[Alert, ...] = ()
    cooldowns: dict[str, datetime] = Field(default_factory=dict)
    judgement: Judgement | None = None
    metrics: dict[str, float] = Field(default_factory=dict)

    @property
    def rollback_announced(self) -> bool:
        """A trigger fired and is not in cooldown: time to send a rollback command."""
        return any(alert.level == "rollback" for alert in self.alerts)


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _triggers(
    v1: HealthAssessed | None, v2: HealthAssessed, policy: HealthPolicy, figures: dict[str, float]
) -> list[Alert]:
    found: list[Alert] = []
    op = v2.operation
    # A V1 window too small to compare with is no baseline at all.
    baseline = v1 if v1 is not None and v1.count >= policy.min_events else None
    if v2.count >= policy.min_events:
        v2_rate = _rate(v2.error_count, v2.count)
        if baseline is not None:
            v1_rate = _rate(baseline.error_count, baseline.count)
            threshold = max(policy.error_rate_ratio * v1_rate, v1_rate + policy.error_rate_floor)
            why = (
                f"{policy.error_rate_ratio:g}x V1's {v1_rate:.4f}, "
                f"at least +{policy.error_rate_floor:g}"
            )
        else:
            threshold = policy.error_rate_without_baseline
            why = "no V1 baseline"
        figures["threshold.error_rate"] = threshold
        if v2.error_count >= policy.min_error_count and v2_rate > threshold:
            found.append(
                Alert(
                    name="error_rate",
                    level="rollback",
                    pool="v2",
                    operation=op,
                    value=v2_rate,
                    threshold=threshold,
                    message=f"V2 error rate {v2_rate:.4f} > {threshold:.4f} ({why})",
                )
            )
        failure_rate = _rate(v2.worker_failures, v2.count)
        figures["threshold.worker_failure_rate"] = policy.worker_failure_rate
        if failure_rate > policy.worker_failure_rate:
            found.append(
                Alert(
                    name="worker_failure_rate",
                    level="rollback",
                    pool="v2",
                    operation=op,
                    value=failure_rate,
                    threshold=policy.worker_failure_rate,
                    message=(
                        f"V2 worker failure rate {failure_rate:.4f} "
                        f"> {policy.worker_failure_rate:g}"
                    ),
                )
            )
        v1_p99 = baseline.p99_ms if baseline is not None else None
        if v1_p99 is not None and v2.p99_ms is not None:
            threshold = max(policy.p99_ratio * v1_p99, v1_p99 + policy.p99_floor_ms)
            figures["threshold.p99_ms"] = threshold
            if v2.p99_ms > threshold:
                found.append(
                    Alert(
                        name="p99_latency",
                        level="rollback",
                        pool="v2",
                        operation=op,
                        value=v2.p99_ms,
                        threshold=threshold,
                        message=(
                            f"V2 p99 {v2.p99_ms:.1f} ms > {threshold:.1f} ms "
                            f"({policy.p99_ratio:g}x V1's {v1_p99:.1f} ms)"
                        ),
                    )
                )
    if v2.comparisons >= policy.min_comparisons and v2.mismatches >= policy.min_mismatch_count:
        mismatch_rate = _rate(v2.mismatches, v2.comparisons)
        figures["threshold.mismatch_rate"] = policy.mismatch_rate
        if mismatch_rate > policy.mismatch_rate:
            found.append(
                Alert(
                    name="mismatch_rate",
                    level="rollback",
                    pool="v2",
                    operation=op,
                    value=mismatch_rate,
                    threshold=policy.mismatch_rate,
                    message=f"mismatch rate {mismatch_rate:.4f} > {policy.mismatch_rate:g}",
                )
            )
    return found


def _warnings(window: HealthAssessed | None, policy: HealthPolicy) -> list[Alert]:
    if window is None or window.count < policy.min_events:
        return []
    found: list[Alert] = []
    rate = _rate(window.error_count, window.count)
    if rate > policy.warn_error_rate:
        found.append(
            Alert(
                name="error_rate",
                level="warning",
                pool=window.pool,
                operation=window.operation,
                value=rate,
                threshold=policy.warn_error_rate,
                message=f"{window.pool.upper()} error rate {rate:.4f} > {policy.warn_error_rate:g}",
            )
        )
    if window.p99_ms is not None and window.p99_ms > policy.warn_p99_ms:
        found.append(
            Alert(
                name="p99_latency",
                level="warning",
                pool=window.pool,
                operation=window.operation,
                value=window.p99_ms,
                threshold=policy.warn_p99_ms,
                message=(
                    f"{window.pool.upper()} p99 {window.p99_ms:.1f} ms > {policy.warn_p99_ms:g} ms"
                ),
            )
        )
    return found


def _figures(prefix: str, window: HealthAssessed | None) -> dict[str, float]:
    if window is None:
        return {}
    figures = {f"{prefix}.count": float(window.count)}
    if window.count:
        figures[f"{prefix}.error_rate"] = _rate(window.error_count, window.count)
        figures[f"{prefix}.worker_failure_rate"] = _rate(window.worker_failures, window.count)
    if window.comparisons:
        figures[f"{prefix}.mismatch_rate"] = _rate(window.mismatches, window.comparisons)
    for name in ("p50_ms", "p95_ms", "p99_ms", "mean_ms", "cpu_ms_mean"):
        value = getattr(window, name)
        if value is not None:
            figures[f"{prefix}.{name}"] = float(value)
    return figures


def assess(
    v1: HealthAssessed | None,
    v2: HealthAssessed,
    policy: HealthPolicy,
    previous_alerts: Mapping[str, datetime],
    at: datetime,
) -> HealthVerdict:
    """Judge V2's closed window against V1's window of the same operation and period.

    ``previous_alerts`` maps alert keys to when each was last announced (the ``cooldowns`` of
    the previous verdict); an alert is announced again only once ``policy.cooldown`` has
    passed. Triggers and warnings are listed whether announced or not: they are facts.
    """
    figures = {**_figures("v1", v1), **_figures("v2", v2)}
    triggers = _triggers(v1, v2, policy, figures)
    warnings = _warnings(v1, policy) + _warnings(v2, policy)
    judgement = judge_windows([v1] if v1 is not None else [], [v2], policy.judge)
    figures["judge.score"] = judgement.score
    if judgement.verdict == "fail":
        warnings.append(
            Alert(
                name="judge",
                level="warning",
                pool="v2",
                operation=v2.operation,
                value=judgement.score,
                threshold=policy.judge.marginal_score,
                message=(
                    f"canary judge: score {judgement.score:.1f} < {policy.judge.marginal_score:g}"
                ),
            )
        )
    cooldowns = {key: when for key, when in previous_alerts.items() if at - when < policy.cooldown}
    alerts: list[Alert] = []
    for alert in (*triggers, *warnings):
        last = cooldowns.get(alert.key)
        if last is None or at - last >= policy.cooldown:
            alerts.append(alert)
            cooldowns[alert.key] = at
    if triggers:
        status: Literal["ok", "warn", "rollback", "insufficient_data"] = "rollback"
    elif warnings:
        status = "warn"
    elif v2.count < policy.min_events and v2.comparisons < policy.min_comparisons:
        status = "insufficient_data"
    else:
        status = "ok"
    return HealthVerdict(
        status=status,
        triggers=tuple(triggers),
        warnings=tuple(warnings),
        alerts=tuple(alerts),
        cooldowns=cooldowns,
        judgement=judgement,
        metrics=figures,
    )


def judged(
    window: HealthAssessed, verdict: HealthVerdict, baseline: HealthAssessed | None = None
) -> HealthAssessed:
    """``window`` with the verdict's findings about its own pool filled in.

    V2's window carries the triggers, the judgement and every figure compared; V1's window
    only its own warnings (V1 is the reference and is never rolled back).
    """
    mine = [a for a in verdict.warnings if a.pool == window.pool]
    triggers = [a for a in verdict.triggers if a.pool == window.pool]
    announced = [a for a in verdict.alerts if a.pool == window.pool]
    if window.pool == "v2":
        status = verdict.status
    else:
        status = "warn" if mine else ("ok" if window.count else "insufficient_data")
    update: dict[str, Any] = {
        "verdict": status,
        "triggers": tuple(a.name for a in triggers),
        "warnings": tuple(a.name for a in mine),
        "alerts": tuple(a.message for a in announced),
    }
    if window.pool == "v2":
        update["compared_with"] = baseline.event_id if baseline is not None else None
        update["metrics"] = {**window.metrics, **verdict.metrics}
        if verdict.judgement is not None:
            update["judge_verdict"] = verdict.judgement.verdict
            update["judge_score"] = verdict.judgement.score
            update["judge"] = verdict.judgement.classifications()
    return window.model_copy(update=update)
