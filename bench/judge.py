"""Sequential gates beside today's fixed-window judge, over many simulated ramps.

Usage: ``python -P bench/judge.py [--ramps R] [--requests N] [--windows W] [--seed S] [--json]``

A ramp is the default plan's stages below 100 % (5, 10, 25, 50, 75 %), W closed windows each,
N requests per window split by a seeded binomial draw at the stage's share. V1 fails 1 % of
its executions; latencies are log-normal (median 20 ms, sigma 0.5); each pool's window keeps
a 256-latency sample (what the health windows keep). Three V2s:

- ``healthy``: V2 is V1 (any rollback is a false one);
- ``errors_2x``: V2 fails 2 % of its executions;
- ``latency_1_5x``: every V2 latency is 1.5x (so its p95 is 1.5x V1's).

Two judges look after every window:

- ``sequential`` — ``ledger.sequential.sequential_verdicts`` (the controller's, with
  ``SequentialPolicy()``: alpha 1 % over the ramp), harm proven = roll back;
- ``fixed_safe`` — a fixed-window test made as safe as the sequential one: each window's
  one-sided Fisher exact test of the error rates at (alpha / 2) / windows (Bonferroni over the
  ramp's looks); errors only;
- ``fixed`` — today's per-window judging, ``ledger.policy.assess`` with ``HealthPolicy()``:
  a rollback trigger fires, or the canary judge (Mann-Whitney, 98 %) says ``fail``. The
  triggers alone are also printed (``fixed_triggers``): today they alone roll back.

Samples = V2 executions seen up to the window where the judge rolled back (a ramp that is
never rolled back counts as not detected; the median is over all ramps, so it is None when
fewer than half were detected). Everything is drawn from one seeded ``numpy`` Generator.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from scipy.stats import fisher_exact

from ledger.events import HealthAssessed
from ledger.policy import HealthPolicy, assess
from ledger.sequential import SequentialPolicy, sequential_verdicts

STAGES = (0.05, 0.10, 0.25, 0.50, 0.75)
BASE_ERROR = 0.01
MEDIAN_MS = 20.0
SIGMA = 0.5
SAMPLE = 256
T0 = datetime(2026, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class Scenario:
    name: str
    v2_error: float = BASE_ERROR
    v2_latency_factor: float = 1.0


SCENARIOS = (
    Scenario("healthy"),
    Scenario("errors_2x", v2_error=2 * BASE_ERROR),
    Scenario("latency_1_5x", v2_latency_factor=1.5),
)


def _window(pool: str, i: int, n: int, errors: int, sample: np.ndarray) -> HealthAssessed:
    start = T0 + MINUTE * i
    latencies = tuple(float(v) for v in sample)
    p99 = float(np.quantile(sample, 0.99)) if len(sample) else None
    return HealthAssessed(
        event_id=f"h-{pool}-{i}",
        pool=pool,  # type: ignore[arg-type]
        operation="*",
        window_start=start,
        window_end=start + MINUTE,
        count=n,
        error_count=errors,
        p99_ms=p99,
        latency_sample_ms=latencies,
        at=start + MINUTE,
    )


def ramp(
    rng: np.random.Generator, scenario: Scenario, requests: int, windows: int
) -> list[tuple[HealthAssessed, HealthAssessed]]:
    """One ramp's closed windows, V1 and V2, in order."""
    out = []
    i = 0
    for share in STAGES:
        for _ in range(windows):
            n2 = int(rng.binomial(requests, share))
            n1 = requests - n2
            e1 = int(rng.binomial(n1, BASE_ERROR))
            e2 = int(rng.binomial(n2, scenario.v2_error))
            s1 = rng.lognormal(np.log(MEDIAN_MS), SIGMA, size=min(n1 - e1, SAMPLE))
            s2 = rng.lognormal(np.log(MEDIAN_MS), SIGMA, size=min(n2 - e2, SAMPLE))
            s2 = s2 * scenario.v2_latency_factor
            out.append((_window("v1", i, n1, e1, s1), _window("v2", i, n2, e2, s2)))
            i += 1
    return out


def _samples_until(
    pairs: list[tuple[HealthAssessed, HealthAssessed]], index: int | None
) -> int | None:
    if index is None:
        return None
    return sum(v2.count for _, v2 in pairs[: index + 1])


def sequential_judge(
    pairs: list[tuple[HealthAssessed, HealthAssessed]], policy: SequentialPolicy
) -> int | None:
    """V2 samples until harm is proven on either metric (None: never)."""
    flat = [w for pair in pairs for w in pair]
    proven = [v.proven_at for v in sequential_verdicts(flat, policy) if v.proven_at is not None]
    if not proven:
        return None
    first = min(proven)
    index = next(i for i, (_, v2) in enumerate(pairs) if v2.window_end == first)
    return _samples_until(pairs, index)


def fixed_judge(
    pairs: list[tuple[HealthAssessed, HealthAssessed]], policy: HealthPolicy
) -> tuple[int | None, int | None]:
    """V2 samples until (trigger or judge fail, trigger alone) first rolls back."""
    any_index = trigger_index = None
    for i, (v1, v2) in enumerate(pairs):
        verdict = assess(v1, v2, policy, {}, v2.window_end)
        triggered = verdict.status == "rollback"
        failed = verdict.judgement is not None and verdict.judgement.verdict == "fail"
        if any_index is None and (triggered or failed):
            any_index = i
        if trigger_index is None and triggered:
            trigger_index = i
        if any_index is not None and trigger_index is not None:
            break
    return _samples_until(pairs, any_index), _samples_until(pairs, trigger_index)


