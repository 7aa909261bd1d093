"""Sequential gates: always-valid tests of harm, checked after every window at no cost.

A fixed-window test checked after every window raises a false alarm with its level *per
look*: over a soak of many windows the false-rollback rate adds up. An e-process does not: it
is a nonnegative martingale under "V2 is no worse", so by Ville's inequality the chance that it
*ever* reaches ``1 / alpha``, however often it is looked at, is at most ``alpha``. The
controller may then roll back the moment harm is proven (GrowthBook's and LaunchDarkly's
guarded rollouts do the same with their sequential tests).

The test (one for error rates, one for latency), per closed window:

- a 2x2 table: V1 and V2 executions, and how many of each were *events* (errors; or, for
  latency, answers slower than the window's pooled ``latency_quantile`` of both pools' latency
  samples);
- conditional on the table's margins, V2's event count is hypergeometric when both pools have
  the same event probability (Fisher's exact test's null; whatever that probability is, so a
  V1 base rate that drifts from window to window does not matter, nor does the split changing
  from stage to stage);
- the window's likelihood ratio against Fisher's noncentral hypergeometric with odds ratio
  ``psi`` has expectation exactly 1 under that null (and at most 1 when V2 is better); the
  product over windows is a test martingale for each ``psi``, and so is their average: a
  *mixture* SPRT over the grid of odds ratios the gate cares about (``error_odds_ratios``,
  ``latency_odds_ratios``).

Harm is proven when the mixture's e-value reaches ``2 / alpha`` (``alpha`` split evenly
between the two metrics, so the ramp's false-rollback rate stays at most ``alpha``).

For latency the events compare V2's tail with V1's: a V2 whose p95 is 1.5x V1's puts about a
quarter of its answers above the pooled p95 where V1 puts under 5 %. Latency samples are the
health windows' bottom-k samples (a deterministic subsample independent of the latency), so
the two pools stay exchangeable under the null.

The window's likelihood ratio is computed here (log-space sums of binomial coefficients) rather
than through ``scipy.stats.nchypergeom_fisher``: that one computes one ``psi`` at a time through
a slow generic path, and the normaliser is all that is needed; the tests check both agree.

Pure: windows in, verdicts out; no clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from ledger.events import HealthAssessed
from ledger.frozen import Frozen
from ledger.health import ALL_OPERATIONS

__all__ = [
    "EProcess",
    "SequentialPolicy",
    "SequentialVerdict",
    "Table",
    "exceedance_table",
    "log_likelihood_ratio",
    "sequential_verdicts",
]

Metric = Literal["error_rate", "latency"]


class SequentialPolicy(Frozen):
    """The always-valid harm test of the controller (None in a plan: not used)."""

    #: Chance, over a whole ramp, of rolling back a V2 that is no worse (split between metrics).
    alpha: float = Field(default=0.01, gt=0, lt=1)
    #: Odds ratios of V2's error rate over V1's the mixture weighs equally.
    error_odds_ratios: tuple[float, ...] = (1.5, 2.0, 3.0, 5.0)
    #: The latency tail compared: answers above this quantile of both pools' samples.
    latency_quantile: float = Field(default=0.95, gt=0, lt=1)
    #: Odds ratios of V2's share of tail answers over V1's (1.5x p95 gives about 6).
    latency_odds_ratios: tuple[float, ...] = (2.0, 4.0, 8.0)

    @property
    def threshold(self) -> float:
        """The e-value that proves harm on one metric."""
        return 2.0 / self.alpha


@dataclass(frozen=True)
class Table:
    """One window's 2x2 table: executions and events (errors, or slow answers) per pool."""

    v1_n: int
    v1_events: int
    v2_n: int
    v2_events: int

    @property
    def informative(self) -> bool:
        """Both pools seen and at least one event: otherwise the window says nothing."""
        events = self.v1_events + self.v2_events
        return self.v1_n > 0 and self.v2_n > 0 and 0 < events < self.v1_n + self.v2_n


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def log_likelihood_ratio(table: Table, psi: float) -> float:
    """log of P_psi(x) / P_1(x) for V2's event count x given the margins, where P_psi is
    Fisher's noncentral hypergeometric with odds ratio psi (P_1: the hypergeometric)."""
    if not table.informative:
        return 0.0
    n1, n2 = table.v1_n, table.v2_n
    k = table.v1_events + table.v2_events
    x = table.v2_events
    support = range(max(0, k - n1), min(k, n2) + 1)
    weights = [_log_comb(n2, y) + _log_comb(n1, k - y) for y in support]
    log_psi = math.log(psi)
    tilted = [w + y * log_psi for w, y in zip(weights, support, strict=True)]
    return x * log_psi - _logsumexp(tilted) + _logsumexp(weights)


