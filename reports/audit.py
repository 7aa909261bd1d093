"""Audit the ledger: every recorded decision recomputed in SQL, a sample in Python, the chain.

Three independent checks, any of which fails the audit:

1. **Bulk (SQL).** The flag state of every version is a row of ``flag_events`` (each
   ``FlagChanged`` carries the full state it creates), so every decision is joined to the
   state at its ``flag_version`` and re-decided in one query with the same precedence as
   ``ledger.rollout.decide`` and the same bucket (``ledger.rollout``'s DuckDB expression, bit
   for bit equal to the Python function). Overrides are unnested into (version, key, pool)
   rows and joined, so a long override list costs a hash join, not a JSON scan per decision.
2. **Sample (Python).** A random sample of decisions (picked by the same SQL pass, so it
   costs no second scan) is decided again by ``ledger.rollout.decide`` on the flag state
   folded (chain checked) from the log's wire form up to each one's version; a sound
   decision comes back as the identical event. The SQL verdict on the same decisions must be
   the same (the implementations check each other).
3. **Chain.** ``ledger.replay.chain_report`` over the flag log twice: as decoded from the
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

from ledger import rollout
from ledger.errors import ChainError, EventDecodeError
from ledger.events import (
    CommandRejected,
    DecisionReason,
    FlagChanged,
    RolloutDecided,
    decode_event,
    decode_event_object,
)
from ledger.flags import state_at
from ledger.replay import chain_report
from ledger.rollout import HASH_VERSIONS, DecisionContext, decide

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
    """What the three checks found; ``ok`` only when all of them are clean."""

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


_REJECTIONS_SQL = """
SELECT wire FROM flag_events WHERE type = 'CommandRejected'
ORDER BY flag, _topic, _partition, _offset
"""


def check_chains(con: Any) -> tuple[list[ChainFinding], list[str]]:
    """Verify every flag's chain read from the wire and from the columns; name mismatches.

    Rejections go along (read from the wire): one recorded at a version beyond the end of
    the log shows that the last changes were removed, which no chain shows on its own.
    """
    rows = con.execute(_CHANGES_SQL.format(where="")).fetchall()
    by_flag: dict[str, dict[str, list[Any]]] = {}
    mismatches: list[str] = []
    for row in rows:
        flag, version = row[3], row[4]
        reads = by_flag.setdefault(flag, {"wire": [], "columns": []})
        try:
            wire_event = _from_wire(row[-1])
        except EventDecodeError as exc:
            mismatches.append(f"{flag} v{version}: stored wire is not a FlagChanged ({exc})")
            wire_event = None
        try:
            column_event = _from_columns(row)
        except EventDecodeError as exc:
            mismatches.append(f"{flag} v{version}: stored columns are not valid ({exc})")
            column_event = None
        if wire_event is not None:
            reads["wire"].append(wire_event)
        if column_event is not None:
            reads["columns"].append(column_event)
        if wire_event is not None and column_event is not None and wire_event != column_event:
            changed = sorted(
                name
                for name in FlagChanged.model_fields
                if getattr(wire_event, name) != getattr(column_event, name)
            )
            mismatches.append(
                f"{flag} v{version}: columns differ from the wire form in {', '.join(changed)}"
            )
    for (wire,) in con.execute(_REJECTIONS_SQL).fetchall():
        try:
            rejection = decode_event(wire, CommandRejected)
        except EventDecodeError as exc:
            mismatches.append(f"a stored CommandRejected is not valid ({exc})")
            continue
        assert isinstance(rejection, CommandRejected)
        reads = by_flag.setdefault(rejection.flag, {"wire": [], "columns": []})
        reads["wire"].append(rejection)
        reads["columns"].append(rejection)
    findings: list[ChainFinding] = []
    for flag, reads in sorted(by_flag.items()):
        for read_from, events in reads.items():
            report = chain_report(events, flag=flag)
            findings.append(
                ChainFinding(
                    flag,
                    read_from,
                    report.versions,
                    report.ok,
                    report.describe(),
                    report.first_bad_version,
                )
            )
    return findings, mismatches


# --- bulk recomputation in SQL ----------------------------------------------------------------


def _bucket_sql(salt_sql: str, key_sql: str, version: int | str | None = None) -> str:
    """``ledger.rollout``'s DuckDB bucket expression over two SQL expressions (``version``:
    a hash version or SQL naming it per row; the current one by default)."""
    return rollout.bucket_sql(
        salt_sql, key_sql, rollout.HASH_VERSION if version is None else version
    )


def _prepare(con: Any) -> None:
    """States and overrides per (flag, version) as temp tables the recomputation joins."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE audit_states AS
        SELECT flag, version, any_value(v2_pool_enabled) AS enabled,
               any_value(v2_rollout_bp) AS rollout_bp, any_value(hash) AS event_hash
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


