"""Audit the ledger: every recorded decision recomputed in SQL, a sample in Python, the chain.

Three independent checks, any of which fails the audit:

1. **Bulk (SQL).** The flag state of every version is a row of ``flag_events`` (each
   ``FlagChanged`` carries the full state it creates), so every decision is joined to the
   state at its ``flag_version`` and re-decided in one query with the same precedence as
   ``ledger.rollout.decide`` and the same bucket (``ledger.rollout``'s DuckDB expression, bit
   for bit equal to the Python function). Overrides are unnested into (version, key, pool)
   rows and joined, so a long override list costs a hash join, not a JSON scan per decision.
2. **Sample (Python).** A random sample of decisions goes through ``ledger.replay.replay``
   over the flag log read back from its wire form; the SQL verdict on the same decisions
   must be the same (the two implementations check each other).
3. **Chain.** ``ledger.replay.verify_chain`` over the flag log twice: as decoded from the
   stored wire JSON and as rebuilt from the typed columns, so a change made to either copy
   (a Parquet cell, or an exported line re-ingested) breaks the chain at its version. Rows
   whose columns and wire disagree are named too.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.errors import EventDecodeError, LedgerError
from ledger.events import FlagChanged, RolloutDecided, decode_event, decode_event_object

__all__ = [
    "AuditResult",
    "ChainFinding",
    "Disagreement",
    "audit",
    "flag_changes",
    "recompute_sql",
    "render_audit",
    "replay_sample",
]

#: Decisions listed as examples of disagreement (the counts are always complete).
EXAMPLES = 20


@dataclass(frozen=True)
class Disagreement:
    """One decision whose recomputation differs from the record (``fields`` says where)."""

    event_id: str
    flag: str
    flag_version: int
    session_id: str | None
    correlation_id: str
    fields: tuple[str, ...]
    recorded: dict[str, Any]
    recomputed: dict[str, Any]
    source: str = "sql"


@dataclass(frozen=True)
class ChainFinding:
    """The chain verdict of one flag's log, read one way (``wire`` or ``columns``)."""

    flag: str
    read_from: str
    versions: int
    ok: bool
    detail: str
    bad_version: int | None = None


@dataclass
class AuditResult:
    decisions: int = 0
    disagreeing: int = 0
    #: (flag, flag_version) -> (decisions, disagreeing) for every version decisions used.
    by_version: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    examples: list[Disagreement] = field(default_factory=list)
    sql_seconds: float = 0.0
    sample_size: int = 0
    sample_disagreeing: int = 0
    sample_examples: list[Disagreement] = field(default_factory=list)
    #: Sampled decisions on which SQL and Python reached different verdicts.
    implementations_disagree: list[str] = field(default_factory=list)
    chains: list[ChainFinding] = field(default_factory=list)
    #: Flag events whose typed columns and wire JSON are not the same event.
    column_wire_mismatches: list[str] = field(default_factory=list)

    @property
    def chain_ok(self) -> bool:
        return all(c.ok for c in self.chains) and not self.column_wire_mismatches

    @property
    def decisions_ok(self) -> bool:
        return (
            self.disagreeing == 0
            and self.sample_disagreeing == 0
            and not self.implementations_disagree
        )

    @property
    def ok(self) -> bool:
        return self.chain_ok and self.decisions_ok

    @property
    def rate(self) -> float:
        """Decisions recomputed per second by the bulk SQL audit."""
        return self.decisions / self.sql_seconds if self.sql_seconds > 0 else 0.0

    def bad_versions(self) -> list[tuple[str, int]]:
        """Flag versions with a broken chain or a disagreeing decision, in order."""
        found = {(c.flag, c.bad_version) for c in self.chains if c.bad_version is not None}
        found |= {key for key, (_, bad) in self.by_version.items() if bad}
        found |= {(d.flag, d.flag_version) for d in self.sample_examples}
        return sorted((flag, version) for flag, version in found if version is not None)

    def chain_summary(self) -> str:
        if not self.chains:
            return "no flag changes recorded"
        broken = [c for c in self.chains if not c.ok]
        if broken:
            return "; ".join(f"{c.flag} ({c.read_from}): {c.detail}" for c in broken)
        if self.column_wire_mismatches:
            return "columns differ from wire: " + "; ".join(self.column_wire_mismatches[:3])
        versions = {c.flag: c.versions for c in self.chains}
        return ", ".join(f"{flag}: {n} versions verified" for flag, n in versions.items())

    def decisions_summary(self) -> str:
        text = f"{self.disagreeing} of {self.decisions} decisions disagree (SQL)"
        text += f", {self.sample_disagreeing} of {self.sample_size} (Python sample)"
        if self.implementations_disagree:
            text += f", SQL and Python differ on {len(self.implementations_disagree)}"
        bad = sorted({(f, v) for (f, v), (_, n) in self.by_version.items() if n})
        if bad:
            text += "; at version(s) " + ", ".join(f"{f} v{v}" for f, v in bad[:10])
        return text


