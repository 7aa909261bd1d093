"""``report compatibility``: the ledger's V1/V2 pairs through ``ledger.compatibility.analyse``.

SQL reads the pairs (both halves of one correlation id) and the recorded comparisons; the
analysis itself is the pure core's. Options in ``ReportOptions.extra``: ``rules`` (a
``RuleSet``; default the packaged rules), ``breaking_share`` (default 0.05) and
``pair_limit`` (a seeded reservoir sample of N pairs; default all; the CLI's ``--pairs``
defaults to 100 000: the analysis costs about 45 µs of CPU per pair in Python). The
mismatch rates always read every comparison.
"""

from __future__ import annotations

import json
from typing import Any

from ledger.comparison import load_rules
from ledger.compatibility import Answer, Compatibility, DifferenceSeen, analyse
from reports.model import Report, ReportOptions, Section
from reports.queries import fetch

__all__ = ["PAIRS", "compatibility", "pairs_sql", "sections"]

PAIRS = """
SELECT a.correlation_id, a.operation,
       CAST(a.result AS VARCHAR), CAST(a.error AS VARCHAR),
       CAST(b.result AS VARCHAR), CAST(b.error AS VARCHAR), a.started_at
FROM scoped_operations a
JOIN scoped_operations b ON b.correlation_id = a.correlation_id AND b.pool = 'v2'
WHERE a.pool = 'v1'
"""


def pairs_sql(limit: int | None) -> str:
    """Every pair, or a seeded reservoir sample of ``limit`` pairs, in V1 start order."""
    sample = "" if limit is None else f" USING SAMPLE reservoir({int(limit)} ROWS) REPEATABLE (0)"
    return f"SELECT * FROM (SELECT * FROM ({PAIRS}){sample}) ORDER BY started_at, correlation_id"


COMPARED = """
SELECT correlation_id, operation, category, CAST(differences AS VARCHAR)
FROM scoped_comparisons
ORDER BY "at", correlation_id
"""


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _answers(rows: list[tuple[Any, ...]]) -> list[tuple[Answer, Answer]]:
    out = []
    for cid, op, r1, e1, r2, e2, _ in rows:
        out.append(
            (
                Answer(cid, op, "v1", _load(r1), _load(e1)),
                Answer(cid, op, "v2", _load(r2), _load(e2)),
            )
        )
    return out


def _seen(rows: list[tuple[Any, ...]]) -> list[DifferenceSeen]:
    out = []
    for cid, op, category, differences in rows:
        items = _load(differences) or []
        out.append(DifferenceSeen(cid, op, category, tuple((d["path"], d["kind"]) for d in items)))
    return out


def sections(result: Compatibility) -> tuple[Section, ...]:
    """The analysis as report sections (the draft rules one line per row)."""
    return (
        Section(
            "operations",
            "Answers analysed per operation",
            ("operation", "v1_answers", "v2_answers"),
            tuple((op, n1, n2) for op, (n1, n2) in result.operations.items()),
            note="answers without an error, after the current rules' unwrap and rename",
        ),
        Section(
            "paths",
            "API differences: paths only in V1, only in V2, type changes",
            (
                "operation",
                "path",
                "status",
                "v1_share",
                "v2_share",
                "v1_types",
                "v2_types",
                "example_correlation_id",
            ),
            tuple(
                (
                    p.operation,
                    p.path,
                    p.status,
                    p.v1_share,
                    p.v2_share,
                    "/".join(p.v1_types),
                    "/".join(p.v2_types),
                    p.example_correlation_id,
                )
                for p in result.paths
            ),
            note="share: of that pool's answers holding the path; list indices fold to []",
        ),
        Section(
            "mismatches",
            "Mismatch rate per path (recorded comparisons)",
            (
                "operation",
                "path",
                "kinds",
                "mismatches",
                "comparisons",
                "rate",
                "example_correlation_id",
            ),
            tuple(
                (
                    m.operation,
                    m.path,
                    ",".join(m.kinds),
                    m.mismatches,
                    m.comparisons,
                    m.rate,
                    m.example_correlation_id,
                )
                for m in result.mismatches
            ),
            note="comparisons with both halves; a comparison keeps its first differences only",
        ),
        Section(
            "errors",
            "Error types per pool and whether the rules map them",
            ("operation", "pool", "native_type", "count", "canonical", "mapped"),
            tuple(
                (e.operation, e.pool, e.native_type, e.count, e.canonical, e.mapped)
                for e in result.errors
            ),
        ),
        Section(
            "breaking",
            "Breaking changes",
            ("operation", "path", "change", "share", "detail", "translation"),
            tuple(
                (b.operation, b.path, b.change, b.share, b.detail, b.translation)
                for b in result.breaking
            ),
            note="a path removed or retyped in at least the configured share of answers",
        ),
        Section(
            "draft_rules",
            "Draft rules (TOML) for the translation-looking differences",
            ("line",),
            tuple((line,) for line in result.draft.splitlines()),
        ),
    )


def compatibility(con: Any, options: ReportOptions) -> Report:
    rules = options.extra.get("rules") or load_rules()
    share = float(options.extra.get("breaking_share", 0.05))
    limit = options.extra.get("pair_limit")
    _, pair_rows = fetch(con, pairs_sql(limit))
    _, compared = fetch(con, COMPARED)
    result = analyse(_answers(pair_rows), _seen(compared), rules, breaking_share=share)
    return Report(
        "compatibility",
        "Compatibility of V1 and V2",
        sections(result),
        meta={
            "rules": rules.version,
            "breaking_share": share,
            "pairs": len(pair_rows),
            "pairs_sampled": limit is not None and len(pair_rows) >= limit,
            "breaking_changes": len(result.breaking),
        },
    )
