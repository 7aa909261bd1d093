"""The go/no-go checklist for the switchover: recorded figures against configurable thresholds.

Collecting the figures (SQL, the audit) is separate from judging them (:func:`judge`, pure),
so the same judgement can be tested exhaustively and re-run with other thresholds.
Thresholds come from a TOML file (``[go_no_go]`` table or top-level keys)::

    [go_no_go]
    min_comparisons = 1000
    max_mismatch_rate = 0.01
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ledger.errors import ConfigurationError
from reports import queries
from reports.catalog import ReportOptions, fetch
from reports.model import Report, Section

__all__ = ["Check", "Figures", "Thresholds", "collect", "go_no_go", "judge", "load_thresholds"]


@dataclass(frozen=True)
class Thresholds:
    """Limits a switchover must stay within; each one is a line of the checklist."""

    #: Fewest comparisons for the other figures to mean anything.
    min_comparisons: int = 1000
    #: Value, shape and error mismatches plus V2-only errors, over all comparisons.
    max_mismatch_rate: float = 0.01
    #: Comparisons where one half never arrived.
    max_missing_rate: float = 0.02
    #: V2's error rate may be at most this multiple of V1's ...
    max_v2_error_ratio: float = 1.5
    #: ... plus this absolute allowance (so a V1 with no errors does not forbid any V2 error).
    v2_error_allowance: float = 0.002
    #: V2's p99 latency over V1's.
    max_p99_ratio: float = 1.5
    #: Dead letters over every stored record.
    max_dead_letter_rate: float = 0.001
    #: Rollbacks of the flag in the window.
    max_rollbacks: int = 0
    #: Decisions re-decided in Python besides the SQL audit.
    audit_sample: int = 200


@dataclass(frozen=True)
class Figures:
    """What the ledger says, as measured for the checklist."""

    comparisons: int = 0
    mismatches: int = 0
    missing: int = 0
    v1_operations: int = 0
    v1_errors: int = 0
    v2_operations: int = 0
    v2_errors: int = 0
    v1_p99_ms: float | None = None
    v2_p99_ms: float | None = None
    records: int = 0
    dead_letters: int = 0
    rollbacks: int = 0
    chain_ok: bool = False
    chain_detail: str = ""
    audit_ok: bool = False
    audit_detail: str = ""


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    figure: str
    threshold: str


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
    known = {f.name: f for f in fields(Thresholds)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigurationError(
            f"{path}: unknown threshold(s) {', '.join(unknown)}; known: {', '.join(known)}"
        )
    values: dict[str, Any] = {}
    for key, value in table.items():
        want = int if known[key].type in ("int", int) else float
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigurationError(f"{path}: {key} must be a number, got {value!r}")
        if want is int and not isinstance(value, int):
            raise ConfigurationError(f"{path}: {key} must be a whole number, got {value!r}")
        if value < 0:
            raise ConfigurationError(f"{path}: {key} must not be negative, got {value!r}")
        values[key] = want(value)
    return replace(Thresholds(), **values)


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f} %"


def judge(figures: Figures, limits: Thresholds) -> list[Check]:
    """One line per threshold: passed or not, with the figure and the limit it was held to."""
    checks = [
        Check(
            "sample count",
            figures.comparisons >= limits.min_comparisons,
            f"{figures.comparisons} comparisons",
            f">= {limits.min_comparisons}",
        )
    ]
    mismatch = _rate(figures.mismatches, figures.comparisons)
    checks.append(
        Check(
            "mismatch rate",
            mismatch is not None and mismatch <= limits.max_mismatch_rate,
            f"{_pct(mismatch)} ({figures.mismatches} of {figures.comparisons})",
            f"<= {_pct(limits.max_mismatch_rate)}",
        )
    )
    missing = _rate(figures.missing, figures.comparisons)
    checks.append(
        Check(
            "missing halves",
            missing is not None and missing <= limits.max_missing_rate,
            f"{_pct(missing)} ({figures.missing} of {figures.comparisons})",
            f"<= {_pct(limits.max_missing_rate)}",
        )
    )
    v1_rate = _rate(figures.v1_errors, figures.v1_operations)
    v2_rate = _rate(figures.v2_errors, figures.v2_operations)
    allowed = (
        None if v1_rate is None else v1_rate * limits.max_v2_error_ratio + limits.v2_error_allowance
    )
    checks.append(
        Check(
            "V2 error rate vs V1",
            v2_rate is not None and allowed is not None and v2_rate <= allowed,
            f"v2 {_pct(v2_rate)}, v1 {_pct(v1_rate)}",
            f"v2 <= {limits.max_v2_error_ratio:g} x v1 + {_pct(limits.v2_error_allowance)}"
            + (f" = {_pct(allowed)}" if allowed is not None else ""),
        )
    )
    ratio = (
        figures.v2_p99_ms / figures.v1_p99_ms
        if figures.v1_p99_ms and figures.v2_p99_ms is not None
        else None
    )
    checks.append(
        Check(
            "p99 latency ratio",
            ratio is not None and ratio <= limits.max_p99_ratio,
            "n/a"
            if ratio is None
            else f"{ratio:.3f} (v2 {figures.v2_p99_ms:.1f} ms / v1 {figures.v1_p99_ms:.1f} ms)",
            f"<= {limits.max_p99_ratio:g}",
        )
    )
    dead = _rate(figures.dead_letters, figures.records)
    checks.append(
        Check(
            "dead letters",
            (dead or 0.0) <= limits.max_dead_letter_rate,
            f"{_pct(dead)} ({figures.dead_letters} of {figures.records} records)",
            f"<= {_pct(limits.max_dead_letter_rate)}",
        )
    )
    checks.append(
        Check(
            "rollbacks",
            figures.rollbacks <= limits.max_rollbacks,
            f"{figures.rollbacks}",
            f"<= {limits.max_rollbacks}",
        )
    )
    checks.append(Check("flag log chain", figures.chain_ok, figures.chain_detail, "verified"))
    checks.append(Check("decision audit", figures.audit_ok, figures.audit_detail, "clean"))
    return checks


def collect(con: Any, options: ReportOptions, limits: Thresholds) -> Figures:
    """Measure every figure of the checklist over the report window (``scoped_*`` views)."""
    from reports.audit import audit

    _, rows = fetch(con, queries.GATE_COMPARISONS)
    comparisons, mismatches, missing = rows[0]
    _, pool_rows = fetch(con, queries.GATE_POOLS)
    pools = {pool: (n, errors, p99) for pool, n, errors, p99 in pool_rows}
    v1 = pools.get("v1", (0, 0, None))
    v2 = pools.get("v2", (0, 0, None))
    _, dead_rows = fetch(con, queries.GATE_DEAD_LETTERS)
    _, overview = fetch(con, queries.OVERVIEW)
    records = sum(int(n) for _, n, _, _ in overview)
    _, rollback_rows = fetch(
        con, queries.GATE_ROLLBACKS, flag=options.flag, since=options.since, until=options.until
    )
    # The decisions of the window (all of them without --since/--until); the chain in full.
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
    )


def go_no_go(con: Any, options: ReportOptions) -> Report:
    limits = load_thresholds(options.thresholds)
    if options.audit_sample != ReportOptions().audit_sample:
        limits = replace(limits, audit_sample=options.audit_sample)
    checks = judge(collect(con, options, limits), limits)
    section = Section(
        "checklist",
        "Switchover checklist",
        ("check", "status", "figure", "threshold"),
        tuple((c.name, "PASS" if c.passed else "FAIL", c.figure, c.threshold) for c in checks),
        note="thresholds: " + (str(options.thresholds) if options.thresholds else "defaults"),
    )
    passed = all(c.passed for c in checks)
    from reports.catalog import charts

    return Report(
        "go-no-go",
        "Go / no-go",
        (section,),
        charts=charts(con, options) if options.charts else (),
        passed=passed,
        meta={"flag": options.flag},
    )
