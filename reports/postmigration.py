"""``report post-migration``: V1 before the ramp beside V2 at 100 %, per operation.

The periods come from the flag log: the **baseline** is V1's primary operations before the
ramp began (the first accepted change that sent any share to V2); **now** is V2's primary
operations since V2 last reached 100 % (``ledger.cleanup.full_since``). Throughput is a
period's primary operations over its length (baseline: its first operation to the ramp's
start; now: 100 % to its last operation). The figures and their intervals are
``ledger.postmigration.compare_periods``'s. ``ReportOptions.extra``: ``seed`` (default 0).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from ledger.cleanup import FlagStep, full_since
from ledger.postmigration import MetricChange, Period, compare_periods, latency_histogram
from reports.cleanup import flag_steps
from reports.model import HistogramChart, Report, ReportOptions, Section
from reports.queries import fetch

__all__ = ["post_migration", "ramp_start"]

PRIMARY = """
SELECT operation, started_at, duration_ms, outcome = 'error',
       coalesce(resources.cpu_ms, 0), coalesce(resources.memory_bytes, 0)
FROM scoped_operations
WHERE pool = $pool AND role = 'primary'
  AND ($since IS NULL OR started_at >= $since) AND ($until IS NULL OR started_at < $until)
ORDER BY started_at, correlation_id
"""

_FAR = datetime(9999, 1, 1, tzinfo=UTC)


def ramp_start(steps: list[FlagStep]) -> datetime | None:
    """The first accepted change that sent any share of decisions to V2."""
    for step in sorted(steps, key=lambda s: s.version):
        if step.enabled and step.rollout_bp > 0:
            return step.at
    return None


def _periods(
    con: Any, pool: str, since: datetime | None, until: datetime | None
) -> tuple[dict[str, Period], datetime | None, datetime | None]:
    _, rows = fetch(con, PRIMARY, pool=pool, since=since, until=until)
    columns: dict[str, tuple[list[float], list[bool], list[float], list[float]]] = defaultdict(
        lambda: ([], [], [], [])
    )
    for op, _, duration, error, cpu, memory in rows:
        d, e, c, m = columns[op]
        d.append(float(duration))
        e.append(bool(error))
        c.append(float(cpu))
        m.append(float(memory))
    first = rows[0][1] if rows else None
    last = rows[-1][1] if rows else None
    start = since or first
    end = until or last
    seconds = (end - start).total_seconds() if start and end else 0.0
    return (
        {op: Period(d, e, c, m, seconds) for op, (d, e, c, m) in columns.items()},
        start,
        end,
    )


def _sentence(operation: str, change: MetricChange) -> str:
    size = abs(change.change or 0.0)
    if change.change_kind == "difference":
        direction = "higher" if (change.change or 0) > 0 else "lower"
        amount = f"{size * 100:.2f} percentage points {direction}"
    else:
        direction = "higher" if (change.change or 0) > 0 else "lower"
        amount = f"{size:.0%} {direction}"
    return (
        f"{operation}: V2's {change.metric} is {amount} than V1's was "
        f"(95 % interval {change.low:+.3g} .. {change.high:+.3g})"
    )


def post_migration(con: Any, options: ReportOptions) -> Report:
    seed = int(options.extra.get("seed", 0))
    steps = flag_steps(con, options.flag, options.until or _FAR)
    ramp = ramp_start(steps)
    full = full_since(steps)
    baseline, b_from, b_until = _periods(con, "v1", None, ramp)
    if full is not None:
        current, n_from, n_until = _periods(con, "v2", full, None)
    else:
        current, n_from, n_until = {}, None, None
    periods = Section(
        "periods",
        "The two periods compared",
        ("period", "pool", "from", "until", "operations"),
        (
            ("baseline", "v1", b_from, b_until, sum(p.count for p in baseline.values())),
            ("now", "v2", n_from, n_until, sum(p.count for p in current.values())),
        ),
        note="primary operations only; baseline ends where the ramp began, now begins at 100 %",
    )
    rows = []
    named = []
    histograms = []
    empty = Period((), (), (), (), 0.0)
    for operation in sorted(set(baseline) | set(current)):
        before = baseline.get(operation, empty)
        after = current.get(operation, empty)
        for change in compare_periods(before, after, seed=seed):
            rows.append(
                (
                    operation,
                    change.metric,
                    _round(change.baseline),
                    _round(change.now),
                    _round(change.change),
                    _round(change.low),
                    _round(change.high),
                    change.change_kind,
                    change.verdict,
                )
            )
            if change.verdict in ("regression", "improvement"):
                named.append(
                    (operation, change.metric, change.verdict, _sentence(operation, change))
                )
        if options.charts:
            edges, counts = latency_histogram(
                {"baseline (V1)": before.durations_ms, "now (V2)": after.durations_ms},
                options.histogram_bins,
            )
            histograms.append(
                HistogramChart(
                    f"latency-{operation}",
                    f"{operation}: latency, baseline (V1) and now (V2)",
                    "duration (ms, log scale)",
                    edges,
                    counts,
                )
            )
    notes = () if full is not None else ("V2 is not at 100 %: there is no 'now' period yet",)
    return Report(
        "post-migration",
        "Post-migration: V1 before the ramp beside V2 at 100 %",
        (
            periods,
            Section(
                "changes",
                "Per operation: baseline, now, change and its 95 % interval",
                (
                    "operation",
                    "metric",
                    "baseline",
                    "now",
                    "change",
                    "ci_low",
                    "ci_high",
                    "change_kind",
                    "verdict",
                ),
                tuple(rows),
                note="relative: now / baseline - 1; difference: now - baseline (error rate)",
            ),
            Section(
                "named",
                "Regressions and improvements",
                ("operation", "metric", "verdict", "sentence"),
                tuple(named),
                note="only changes whose whole interval lies on one side of zero",
            ),
        ),
        charts=tuple(histograms),
        notes=notes,
        meta={"flag": options.flag, "seed": seed},
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