# --- the flag log, two ways -------------------------------------------------------------------

_CHANGE_COLUMNS = (
    "event_id",
    "schema_version",
    "type",
    "flag",
    "version",
    "command",
    "command_id",
    "v2_pool_enabled",
    "v2_rollout_bp",
    "shadow_mode_enabled",
    "shadow_sample_bp",
    "session_overrides",
    "environment_overrides",
    "frozen",
    "actor",
    "reason",
    "cause_id",
    "at",
    "prev_hash",
    "hash",
)
_JSON_COLUMNS = {"session_overrides", "environment_overrides"}

# Log order: the order the flag log writer appended them (one partition per flag).
_CHANGES_SQL = (
    "SELECT "
    + ", ".join(f'"{c}"' for c in _CHANGE_COLUMNS)
    + ", wire FROM flag_events WHERE type = 'FlagChanged' {where} "
    "ORDER BY flag, _topic, _partition, _offset"
)


def _from_columns(row: Sequence[Any]) -> FlagChanged:
    data = {}
    for name, value in zip(_CHANGE_COLUMNS, row, strict=False):
        if name in _JSON_COLUMNS and isinstance(value, str):
            value = json.loads(value)
        data[name] = value
    event = decode_event_object(data, FlagChanged)
    assert isinstance(event, FlagChanged)
    return event


def _from_wire(wire: str) -> FlagChanged:
    event = decode_event(wire, FlagChanged)
    assert isinstance(event, FlagChanged)
    return event


def flag_changes(
    con: Any, flag: str | None = None, *, read_from: str = "wire"
) -> dict[str, list[FlagChanged]]:
    """Each flag's ``FlagChanged`` events in log order, decoded from ``wire`` or ``columns``."""
    where, params = ("AND flag = $flag", {"flag": flag}) if flag is not None else ("", {})
    rows = con.execute(_CHANGES_SQL.format(where=where), params).fetchall()
    out: dict[str, list[FlagChanged]] = {}
    for row in rows:
        event = _from_wire(row[-1]) if read_from == "wire" else _from_columns(row)
        out.setdefault(event.flag, []).append(event)
    return out


def _bad_version(message: str) -> int | None:
    """The version a ``ChainError`` names ("version 4: ...")."""
    import re

    match = re.search(r"version (\d+)", message)
    return int(match.group(1)) if match else None


def check_chains(con: Any) -> tuple[list[ChainFinding], list[str]]:
    """Verify every flag's chain read from the wire and from the columns; name mismatches."""
    from ledger.replay import verify_chain

    findings: list[ChainFinding] = []
    rows = con.execute(_CHANGES_SQL.format(where="")).fetchall()
    by_flag: dict[str, dict[str, list[FlagChanged]]] = {}
    mismatches: list[str] = []
    for row in rows:
        flag, version = row[3], row[4]
        try:
            wire_event = _from_wire(row[-1])
        except EventDecodeError as exc:
            mismatches.append(f"{flag} v{version}: stored wire is not a FlagChanged ({exc})")
            continue
        try:
            column_event = _from_columns(row)
        except EventDecodeError as exc:
            mismatches.append(f"{flag} v{version}: stored columns are not valid ({exc})")
            continue
        if wire_event != column_event:
            changed = sorted(
                name
                for name in FlagChanged.model_fields
                if getattr(wire_event, name) != getattr(column_event, name)
            )
            mismatches.append(
                f"{flag} v{version}: columns differ from the wire form in {', '.join(changed)}"
            )
        by_flag.setdefault(flag, {"wire": [], "columns": []})
        by_flag[flag]["wire"].append(wire_event)
        by_flag[flag]["columns"].append(column_event)
    for flag, reads in sorted(by_flag.items()):
        for read_from, events in reads.items():
            try:
                verify_chain(events)
            except LedgerError as exc:
                findings.append(
                    ChainFinding(
                        flag, read_from, len(events), False, str(exc), _bad_version(str(exc))
                    )
                )
            else:
                findings.append(
                    ChainFinding(flag, read_from, len(events), True, f"{len(events)} verified")
                )
    return findings, mismatches