def safe_fixed_judge(
    pairs: list[tuple[HealthAssessed, HealthAssessed]], alpha: float
) -> int | None:
    """A fixed-window test held to the sequential judge's safety: each window's one-sided
    Fisher exact test of V2's error rate against V1's, at alpha / windows (Bonferroni over
    every look of the ramp)."""
    level = alpha / len(pairs)
    for i, (v1, v2) in enumerate(pairs):
        table = [
            [v2.error_count, v2.count - v2.error_count],
            [v1.error_count, v1.count - v1.error_count],
        ]
        if fisher_exact(table, alternative="greater").pvalue < level:
            return _samples_until(pairs, i)
    return None


def _median(values: list[int | None]) -> float | None:
    """Median with undetected ramps counted as infinite (None when they are the majority)."""
    ranked = sorted(float("inf") if v is None else float(v) for v in values)
    middle = statistics.median(ranked)
    return None if middle == float("inf") else middle


def run(ramps: int, requests: int, windows: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    sequential_policy = SequentialPolicy()
    health_policy = HealthPolicy()
    figures: dict[str, Any] = {
        "ramps": ramps,
        "requests_per_window": requests,
        "windows_per_stage": windows,
        "stages": list(STAGES),
        "seed": seed,
        "alpha": sequential_policy.alpha,
    }
    for scenario in SCENARIOS:
        seq: list[int | None] = []
        fixed: list[int | None] = []
        triggers: list[int | None] = []
        safe: list[int | None] = []
        for _ in range(ramps):
            pairs = ramp(rng, scenario, requests, windows)
            seq.append(sequential_judge(pairs, sequential_policy))
            f, t = fixed_judge(pairs, health_policy)
            fixed.append(f)
            triggers.append(t)
            safe.append(safe_fixed_judge(pairs, sequential_policy.alpha / 2))
        judges = (
            ("sequential", seq),
            ("fixed", fixed),
            ("fixed_triggers", triggers),
            ("fixed_safe", safe),
        )
        for name, values in judges:
            rate = sum(v is not None for v in values) / ramps
            figures[f"{scenario.name}.{name}.rollback_rate"] = rate
            figures[f"{scenario.name}.{name}.median_samples"] = _median(values)
    figures["false_rollback_rate"] = figures["healthy.sequential.rollback_rate"]
    figures["fixed_false_rollback_rate"] = figures["healthy.fixed.rollback_rate"]
    figures["fixed_triggers_false_rollback_rate"] = figures["healthy.fixed_triggers.rollback_rate"]
    figures["samples_to_detect_2x_errors"] = figures["errors_2x.sequential.median_samples"]
    figures["fixed_samples_to_detect_2x_errors"] = figures["errors_2x.fixed.median_samples"]
    figures["fixed_safe_false_rollback_rate"] = figures["healthy.fixed_safe.rollback_rate"]
    figures["fixed_safe_samples_to_detect_2x_errors"] = figures[
        "errors_2x.fixed_safe.median_samples"
    ]
    figures["samples_to_detect_1_5x_p95"] = figures["latency_1_5x.sequential.median_samples"]
    figures["fixed_samples_to_detect_1_5x_p95"] = figures["latency_1_5x.fixed.median_samples"]
    return figures


def _fmt(value: Any) -> str:
    if value is None:
        return "not detected (median)"
    if isinstance(value, float) and value <= 1:
        return f"{value * 100:.1f} %"
    return f"{value:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ramps", type=int, default=200)
    parser.add_argument("--requests", type=int, default=1000, help="requests per window")
    parser.add_argument("--windows", type=int, default=6, help="windows per stage")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    options = parser.parse_args()
    started = time.process_time()
    figures = run(options.ramps, options.requests, options.windows, options.seed)
    figures["cpu_s"] = round(time.process_time() - started, 1)
    figures["loadavg"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"{options.ramps} ramps x {len(STAGES)} stages x {options.windows} windows x "
        f"{options.requests} requests (seed {options.seed}); load {figures['loadavg']}"
    )
    print(f"{'V2':<14}{'judge':<16}{'rolled back':>12}{'median V2 samples':>26}")
    for scenario in SCENARIOS:
        for name in ("sequential", "fixed", "fixed_triggers", "fixed_safe"):
            rate = figures[f"{scenario.name}.{name}.rollback_rate"]
            median = figures[f"{scenario.name}.{name}.median_samples"]
            shown = "-" if scenario.name == "healthy" else _fmt(median)
            print(f"{scenario.name:<14}{name:<16}{_fmt(rate):>12}{shown:>26}")
    goal_false = figures["false_rollback_rate"] <= 0.01
    seq_2x, fixed_2x = (
        figures["samples_to_detect_2x_errors"],
        figures["fixed_samples_to_detect_2x_errors"],
    )
    goal_fast = seq_2x is not None and (fixed_2x is None or seq_2x <= fixed_2x / 2)
    print(f"goal false rollbacks <= 1 %: {'met' if goal_false else 'NOT met'}")
    print(
        f"goal 2x errors in <= half the fixed judge's samples: {'met' if goal_fast else 'NOT met'}"
    )
    safe_2x = figures["fixed_safe_samples_to_detect_2x_errors"]
    goal_safe = seq_2x is not None and (safe_2x is None or seq_2x <= safe_2x / 2)
    print(
        "... and in <= half the samples of a fixed-window test as safe (fixed_safe): "
        + ("met" if goal_safe else "NOT met")
    )
    if options.json:
        print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