def recompute_sql(where: str = "", source: str = "decisions", sampled: str = "false") -> str:
    """One row per decision of ``source``: recorded and recomputed pool, reason, bucket...

    ``sampled`` is a SQL condition on the decision (``d``) marking the Python sample.
    """
    key = "coalesce(d.session_id, d.correlation_id)"
    # Each decision under its own hash version: old ones replay as they were made.
    bucket = _bucket_sql("d.flag", key, "d.hash_version")
    known_versions = ", ".join(str(v) for v in rollout.HASH_VERSIONS)
    return f"""
        WITH joined AS (
            SELECT d.event_id, d.flag, d.flag_version, d.session_id, d.correlation_id,
                   d.pool, d.reason, d.bucket, d.threshold_bp, d.hash_version,
                   d.schema_version, d.type, d.environment, d."at", d.flag_event_hash,
                   {sampled} AS sampled,
                   s.version IS NOT NULL OR d.flag_version = 0 AS known,
                   coalesce(s.enabled, false) AS enabled,
                   coalesce(s.rollout_bp, 0) AS rollout_bp,
                   eo.pool AS environment_pool,
                   so.pool AS session_pool,
                   {bucket} AS computed_bucket,
                   -- Newer decisions name the FlagChanged they used (its chain hash).
                   d.flag_event_hash IS NULL
                   OR d.flag_event_hash IS NOT DISTINCT FROM s.event_hash AS evidence_ok
            FROM {source} d
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
               OR hash_version NOT IN ({known_versions})
               OR pool IS DISTINCT FROM r_pool
               OR reason IS DISTINCT FROM r_reason
               OR bucket IS DISTINCT FROM r_bucket
               OR threshold_bp IS DISTINCT FROM r_threshold_bp
               OR NOT evidence_ok AS disagrees,
               sampled, schema_version, type, environment, "at", flag_event_hash
        FROM recomputed
    """


_RECORD = ("pool", "reason", "bucket", "threshold_bp")


def _disagreement(row: Sequence[Any], source: str = "sql") -> Disagreement:
    (event_id, flag, version, session_id, correlation_id, pool, reason, bucket, threshold,
     hash_version, r_pool, r_reason, r_bucket, r_threshold, known, *_) = row  # fmt: skip
    recorded = dict(zip(_RECORD, (pool, reason, bucket, threshold), strict=True))
    recomputed = dict(zip(_RECORD, (r_pool, r_reason, r_bucket, r_threshold), strict=True))
    fields = tuple(k for k in _RECORD if recorded[k] != recomputed[k])
    if not known:
        fields = ("flag_version (not in the flag log)", *fields)
    elif not fields and hash_version == _hash_version():
        # Nothing recomputed differs: the flag event the decision names is not that version's.
        fields = ("flag_event_hash (not the hash of that version's flag event)",)
    recorded["hash_version"] = hash_version
    return Disagreement(
        event_id, flag, int(version), session_id, correlation_id, fields, recorded, recomputed,
        source,
    )  # fmt: skip


def _hash_version() -> int:
    from ledger import rollout

    return rollout.HASH_VERSION


#: A decision's own columns in the decisions table, as they rebuild a ``RolloutDecided``:
#: the bulk query hands its Python sample over in them, and ``reports.explain`` reads one
#: decision by them.
DECISION_COLUMNS = (
    "event_id",
    "schema_version",
    "type",
    "flag",
    "session_id",
    "correlation_id",
    "environment",
    "pool",
    "reason",
    "bucket",
    "threshold_bp",
    "flag_version",
    "hash_version",
    "at",
    "flag_event_hash",
)