@dataclass(frozen=True)
class EProcess:
    """The mixture over ``ratios`` of the products of window likelihood ratios, and totals."""

    ratios: tuple[float, ...]
    log_products: tuple[float, ...]
    windows: int = 0
    v1_n: int = 0
    v1_events: int = 0
    v2_n: int = 0
    v2_events: int = 0
    #: Mantel-Haenszel sums (odds ratio estimate across windows).
    mh_numerator: float = 0.0
    mh_denominator: float = 0.0

    @classmethod
    def start(cls, ratios: Sequence[float]) -> EProcess:
        return cls(tuple(ratios), tuple(0.0 for _ in ratios))

    def update(self, table: Table) -> EProcess:
        if not table.informative:
            return self
        total = table.v1_n + table.v2_n
        a, b = table.v2_events, table.v2_n - table.v2_events
        c, d = table.v1_events, table.v1_n - table.v1_events
        return EProcess(
            self.ratios,
            tuple(
                log + log_likelihood_ratio(table, psi)
                for log, psi in zip(self.log_products, self.ratios, strict=True)
            ),
            self.windows + 1,
            self.v1_n + table.v1_n,
            self.v1_events + table.v1_events,
            self.v2_n + table.v2_n,
            self.v2_events + table.v2_events,
            self.mh_numerator + a * d / total,
            self.mh_denominator + b * c / total,
        )

    @property
    def log_e_value(self) -> float:
        return _logsumexp(self.log_products) - math.log(len(self.log_products))

    @property
    def e_value(self) -> float:
        return math.exp(min(self.log_e_value, 700.0))

    @property
    def odds_ratio(self) -> float | None:
        """Mantel-Haenszel estimate of V2's odds of an event over V1's (None: undefined)."""
        if self.mh_denominator == 0:
            return None
        return self.mh_numerator / self.mh_denominator


def exceedance_table(
    v1_latencies: Sequence[float], v2_latencies: Sequence[float], quantile: float
) -> Table:
    """Answers above the ``quantile`` of both pools' latencies together, per pool."""
    pooled = sorted([*v1_latencies, *v2_latencies])
    if not v1_latencies or not v2_latencies:
        return Table(len(v1_latencies), 0, len(v2_latencies), 0)
    # The order statistic at the quantile (the lower one: no interpolation, so ties stay ties).
    cut = pooled[min(len(pooled) - 1, int(quantile * len(pooled)))]
    return Table(
        len(v1_latencies),
        sum(v > cut for v in v1_latencies),
        len(v2_latencies),
        sum(v > cut for v in v2_latencies),
    )


@dataclass(frozen=True)
class SequentialVerdict:
    """One metric's always-valid verdict over the windows it used: the evidence of a gate."""

    metric: Metric
    harm: bool
    e_value: float
    threshold: float
    alpha: float
    odds_ratio: float | None
    v1_n: int
    v1_events: int
    v2_n: int
    v2_events: int
    windows: tuple[datetime, ...]
    #: The window whose close proved harm (None: not proven).
    proven_at: datetime | None = None

    @property
    def gate(self) -> str:
        return f"sequential_{self.metric}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "test": "mixture SPRT, conditional (Fisher noncentral hypergeometric) per window",
            "harm": self.harm,
            "e_value": self.e_value,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "estimate": self.odds_ratio,
            "estimate_kind": "Mantel-Haenszel odds ratio, V2 over V1",
            "v1_n": self.v1_n,
            "v1_events": self.v1_events,
            "v2_n": self.v2_n,
            "v2_events": self.v2_events,
            "windows": [w.isoformat() for w in self.windows],
            "proven_at": self.proven_at.isoformat() if self.proven_at else None,
        }


def _paired(
    assessments: Sequence[HealthAssessed],
) -> list[tuple[HealthAssessed, HealthAssessed]]:
    v1 = {a.window_start: a for a in assessments if a.pool == "v1"}
    return sorted(
        (
            (v1[a.window_start], a)
            for a in assessments
            if a.pool == "v2" and a.operation == ALL_OPERATIONS and a.window_start in v1
        ),
        key=lambda pair: pair[1].window_start,
    )


def sequential_verdicts(
    assessments: Sequence[HealthAssessed], policy: SequentialPolicy
) -> tuple[SequentialVerdict, SequentialVerdict]:
    """Both metrics' verdicts over the closed ``"*"`` windows given (V1 and V2 of the same
    start are paired; a window seen by one pool only is skipped), in window order."""
    pairs = _paired([a for a in assessments if a.operation == ALL_OPERATIONS])
    errors = EProcess.start(policy.error_odds_ratios)
    latency = EProcess.start(policy.latency_odds_ratios)
    proven: dict[str, datetime] = {}
    used: list[datetime] = []
    for v1, v2 in pairs:
        used.append(v2.window_start)
        errors = errors.update(Table(v1.count, v1.error_count, v2.count, v2.error_count))
        latency = latency.update(
            exceedance_table(v1.latency_sample_ms, v2.latency_sample_ms, policy.latency_quantile)
        )
        for name, process in (("error_rate", errors), ("latency", latency)):
            if name not in proven and process.e_value >= policy.threshold:
                proven[name] = v2.window_end
    return (
        _verdict("error_rate", errors, policy, used, proven.get("error_rate")),
        _verdict("latency", latency, policy, used, proven.get("latency")),
    )


def _verdict(
    metric: Metric,
    process: EProcess,
    policy: SequentialPolicy,
    windows: Sequence[datetime],
    proven_at: datetime | None,
) -> SequentialVerdict:
    return SequentialVerdict(
        metric=metric,
        harm=proven_at is not None,
        e_value=process.e_value,
        threshold=policy.threshold,
        alpha=policy.alpha,
        odds_ratio=process.odds_ratio,
        v1_n=process.v1_n,
        v1_events=process.v1_events,
        v2_n=process.v2_n,
        v2_events=process.v2_events,
        windows=tuple(windows),
        proven_at=proven_at,
    )
