"""Post-migration analysis: the baseline (V1 as primary before the ramp) beside now (V2 as
primary at 100 %), per operation, each figure with its change and a confidence interval.

Pure: the samples come in (durations, outcomes, resources of each period's operations and the
periods' lengths); nothing here reads the ledger or a clock.

Intervals are percentile bootstraps (``resamples`` draws, numpy's seeded generator, so the
same seed gives the same interval). A period with more than ``max_sample`` operations is
bootstrapped from a seeded random subset of that size (the point figures always use every
operation): the interval is then a little wider than it need be, never narrower. Throughput's
interval is the normal approximation of the log ratio of two Poisson counts.

Changes are relative (``now / baseline - 1``) except the error rate's, which is the
difference in rate (a baseline without errors has no ratio). A change is a *regression* or an
*improvement* only when its whole interval lies on one side of zero; throughput follows demand
and gets no verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "METRICS",
    "MetricChange",
    "Period",
    "compare_periods",
    "latency_histogram",
]


@dataclass(frozen=True)
class Period:
    """One period's operations of one operation name (all sequences the same length)."""

    durations_ms: Sequence[float]
    errors: Sequence[bool]
    cpu_ms: Sequence[float]
    memory_bytes: Sequence[float]
    seconds: float

    @property
    def count(self) -> int:
        return len(self.durations_ms)


@dataclass(frozen=True)
class MetricChange:
    metric: str
    baseline: float | None
    now: float | None
    change: float | None
    low: float | None
    high: float | None
    #: relative | difference
    change_kind: str
    #: regression | improvement | no clear change | no verdict
    verdict: str


#: metric -> (higher is worse?, relative change?)
METRICS: dict[str, tuple[bool | None, bool]] = {
    "p50_ms": (True, True),
    "p95_ms": (True, True),
    "p99_ms": (True, True),
    "error_rate": (True, False),
    "cpu_ms_mean": (True, True),
    "memory_bytes_mean": (True, True),
    "throughput_per_s": (None, True),
}

_QUANTILES = {"p50_ms": 0.50, "p95_ms": 0.95, "p99_ms": 0.99}


def _values(period: Period, metric: str) -> Sequence[float]:
    if metric in _QUANTILES:
        return period.durations_ms
    if metric == "error_rate":
        return [1.0 if e else 0.0 for e in period.errors]
    if metric == "cpu_ms_mean":
        return period.cpu_ms
    return period.memory_bytes


def _verdict(worse_if_higher: bool | None, low: float | None, high: float | None) -> str:
    if worse_if_higher is None:
        return "no verdict"
    if low is None or high is None:
        return "no clear change"
    if low > 0:
        return "regression" if worse_if_higher else "improvement"
    if high < 0:
        return "improvement" if worse_if_higher else "regression"
    return "no clear change"


def compare_periods(
    baseline: Period,
    now: Period,
    *,
    seed: int = 0,
    resamples: int = 1000,
    confidence: float = 0.95,
    max_sample: int = 20_000,
) -> tuple[MetricChange, ...]:
    """Every metric of :data:`METRICS`: baseline, now, change and its interval, verdict."""
    # Deferred: numpy loads only where arrays are built (``import ledger`` stays light).
    import numpy as np

    def statistic(metric: str, array: Any) -> Any:
        """The metric over the last axis (1-d: one value; 2-d: one per resample)."""
        if metric in _QUANTILES:
            return np.quantile(array, _QUANTILES[metric], axis=-1)
        return np.mean(array, axis=-1)

    rng = np.random.default_rng(seed)
    alpha = (1 - confidence) / 2
    out: list[MetricChange] = []
    for metric, (worse_if_higher, relative) in METRICS.items():
        kind = "relative" if relative else "difference"
        if metric == "throughput_per_s":
            out.append(_throughput(baseline, now, confidence, worse_if_higher))
            continue
        if baseline.count == 0 or now.count == 0:
            b = float(statistic(metric, _values(baseline, metric))) if baseline.count else None
            n = float(statistic(metric, _values(now, metric))) if now.count else None
            out.append(MetricChange(metric, b, n, None, None, None, kind, "no clear change"))
            continue
        a = np.asarray(_values(baseline, metric), dtype=float)
        c = np.asarray(_values(now, metric), dtype=float)
        b_value = float(statistic(metric, a))
        n_value = float(statistic(metric, c))
        boot = []
        for sample in (a, c):
            pool = sample
            if len(pool) > max_sample:
                pool = rng.choice(pool, size=max_sample, replace=False)
            # In chunks of resamples: a (resamples x n) array at once would take 160 MB.
            chunk = max(1, 1_000_000 // len(pool))
            parts = [
                np.asarray(
                    statistic(
                        metric, rng.choice(pool, size=(min(chunk, resamples - i), len(pool)))
                    ),
                    dtype=float,
                )
                for i in range(0, resamples, chunk)
            ]
            boot.append(np.concatenate(parts))
        if relative:
            if b_value == 0:
                out.append(MetricChange(metric, b_value, n_value, None, None, None, kind,
                                        "no clear change"))  # fmt: skip
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                changes = boot[1] / boot[0] - 1
            change = n_value / b_value - 1
        else:
            changes = boot[1] - boot[0]
            change = n_value - b_value
        changes = changes[np.isfinite(changes)]
        low = float(np.quantile(changes, alpha)) if len(changes) else None
        high = float(np.quantile(changes, 1 - alpha)) if len(changes) else None
        out.append(
            MetricChange(
                metric,
                b_value,
                n_value,
                change,
                low,
                high,
                kind,
                _verdict(worse_if_higher, low, high),
            )
        )
    return tuple(out)


def _throughput(
    baseline: Period, now: Period, confidence: float, worse_if_higher: bool | None
) -> MetricChange:
    # Deferred: scipy.stats takes ~3 s to import: only this analysis needs it.
    from scipy.stats import norm

    def rate(p: Period) -> float | None:
        return p.count / p.seconds if p.seconds > 0 else None

    b, n = rate(baseline), rate(now)
    if not b or not n:
        return MetricChange("throughput_per_s", b, n, None, None, None, "relative", "no verdict")
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    log_ratio = math.log(n / b)
    se = math.sqrt(1 / baseline.count + 1 / now.count)
    return MetricChange(
        "throughput_per_s",
        b,
        n,
        n / b - 1,
        math.exp(log_ratio - z * se) - 1,
        math.exp(log_ratio + z * se) - 1,
        "relative",
        _verdict(worse_if_higher, None, None),
    )


def latency_histogram(
    groups: dict[str, Sequence[float]], per_decade: int = 8
) -> tuple[tuple[float, ...], dict[str, tuple[int, ...]]]:
    """Counts per logarithmic bin (``per_decade`` bins per factor of ten) shared by groups."""
    present = [v for values in groups.values() for v in values if v > 0]
    if not present:
        return (), {}
    low = math.floor(math.log10(min(present)) * per_decade)
    high = math.floor(math.log10(max(present)) * per_decade)
    edges = tuple(10 ** (k / per_decade) for k in range(low, high + 2))
    counts: dict[str, tuple[int, ...]] = {}
    for name, values in groups.items():
        bins = [0] * (high - low + 1)
        for v in values:
            if v > 0:
                bins[min(max(math.floor(math.log10(v) * per_decade) - low, 0), high - low)] += 1
        counts[name] = tuple(bins)
    return edges, counts