def bulk(
    con: Any,
    result: AuditResult,
    source: str = "decisions",
    *,
    sample: int = 0,
    seed: int | None = None,
) -> list[tuple[dict[str, Any], bool]]:
    """Recompute every decision of ``source`` in SQL; counts per flag version, a few examples.

    ``source`` is a table or view of decisions (a report window's ``scoped_decisions``).
    The same pass picks about ``sample`` decisions (a seeded hash of their ids: the same
    seed picks the same ones) and returns them with the SQL verdict, ``(columns,
    disagrees)``, for :func:`replay_sample`: sampling costs no second scan of the decisions.
    """
    started = time.perf_counter()
    _prepare(con)
    sampled = "false"
    if sample > 0:
        total = int(con.execute(f"SELECT count(*) FROM {source}").fetchall()[0][0])
        modulus = max(total // sample, 1)
        salt = random.SystemRandom().randrange(2**31) if seed is None else seed
        sampled = f"hash(d.event_id || ':{int(salt)}') % {modulus} = 0"
    body = recompute_sql(source=source, sampled=sampled)
    packed = ", ".join(f"'{c}': \"{c}\"" for c in DECISION_COLUMNS)
    rows = con.execute(
        f"""
        SELECT flag, flag_version, count(*) AS n, count(*) FILTER (WHERE disagrees) AS bad,
               list({{{packed}, 'disagrees': disagrees}}) FILTER (WHERE sampled) AS picked
        FROM ({body}) GROUP BY flag, flag_version ORDER BY flag, flag_version
        """
    ).fetchall()
    result.sql_seconds = time.perf_counter() - started
    picked: list[tuple[dict[str, Any], bool]] = []
    for flag, version, n, bad, chosen in rows:
        result.by_version[(flag, int(version))] = (int(n), int(bad))
        result.decisions += int(n)
        result.disagreeing += int(bad)
        for item in chosen or ():
            verdict = bool(item.pop("disagrees"))
            picked.append((item, verdict))
    if result.disagreeing:
        examples = con.execute(
            f"SELECT * FROM ({body}) WHERE disagrees ORDER BY flag, flag_version, event_id "
            f"LIMIT {EXAMPLES}"
        ).fetchall()
        result.examples = [_disagreement(row) for row in examples]
    return picked[:sample] if sample > 0 else []


# --- the Python sample ------------------------------------------------------------------------


def replay_sample(con: Any, result: AuditResult, picked: list[tuple[dict[str, Any], bool]]) -> None:
    """Re-decide the sampled decisions in Python; compare with the record and with SQL.

    Each is decided again by ``ledger.rollout.decide`` on the flag state folded (hash chain
    checked) from the log's wire form up to its ``flag_version``, with its own context and
    time: a sound decision comes back as the very same event, field for field. Where Python
    could recompute, its verdict must equal the SQL one for the same decision: the
    implementations check each other.
    """
    if not picked:
        return
    states = _States(flag_changes(con, read_from="wire"))
    result.sample_size = len(picked)
    for columns, sql_disagrees in picked:
        decision = decode_event_object(columns, RolloutDecided)
        assert isinstance(decision, RolloutDecided)
        again, problem = states.redecide(decision)
        matches = again == decision
        if not matches:
            result.sample_disagreeing += 1
            if len(result.sample_examples) < EXAMPLES:
                result.sample_examples.append(_python_disagreement(decision, again, problem))
        if problem is None and sql_disagrees == matches:
            result.implementations_disagree.append(decision.event_id)


class _States:
    """Flag states per (flag, version), folded once each (the chain checked on the way)."""

    def __init__(self, changes: dict[str, list[FlagChanged]]) -> None:
        self._changes = changes
        self._cache: dict[tuple[str, int], Any] = {}

    def state(self, flag: str, version: int) -> Any:

        key = (flag, version)
        if key not in self._cache:
            self._cache[key] = state_at(self._changes.get(flag, []), version=version, flag=flag)
        return self._cache[key]

    def redecide(self, decision: RolloutDecided) -> tuple[RolloutDecided | None, str | None]:
        """The decision made again, or None and why it cannot be."""
        if decision.hash_version not in HASH_VERSIONS:
            known = ", ".join(str(v) for v in HASH_VERSIONS)
            return None, f"hash version {decision.hash_version} unknown (this build: {known})"
        try:
            state = self.state(decision.flag, decision.flag_version)
        except (ChainError, ValueError) as exc:
            return None, str(exc)
        context = DecisionContext(
            decision.session_id,
            decision.correlation_id,
            decision.environment,
            # Not in the flag log: the record says the caller's breaker was open.
            breaker_open=decision.reason == DecisionReason.CIRCUIT_OPEN,
        )
        again = decide(
            state,
            context,
            at=decision.at,
            event_id=decision.event_id,
            hash_version=decision.hash_version,
        )
        if decision.flag_event_hash is None:
            # Recorded before decisions named their evidence: compared as it was made then.
            again = again.model_copy(update={"flag_event_hash": None})
        return again, None


def _python_disagreement(
    decision: RolloutDecided, again: RolloutDecided | None, problem: str | None
) -> Disagreement:
    recorded = {k: getattr(decision, k) for k in _RECORD}
    redone = {k: getattr(again, k) if again else None for k in _RECORD}
    fields = tuple(k for k in _RECORD if recorded[k] != redone[k])
    if problem is not None:
        fields = (problem,)
    elif again is not None and not fields:
        fields = tuple(
            name
            for name in RolloutDecided.model_fields
            if getattr(decision, name) != getattr(again, name)
        )
    return Disagreement(
        decision.event_id,
        decision.flag,
        decision.flag_version,
        decision.session_id,
        decision.correlation_id,
        fields,
        {k: None if v is None else str(v) for k, v in recorded.items()},
        {k: None if v is None else str(v) for k, v in redone.items()},
        "python",
    )


# --- all of it --------------------------------------------------------------------------------


def audit(
    con: Any, *, sample: int = 1000, seed: int | None = None, source: str = "decisions"
) -> AuditResult:
    """Run the three checks over the ledger behind ``con`` (decisions of ``source``)."""
    result = AuditResult()
    result.chains, result.column_wire_mismatches = check_chains(con)
    picked = bulk(con, result, source, sample=sample, seed=seed)
    replay_sample(con, result, picked)
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
