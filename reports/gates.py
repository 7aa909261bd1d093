"""``report go-no-go``: the ledger's figures judged by the one go/no-go evaluation.

Collecting the figures (SQL, the audit) happens here; judging them is ``ledger.gates.judge``,
the same pure function the switchover controller's soak gates use, so the report and the
controller cannot disagree about the same figures.
Thresholds come from a TOML file (``[go_no_go]`` table or top-level keys)::

    [go_no_go]
    min_comparisons = 1000
    max_mismatch_rate = 0.01
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from ledger.errors import ConfigurationError
from ledger.gates import Figures, Thresholds, parse_thresholds
from ledger.health import DEFAULT_WINDOW
from ledger.sample_ratio import SampleRatio, SplitCount, check
from reports import queries
from reports.audit import audit
from reports.kept_verdicts import incremental_audit
from reports.model import ReportOptions
from reports.queries import fetch

__all__ = ["collect", "load_thresholds", "sample_ratio"]


def load_thresholds(path: Path | None) -> Thresholds:
    """The defaults, overridden by the file's keys; unknown keys and wrong types are errors."""
    if path is None:
        return Thresholds()
    try:
        document = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read thresholds {path}: {exc}") from exc
    table = document.get("go_no_go", document)
    if not isinstance(table, dict):
        raise ConfigurationError(f"{path}: [go_no_go] must be a table")
    return parse_thresholds(table, str(path))


def collect(con: Any, options: ReportOptions, limits: Thresholds) -> Figures:
    """Measure every figure of the checklist over the report window (``scoped_*`` views)."""
    _, rows = fetch(con, queries.GATE_COMPARISONS)
    comparisons, mismatches, missing = rows[0]
    _, pool_rows = fetch(con, queries.GATE_POOLS)
    # p99 of answers only, as the health windows: a timeout's duration is the timeout setting.
    p99 = {
        pool: sketch.quantile(0.99)
        for (pool,), sketch in queries.sketches(con, ("pool",), "outcome <> 'error'").items()
    }
    pools = {pool: (n, errors, p99.get(pool)) for pool, n, errors in pool_rows}
    v1 = pools.get("v1", (0, 0, None))
    v2 = pools.get("v2", (0, 0, None))
    _, dead_rows = fetch(con, queries.GATE_DEAD_LETTERS)
    _, overview = fetch(con, queries.OVERVIEW)
    records = sum(int(n) for _, n, _, _ in overview)
    _, rollback_rows = fetch(
        con, queries.GATE_ROLLBACKS, flag=options.flag, since=options.since, until=options.until
    )
    ratios = tuple(
        sample_ratio(con, options.flag, unit, query, limits)
        for unit, query in (
            ("decisions", queries.GATE_SAMPLE_RATIO_DECISIONS),
            ("operations", queries.GATE_SAMPLE_RATIO_OPERATIONS),
        )
    )
    # The decisions of the window (all of them without --since/--until); the chain in full.
    if options.rollups:
        # Kept verdicts for whole minutes, the edges and new segments re-decided.
        result = incremental_audit(
            con, since=options.since, until=options.until, sample=limits.audit_sample, seed=0
        )
    else:
        result = audit(con, sample=limits.audit_sample, seed=0, source="scoped_decisions")
    return Figures(
        comparisons=int(comparisons),
        mismatches=int(mismatches),
        missing=int(missing),
        v1_operations=int(v1[0]),
        v1_errors=int(v1[1]),
        v2_operations=int(v2[0]),
        v2_errors=int(v2[1]),
        v1_p99_ms=v1[2],
        v2_p99_ms=v2[2],
        records=records,
        dead_letters=int(dead_rows[0][0]),
        rollbacks=int(rollback_rows[0][0]),
        chain_ok=result.chain_ok,
        chain_detail=result.chain_summary(),
        audit_ok=result.decisions_ok,
        audit_detail=result.decisions_summary(),
        sample_ratios=ratios,
    )


def sample_ratio(con: Any, flag: str, unit: str, query: str, limits: Thresholds) -> SampleRatio:
    """The sample-ratio check of one unit over the report window: per flag version over the
    whole window, and per window of the health windows' size."""

    def counts(window: float) -> list[SplitCount]:
        _, rows = fetch(con, query, flag=flag, window=window)
        return [
            SplitCount(str(f), int(version), int(bp), int(v1), int(v2), start)
            for f, version, bp, start, v1, v2 in rows
        ]

    alpha = limits.sample_ratio_alpha
    return check(
        counts(0),
        counts(DEFAULT_WINDOW.total_seconds()),
        unit=unit,
        **({} if alpha is None else {"alpha": alpha}),
    )
