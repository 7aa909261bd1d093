"""Re-run the comparison of every stored V1/V2 pair under other rules; count category moves.

Nothing is written: the answer is a from -> to matrix (recorded category -> category under
the new rules) with a few changed pairs as examples, so a rules change can be judged on the
whole history before it ships. The halves are decoded from their stored wire form, so the
comparison sees exactly what the stream processor saw.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ledger.comparison import RuleSet, compare_operations
from ledger.events import OperationRecorded, decode_event

__all__ = ["Change", "Reclassification", "reclassify", "render_reclassification"]

#: Recorded category of a pair that has no comparison in the ledger (yet).
UNCOMPARED = "(none)"
#: New "category" of a pair that cannot be re-run: one half is missing from the ledger.
HALF_MISSING = "(half missing)"

_PAIRS = """
SELECT c.correlation_id, coalesce(c.category, '(none)') AS category, c.rules_version,
       v1.wire AS v1_wire, v2.wire AS v2_wire
FROM (SELECT correlation_id, any_value(wire) AS wire FROM operations WHERE pool = 'v1'
      GROUP BY correlation_id) v1
FULL OUTER JOIN (SELECT correlation_id, any_value(wire) AS wire FROM operations
                 WHERE pool = 'v2' GROUP BY correlation_id) v2 USING (correlation_id)
FULL OUTER JOIN comparisons c USING (correlation_id)
ORDER BY correlation_id
"""

_BATCH = 10_000


@dataclass(frozen=True)
class Change:
    correlation_id: str
    before: str
    after: str
    detail: str


@dataclass
class Reclassification:
    rules_version: str
    recorded_rules: dict[str, int] = field(default_factory=dict)
    matrix: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: list[Change] = field(default_factory=list)

    @property
    def pairs(self) -> int:
        return sum(self.matrix.values())

    @property
    def changed(self) -> int:
        return sum(n for (before, after), n in self.matrix.items() if before != after)

    def categories(self) -> tuple[list[str], list[str]]:
        befores = sorted({b for b, _ in self.matrix})
        afters = sorted({a for _, a in self.matrix})
        return befores, afters


def _detail(comparison: Any) -> str:
    if comparison.differences:
        first = comparison.differences[0]
        v1 = json.dumps(first.v1, ensure_ascii=False)
        v2 = json.dumps(first.v2, ensure_ascii=False)
        more = comparison.difference_count - 1
        return f"{first.path} ({first.kind}): {v1} -> {v2}" + (f" (+{more} more)" if more else "")
    if comparison.v1_error_type or comparison.v2_error_type:
        return f"v1 {comparison.v1_error_type or 'ok'}, v2 {comparison.v2_error_type or 'ok'}"
    return str(comparison.category)


def reclassify(
    con: Any, rules: RuleSet, *, limit: int | None = None, examples: int = 10
) -> Reclassification:
    """Compare every stored pair (or the first ``limit`` by correlation id) under ``rules``."""
    result = Reclassification(rules.version)
    sql = _PAIRS + (f" LIMIT {int(limit)}" if limit is not None else "")
    cursor = con.execute(sql)
    at = datetime.now(UTC)  # stamped on throw-away comparisons only; never stored
    recorded: Counter[str] = Counter()
    while True:
        rows = cursor.fetchmany(_BATCH)
        if not rows:
            break
        for correlation_id, before, rules_version, v1_wire, v2_wire in rows:
            if rules_version is not None:
                recorded[rules_version] += 1
            if v1_wire is None or v2_wire is None:
                # A missing half stays what it was: there is nothing to compare again.
                after = before if before != UNCOMPARED else HALF_MISSING
                result.matrix[(before, after)] += 1
                continue
            v1 = decode_event(v1_wire, OperationRecorded)
            v2 = decode_event(v2_wire, OperationRecorded)
            assert isinstance(v1, OperationRecorded)
            assert isinstance(v2, OperationRecorded)
            comparison = compare_operations(v1, v2, rules, at=at)
            after = comparison.category
            result.matrix[(before, after)] += 1
            if before != after and len(result.examples) < examples:
                result.examples.append(Change(correlation_id, before, after, _detail(comparison)))
    result.recorded_rules = dict(recorded)
    return result


def _as_json(result: Reclassification) -> str:
    matrix: dict[str, dict[str, int]] = {}
    for (before, after), n in sorted(result.matrix.items()):
        matrix.setdefault(before, {})[after] = n
    return json.dumps(
        {
            "rules_version": result.rules_version,
            "recorded_rules_versions": result.recorded_rules,
            "pairs": result.pairs,
            "changed": result.changed,
            "matrix": matrix,
            "examples": [change.__dict__ for change in result.examples],
        },
        indent=2,
        ensure_ascii=False,
    )


def render_reclassification(result: Reclassification, fmt: str = "table") -> str:
    """The matrix (rows: recorded category, columns: category under the new rules)."""
    if fmt == "json":
        return _as_json(result)
    from rich.console import Console
    from rich.table import Table

    console = Console(file=io.StringIO(), record=True, width=160, force_terminal=False)
    recorded = ", ".join(f"{v} ({n})" for v, n in sorted(result.recorded_rules.items()))
    console.print(
        f"Reclassified {result.pairs} pairs under rules {result.rules_version} "
        f"(recorded under {recorded or 'no rules'}): {result.changed} would change category."
    )
    befores, afters = result.categories()
    table = Table(title="recorded -> new (rows: recorded category)", title_justify="left")
    table.add_column("recorded \\ new")
    for after in afters:
        table.add_column(after, justify="right")
    table.add_column("changed", justify="right")
    for before in befores:
        row = [result.matrix.get((before, after), 0) for after in afters]
        moved = sum(n for after, n in zip(afters, row, strict=True) if after != before)
        cells = [
            (f"[bold]{n}[/bold]" if after != before and n else str(n) if n else ".")
            for after, n in zip(afters, row, strict=True)
        ]
        table.add_row(before, *cells, str(moved))
    console.print(table)
    if result.examples:
        listing = Table(title="Examples of pairs that would change", title_justify="left")
        for column in ("correlation_id", "recorded", "new", "first difference"):
            listing.add_column(column, overflow="fold")
        for change in result.examples:
            listing.add_row(change.correlation_id, change.before, change.after, change.detail)
        console.print(listing)
    return console.export_text().rstrip("\n")