# --- bulk recomputation in SQL ----------------------------------------------------------------


def _bucket_sql(salt_sql: str, key_sql: str) -> str:
    """``ledger.rollout``'s DuckDB bucket expression over two SQL expressions."""
    from ledger import rollout

    return rollout.bucket_sql(salt_sql, key_sql)


def _prepare(con: Any) -> None:
    """States and overrides per (flag, version) as temp tables the recomputation joins."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE audit_states AS
        SELECT flag, version, any_value(v2_pool_enabled) AS enabled,
               any_value(v2_rollout_bp) AS rollout_bp
        FROM flag_events WHERE type = 'FlagChanged'
        GROUP BY flag, version
        """
    )
    for kind in ("session", "environment"):
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE audit_{kind}_overrides AS
            WITH maps AS (
                SELECT flag, version,
                       any_value(CAST({kind}_overrides AS MAP(VARCHAR, VARCHAR))) AS m
                FROM flag_events WHERE type = 'FlagChanged'
                GROUP BY flag, version
            )
            SELECT flag, version, unnest(map_keys(m)) AS key, unnest(map_values(m)) AS pool
            FROM maps
            """
        )


def recompute_sql(where: str = "") -> str:
    """One row per decision: recorded and recomputed pool, reason, bucket, threshold."""
    from ledger import rollout

    key = "coalesce(d.session_id, d.correlation_id)"
    bucket = _bucket_sql("d.flag", key)
    hash_version = rollout.HASH_VERSION
    return f"""
        WITH joined AS (
            SELECT d.event_id, d.flag, d.flag_version, d.session_id, d.correlation_id,
                   d.pool, d.reason, d.bucket, d.threshold_bp, d.hash_version,
                   s.version IS NOT NULL OR d.flag_version = 0 AS known,
                   coalesce(s.enabled, false) AS enabled,
                   coalesce(s.rollout_bp, 0) AS rollout_bp,
                   eo.pool AS environment_pool,
                   so.pool AS session_pool,
                   {bucket} AS computed_bucket
            FROM decisions d
            LEFT JOIN audit_states s
                   ON s.flag = d.flag AND s.version = d.flag_version
            LEFT JOIN audit_environment_overrides eo
                   ON eo.flag = d.flag AND eo.version = d.flag_version AND eo.key = d.environment
            LEFT JOIN audit_session_overrides so
                   ON so.flag = d.flag AND so.version = d.flag_version AND so.key = d.session_id
            {where}
        ), decided AS (
            SELECT *,
                   CASE WHEN environment_pool IS NOT NULL THEN 'ENVIRONMENT_OVERRIDE'
                        WHEN session_pool IS NOT NULL THEN 'SESSION_OVERRIDE'
                        WHEN NOT enabled THEN 'DISABLED'
                        ELSE 'SPLIT' END AS rule,
                   CASE WHEN environment_pool IS NOT NULL THEN environment_pool
                        WHEN session_pool IS NOT NULL THEN session_pool
                        WHEN NOT enabled THEN 'v1'
                        WHEN computed_bucket < rollout_bp THEN 'v2'
                        ELSE 'v1' END AS wanted
            FROM joined
        ), recomputed AS (
            SELECT *,
                   -- The breaker keeps V2 from being used; the record says it was open.
                   CASE WHEN reason = 'CIRCUIT_OPEN' AND wanted = 'v2' THEN 'v1'
                        ELSE wanted END AS r_pool,
                   CASE WHEN reason = 'CIRCUIT_OPEN' AND wanted = 'v2' THEN 'CIRCUIT_OPEN'
                        ELSE rule END AS r_reason,
                   -- Recorded whatever rule fired (ledger.rollout.decide).
                   computed_bucket AS r_bucket,
                   rollout_bp AS r_threshold_bp
            FROM decided
        )
        SELECT event_id, flag, flag_version, session_id, correlation_id,
               pool, reason, bucket, threshold_bp, hash_version,
               r_pool, r_reason, r_bucket, r_threshold_bp, known,
               NOT known
               OR hash_version IS DISTINCT FROM {hash_version}
               OR pool IS DISTINCT FROM r_pool
               OR reason IS DISTINCT FROM r_reason
               OR bucket IS DISTINCT FROM r_bucket
               OR threshold_bp IS DISTINCT FROM r_threshold_bp AS disagrees
        FROM recomputed
    """


_RECORD = ("pool", "reason", "bucket", "threshold_bp")


def _disagreement(row: Sequence[Any], source: str = "sql") -> Disagreement:
    (event_id, flag, version, session_id, correlation_id, pool, reason, bucket, threshold,
     hash_version, r_pool, r_reason, r_bucket, r_threshold, known, _) = row  # fmt: skip
    recorded = dict(zip(_RECORD, (pool, reason, bucket, threshold), strict=True))
    recomputed = dict(zip(_RECORD, (r_pool, r_reason, r_bucket, r_threshold), strict=True))
    fields = tuple(k for k in _RECORD if recorded[k] != recomputed[k])
    if not known:
        fields = ("flag_version (not in the flag log)", *fields)
    recorded["hash_version"] = hash_version
    return Disagreement(
        event_id, flag, int(version), session_id, correlation_id, fields, recorded, recomputed,
        source,
    )  # fmt: skip


def bulk(con: Any, result: AuditResult) -> None:
    """Recompute every decision in SQL; counts per flag version, a few examples."""
    started = time.perf_counter()
    _prepare(con)
    body = recompute_sql()
    rows = con.execute(
        f"""
        SELECT flag, flag_version, count(*) AS n, count(*) FILTER (WHERE disagrees) AS bad
        FROM ({body}) GROUP BY flag, flag_version ORDER BY flag, flag_version
        """
    ).fetchall()
    result.sql_seconds = time.perf_counter() - started
    for flag, version, n, bad in rows:
        result.by_version[(flag, int(version))] = (int(n), int(bad))
        result.decisions += int(n)
        result.disagreeing += int(bad)
    if result.disagreeing:
        examples = con.execute(
            f"SELECT * FROM ({body}) WHERE disagrees ORDER BY flag, flag_version, event_id "
            f"LIMIT {EXAMPLES}"
        ).fetchall()
        result.examples = [_disagreement(row) for row in examples]


# --- the Python sample ------------------------------------------------------------------------


def replay_sample(con: Any, result: AuditResult, size: int, seed: int | None) -> None:
    """Replay ``size`` random decisions in Python; compare with the record and with SQL."""
    from ledger.replay import replay

    if size <= 0 or result.decisions == 0:
        return
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    rows = con.execute(
        f"SELECT event_id, wire FROM decisions USING SAMPLE reservoir({int(size)} ROWS) "
        f"REPEATABLE ({int(seed)})"
    ).fetchall()
    chains = flag_changes(con, read_from="wire")
    ids = [event_id for event_id, _ in rows]
    sql_rows = {
        row[0]: row
        for row in con.execute(
            f"SELECT * FROM ({recompute_sql('WHERE d.event_id IN (SELECT unnest($ids))')})",
            {"ids": ids},
        ).fetchall()
    }
    result.sample_size = len(rows)
    for event_id, wire in rows:
        decision = decode_event(wire, RolloutDecided)
        assert isinstance(decision, RolloutDecided)
        outcome = replay(chains.get(decision.flag, []), decision)
        matches = bool(outcome.matches)
        if not matches:
            result.sample_disagreeing += 1
            if len(result.sample_examples) < EXAMPLES:
                result.sample_examples.append(_python_disagreement(decision, outcome))
        sql_row = sql_rows.get(event_id)
        if sql_row is not None and bool(sql_row[-1]) == matches:
            # SQL says "disagrees" exactly when Python says "does not match": consistent.
            continue
        if sql_row is not None:
            result.implementations_disagree.append(event_id)


def _python_disagreement(decision: RolloutDecided, outcome: Any) -> Disagreement:
    recomputed = getattr(outcome, "recomputed", None)
    recorded = {k: getattr(decision, k) for k in _RECORD}
    again = {k: getattr(recomputed, k, None) for k in _RECORD} if recomputed else {}
    fields = tuple(k for k in _RECORD if recorded.get(k) != again.get(k)) or ("explanation",)
    return Disagreement(
        decision.event_id,
        decision.flag,
        decision.flag_version,
        decision.session_id,
        decision.correlation_id,
        fields,
        {k: str(v) if v is not None else None for k, v in recorded.items()},
        {k: str(v) if v is not None else None for k, v in again.items()},
        "python",
    )


# --- all of it --------------------------------------------------------------------------------


def audit(con: Any, *, sample: int = 1000, seed: int | None = None) -> AuditResult:
    """Run the three checks over the ledger behind ``con``."""
    result = AuditResult()
    result.chains, result.column_wire_mismatches = check_chains(con)
    bulk(con, result)
    replay_sample(con, result, sample, seed)
    return result


def render_audit(result: AuditResult, fmt: str = "table", *, source: str = "") -> str:
    if fmt == "json":
        return json.dumps(_as_json(result), indent=2, ensure_ascii=False, default=str)
    lines = [f"Audit of {source or 'the ledger'}"]
    lines.append(
        f"  decisions (SQL):    {result.decisions} recomputed in {result.sql_seconds:.3f} s "
        f"({result.rate:,.0f}/s), {result.disagreeing} disagree"
    )
    lines.append(
        f"  decisions (Python): {result.sample_size} sampled, "
        f"{result.sample_disagreeing} disagree"
        + (
            f", SQL and Python verdicts differ on {len(result.implementations_disagree)}"
            if result.implementations_disagree
            else ", same verdicts as SQL"
        )
    )
    for finding in result.chains:
        status = "ok" if finding.ok else "BROKEN"
        lines.append(f"  chain {finding.flag} ({finding.read_from}): {status}: {finding.detail}")
    for mismatch in result.column_wire_mismatches:
        lines.append(f"  stored copy differs: {mismatch}")
    bad = {key: counts for key, counts in result.by_version.items() if counts[1]}
    for (flag, version), (n, wrong) in sorted(bad.items()):
        lines.append(f"  {flag} version {version}: {wrong} of {n} decisions disagree")
    for example in [*result.examples, *result.sample_examples][:EXAMPLES]:
        lines.append(
            f"    {example.source} {example.event_id} (session {example.session_id}, "
            f"v{example.flag_version}): {', '.join(example.fields)}: recorded "
            f"{_short(example.recorded)}, recomputed {_short(example.recomputed)}"
        )
    if result.ok:
        lines.append("AUDIT CLEAN")
    else:
        versions = ", ".join(f"{flag} version {v}" for flag, v in result.bad_versions())
        lines.append("AUDIT FAILED" + (f" at {versions}" if versions else ""))
    return "\n".join(lines)


def _short(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items() if v is not None)


def _as_json(result: AuditResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "decisions": result.decisions,
        "disagreeing": result.disagreeing,
        "sql_seconds": round(result.sql_seconds, 4),
        "decisions_per_second": round(result.rate),
        "sample_size": result.sample_size,
        "sample_disagreeing": result.sample_disagreeing,
        "implementations_disagree": result.implementations_disagree,
        "chain_ok": result.chain_ok,
        "chains": [c.__dict__ for c in result.chains],
        "column_wire_mismatches": result.column_wire_mismatches,
        "bad_versions": [{"flag": f, "version": v} for f, v in result.bad_versions()],
        "by_version": [
            {"flag": f, "version": v, "decisions": n, "disagreeing": bad}
            for (f, v), (n, bad) in sorted(result.by_version.items())
        ],
        "examples": [d.__dict__ for d in [*result.examples, *result.sample_examples]],
    }
