"""Build a big ledger through the real writer and time what building and querying it costs.

Usage: ``python bench/ledger.py [--events N] [--ledger DIR] [--batch B] [--keep] [--reuse]``

Generates N events (default 10,000,000) as a sink would receive them: per correlation id a
``RolloutDecided``, the V1 and V2 ``OperationRecorded`` and their ``ComparisonRecorded``
(~400 bytes of wire JSON each), plus health windows, flag changes and a few bad records,
spread over a week and over the ledger topics' partitions. They go through
``LedgerWriter.write_batch`` in batches of B records (the sink's path: validation, dedupe,
Arrow, Parquet, atomic rename), then one full compaction. Printed: ingest rows per second
(writer time only; generating the bytes is timed apart), compaction seconds, the ledger's
size and file count, and the seconds of representative queries through ``open_reader``.

Extension point: functions appended to ``MEASUREMENTS`` run after the queries with the ledger
path and return their own figures. ``--reports`` appends ``bench/reports.py``'s (each report,
one replay, the bulk audit) measured on this ledger; ``--reuse --ledger DIR`` measures a
ledger kept by an earlier ``--keep`` run without building it again.

``--merkle`` appends the costs of the tamper-evident ledger (issue 13): appending leaves to a
compact tree (µs a leaf, frontier hashes kept), hashing a record's leaf, one Ed25519 checkpoint
signature; ``checkpoint`` and ``audit --checkpoint`` against ``audit`` on this ledger (their
ratio); one decision's proof (bytes of hashes against 32 x ceil(log2 n)). ``--json`` ends with one
JSON line of every figure.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would hide the
# ``ledger`` package it measures.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from ledger.settings import Settings
from ledger.store import TABLES, LedgerWriter, SourceRecord, open_reader

T0 = datetime(2025, 3, 1, 0, 0, tzinfo=UTC)
WEEK_MS = 7 * 24 * 3600 * 1000
SESSIONS = 100_000
OPERATIONS = ("execute_program", "quote", "lookup", "render")
CATEGORIES = (
    ("match", 0.90),
    ("value_mismatch", 0.95),
    ("shadow_error", 0.97),
    ("primary_error", 0.98),
    ("shadow_missing", 1.01),
)


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str


#: Further measurements on the built ledger: ``f(ledger_path) -> figures`` (reports, replay,
#: audit...). Each runs after the query timings below; keep each bounded.
MEASUREMENTS: list[Callable[[Path], list[Figure]]] = []


def _iso(ms: int) -> str:
    return (T0 + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")


class Generator:
    """Wire bytes of a realistic event mix, deterministic for one seed."""

    def __init__(self, settings: Settings, partitions: int, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.partitions = partitions
        self.topics = {name: settings.topic(name) for name in TABLES if name in _TOPIC_NAMES}
        self.offsets: dict[tuple[str, int], int] = {}
        self.flag_version = 0

    def _record(self, logical: str, key: str, value: bytes) -> SourceRecord:
        topic = self.topics[logical]
        partition = 0 if logical == "flag_events" else hash(key) % self.partitions
        offset = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = offset + 1
        return SourceRecord(topic, partition, offset, key.encode(), value)

    def correlation(self, i: int, total: int) -> list[SourceRecord]:
        rng = self.rng
        ms = i * WEEK_MS // max(total, 1)
        cid = f"corr-{i:09d}"
        session = f"s{rng.randrange(SESSIONS)}"
        op = OPERATIONS[i % len(OPERATIONS)]
        bucket = rng.randrange(10_000)
        pool = "v2" if bucket < 2_500 else "v1"
        at = _iso(ms)
        decision = (
            f'{{"event_id":"dec-{i}","schema_version":1,"type":"RolloutDecided",'
            f'"flag":"v2_migration","session_id":"{session}","correlation_id":"{cid}",'
            f'"environment":"prod","pool":"{pool}","reason":"SPLIT","bucket":{bucket},'
            f'"threshold_bp":2500,"flag_version":{max(self.flag_version, 1)},'
            f'"hash_version":1,"at":"{at}"}}'
        )
        draw = rng.random()
        category = next(name for name, upto in CATEGORIES if draw < upto)
        records = [self._record("decisions", session, decision.encode())]
        durations = {}
        for pool_name, role in (("v1", "primary"), ("v2", "shadow")):
            if category == "shadow_missing" and pool_name == "v2":
                continue
            failed = (category == "shadow_error" and pool_name == "v2") or (
                category == "primary_error" and pool_name == "v1"
            )
            duration = round(rng.lognormvariate(3.0 if pool_name == "v1" else 2.9, 0.5), 3)
            durations[pool_name] = duration
            price = round(rng.uniform(1, 500), 2)
            if category == "value_mismatch" and pool_name == "v2":
                price += 0.5
            if failed:
                outcome = (
                    '"outcome":"error","result":null,'
                    '"error":{"type":"Timeout","message":"deadline exceeded"}'
                )
            else:
                outcome = (
                    f'"outcome":"ok","result":{{"price":{price},"currency":"EUR",'
                    f'"items":[{{"sku":"k{i % 977}","qty":{i % 5}}},{{"sku":"k{i % 13}",'
                    f'"qty":1}}],"status":"done"}},"error":null'
                )
            value = (
                f'{{"event_id":"op-{i}-{pool_name}","schema_version":1,'
                f'"type":"OperationRecorded","correlation_id":"{cid}","session_id":"{session}",'
                f'"pool":"{pool_name}","role":"{role}","operation":"{op}",{outcome},'
                f'"started_at":"{at}","duration_ms":{duration},"environment":"prod",'
                f'"args_digest":"d{i % 10007}","resources":{{"cpu_ms":{duration / 2:.3f},'
                f'"memory_bytes":{rng.randrange(1 << 20, 1 << 26)},'
                f'"worker_id":"{pool_name}-w{i % 16}"}}}}'
            )
            records.append(self._record("operations", cid, value.encode()))
        differences = (
            '[{"path":"$.price","kind":"value","v1":1.0,"v2":1.5}]'
            if category == "value_mismatch"
            else "[]"
        )
        v2 = durations.get("v2")
        comparison = (
            f'{{"event_id":"cmp-{cid}","schema_version":1,"type":"ComparisonRecorded",'
            f'"comparison_id":"cmp-{cid}","correlation_id":"{cid}","session_id":"{session}",'
            f'"operation":"{op}","environment":"prod","category":"{category}",'
            f'"differences":{differences},"differences_truncated":false,'
            f'"difference_count":{1 if category == "value_mismatch" else 0},'
            f'"fingerprint":"{category}:{op}","rules_version":"r1","primary_pool":"v1",'
            f'"v1_event_id":"op-{i}-v1","v2_event_id":'
            f"{'null' if v2 is None else f'{chr(34)}op-{i}-v2{chr(34)}'},"
            f'"v1_duration_ms":{durations["v1"]},"v2_duration_ms":'
            f'{"null" if v2 is None else v2},"latency_ratio":'
            f"{'null' if v2 is None else round(v2 / durations['v1'], 4)},"
            f'"v1_error_type":null,"v2_error_type":null,"late":false,"at":"{at}"}}'
        )
        records.append(self._record("comparisons", cid, comparison.encode()))
        return records

    def health(self, i: int, total: int) -> list[SourceRecord]:
        ms = i * WEEK_MS // max(total, 1)
        out = []
        for pool in ("v1", "v2"):
            value = (
                f'{{"event_id":"health-{i}-{pool}","type":"HealthAssessed","pool":"{pool}",'
                f'"operation":"*","window_start":"{_iso(ms - 60_000)}",'
                f'"window_end":"{_iso(ms)}","count":1000,"error_count":{i % 7},'
                f'"p50_ms":20.1,"p95_ms":40.2,"p99_ms":61.0,"mean_ms":22.0,'
                f'"verdict":"ok","at":"{_iso(ms)}"}}'
            )
            out.append(self._record("health", pool, value.encode()))
        return out

    def flag_change(self, i: int, total: int) -> SourceRecord:
        self.flag_version += 1
        v = self.flag_version
        ms = i * WEEK_MS // max(total, 1)
        value = (
            f'{{"event_id":"flag-{v}","type":"FlagChanged","flag":"v2_migration","version":{v},'
            f'"command":"set_percentage","command_id":"cmd-{v}","v2_pool_enabled":true,'
            f'"v2_rollout_bp":{min(v * 500, 10_000)},"shadow_mode_enabled":true,'
            f'"shadow_sample_bp":10000,"session_overrides":{{}},"environment_overrides":{{}},'
            f'"frozen":false,"actor":"bench","reason":"ramp","at":"{_iso(ms)}",'
            f'"prev_hash":"h{v - 1}","hash":"h{v}"}}'
        )
        return self._record("flag_events", "v2_migration", value.encode())

    def batches(self, events: int, batch: int) -> Iterator[list[SourceRecord]]:
        correlations = max(events // 4, 1)
        pending: list[SourceRecord] = []
        for i in range(correlations):
            pending += self.correlation(i, correlations)
            if i % 5_000 == 0:
                pending += self.health(i, correlations)
            if i % max(correlations // 20, 1) == 0:
                pending.append(self.flag_change(i, correlations))
            if i % 100_000 == 7:
                pending.append(self._record("operations", "bad", b'{"type":"OperationRecorded"}'))
            if len(pending) >= batch:
                yield pending
                pending = []
        if pending:
            yield pending


_TOPIC_NAMES = {"operations", "comparisons", "flag_events", "decisions", "health"}

QUERIES: dict[str, str] = {
    "count every table": " UNION ALL ".join(
        f"SELECT '{name}', count(*) FROM {name}" for name in TABLES
    ),
    "operations per pool and outcome": (
        "SELECT pool, outcome, count(*) FROM operations GROUP BY ALL"
    ),
    "latency p50/p95/p99 per pool and operation": (
        "SELECT pool, operation, count(*), "
        "quantile_cont(duration_ms, [0.5, 0.95, 0.99]) FROM operations GROUP BY ALL"
    ),
    "comparisons per category": "SELECT category, count(*) FROM comparisons GROUP BY ALL",
    "top difference fingerprints": (
        "SELECT fingerprint, count(*) AS n, any_value(correlation_id) FROM comparisons "
        "WHERE category <> 'match' GROUP BY fingerprint ORDER BY n DESC LIMIT 10"
    ),
    "decisions by pool and reason per hour": (
        "SELECT date_trunc('hour', \"at\") AS hour, pool, reason, count(*) FROM decisions "
        "GROUP BY ALL ORDER BY hour"
    ),
    "operation_pairs by category": (
        "SELECT category, count(*), avg(v2_duration_ms / v1_duration_ms) FROM operation_pairs "
        "GROUP BY ALL"
    ),
    "one correlation id (point lookup)": (
        "SELECT * FROM operation_pairs WHERE correlation_id = 'corr-000123457'"
    ),
    "one session's decisions": "SELECT * FROM decisions WHERE session_id = 's4242'",
    "flag history": 'SELECT version, v2_rollout_bp, "at" FROM flag_changes ORDER BY version',
}


def build(path: Path, events: int, batch: int, partitions: int, fsync: bool) -> list[Figure]:
    """Write the ledger; the writer's figures that the JSON line carries (rollups' share)."""
    settings = Settings(topic_prefix="bench.")
    generator = Generator(settings, partitions)
    generate_s = write_s = write_cpu_s = 0.0
    records = rows = dead = 0
    with LedgerWriter(path, fsync=fsync) as writer:
        batches = generator.batches(events, batch)
        while True:
            started = time.perf_counter()
            chunk = next(batches, None)
            generate_s += time.perf_counter() - started
            if chunk is None:
                break
            started, cpu = time.perf_counter(), time.process_time()
            result = writer.write_batch(chunk)
            write_s += time.perf_counter() - started
            write_cpu_s += time.process_time() - cpu
            records += result.records
            rows += result.rows
            dead += result.dead_lettered
            print(
                f"\r  {records:>12,} records  {records / write_s:>9,.0f} rows/s "
                f"({records / write_cpu_s:,.0f} per CPU second)",
                end="",
                flush=True,
            )
        print()
        rollup_cpu_s = writer.rollup_cpu_s  # the rollups' part of write_cpu_s
        started = time.perf_counter()
        compaction = writer.compact(full=True, target_rows=2_000_000)
        compact_s = time.perf_counter() - started
        started = time.perf_counter()
        writer.close()
        # What a restarted sink pays before its first batch: the offsets and the id index.
        with LedgerWriter(path, fsync=fsync) as reopened:
            reopened.committed_offsets()
        reopen_s = time.perf_counter() - started
        live = [writer.layout.segment_dir(s) for s in writer.live_segments()]
    segments = len(live)
    # Live segments only: the parts compaction replaced wait out their grace period on disk.
    parquet = [f for folder in live for f in folder.glob("*.parquet")]
    size = sum(f.stat().st_size for f in parquet)
    files = len(parquet)
    print(f"events generated      {records:,} ({generate_s:.1f} s to generate the bytes)")
    print(f"rows stored           {rows:,} ({dead} dead-lettered)")
    print(f"ingest (writer)       {records / write_s:,.0f} rows/s over {write_s:.1f} s")
    # The machine may be shared: CPU seconds of this process say what the writer costs.
    print(
        f"ingest per CPU second {records / write_cpu_s:,.0f} rows "
        f"({write_cpu_s / max(records, 1) * 1e6:.1f} µs of CPU a row)"
    )
    print(
        f"full compaction       {compact_s:.1f} s ({compaction.merged_segments} segments "
        f"into {compaction.new_segments}; {segments} live)"
    )
    print(f"ledger size           {size / 1e6:,.0f} MB in {files} Parquet files")
    print(f"writer restart        {reopen_s:.2f} s (offsets from names, event-id index)")
    share = 100 * rollup_cpu_s / max(write_cpu_s, 1e-9)
    print(
        f"rollups in the writer {share:.1f} % of its CPU "
        f"({rollup_cpu_s / max(records, 1) * 1e6:.2f} µs of CPU a row; goal <= 10 %)"
    )
    return [
        Figure("writer cpu per row", write_cpu_s / max(records, 1) * 1e6, "µs"),
        Figure("rollups cpu per row", rollup_cpu_s / max(records, 1) * 1e6, "µs"),
        Figure("rollups_cpu_share_pct", share, "%"),
    ]


def time_queries(path: Path, rounds: int) -> list[Figure]:
    started = time.perf_counter()
    con = open_reader(path)
    figures = [Figure("open_reader", time.perf_counter() - started, "s")]
    for name, sql in QUERIES.items():
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            con.sql(sql).fetchall()
            best = min(best, time.perf_counter() - started)
        figures.append(Figure(name, best, "s"))
    con.close()
    return figures


def _reports_figures() -> Callable[[Path], list[Figure]]:
    """``bench/reports.py``'s ``figures`` (report, replay, audit timings), loaded by path: a
    module named ``reports`` would be the package of that name."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_reports", Path(__file__).with_name("reports.py")
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)

    def measure(path: Path) -> list[Figure]:
        return [Figure(f.name, f.value, f.unit) for f in module.figures(path)]

    return measure


def merkle_figures(path: Path) -> list[Figure]:
    """Costs of the Merkle trees and checkpoints on the built ledger (see the docstring)."""
    import base64
    import json
    import math

    from ledger.checkpoint import Checkpoint, Signer
    from ledger.merkle import CompactTree, leaf_hash
    from ledger.store.integrity import (
        audit_checkpoints,
        decision_proof,
        read_checkpoint_file,
        take_checkpoints,
    )
    from ledger.store.trees import record_leaf
    from reports.audit import audit

    figures: list[Figure] = []
    n = 1_000_000
    leaves = [leaf_hash(i.to_bytes(8, "big")) for i in range(n)]
    tree = CompactTree()
    started = time.perf_counter()
    for leaf in leaves:
        tree.append(leaf)
    per_leaf = (time.perf_counter() - started) / n * 1e6
    figures.append(Figure("merkle append, 1M leaves (a leaf)", per_leaf, "µs"))
    figures.append(Figure("merkle frontier kept at 1M leaves", len(tree.frontier), "hashes"))
    wire = "x" * 400
    started = time.perf_counter()
    for i in range(200_000):
        record_leaf("bench.ledger.decisions", 3, i, wire)
    per_record = (time.perf_counter() - started) / 200_000 * 1e6
    figures.append(Figure("record leaf hash, 400-byte wire", per_record, "µs"))
    signer = Signer.from_text(base64.b64encode(bytes(32)))
    started = time.perf_counter()
    for i in range(1000):
        signer.sign(Checkpoint("migration-ledger/ledger/t/0", i, tree.root()))
    figures.append(
        Figure("Ed25519 checkpoint signature", (time.perf_counter() - started) * 1e3, "µs")
    )

    con = open_reader(path)
    started = time.perf_counter()
    audit(con, sample=1000, seed=1)
    audit_s = time.perf_counter() - started
    decision = con.sql("SELECT event_id FROM decisions LIMIT 1").fetchall()[0][0]
    con.close()
    figures.append(Figure("audit (today's checks)", audit_s, "s"))
    started = time.perf_counter()
    held_data = take_checkpoints(path)
    figures.append(Figure("checkpoint --out", time.perf_counter() - started, "s"))
    held_file = path.parent / "held-checkpoints.json"
    held_file.write_text(json.dumps(held_data))
    held = read_checkpoint_file(held_file)
    started = time.perf_counter()
    report = audit_checkpoints(path, held, None, columns=False)
    tree_s = time.perf_counter() - started
    assert report.ok, [f.text for f in report.findings if not f.ok]
    figures.append(Figure(f"trees rebuilt + proofs ({report.rows:,} rows)", tree_s, "s"))
    from ledger.store.integrity import column_mismatches

    con = open_reader(path)
    started = time.perf_counter()
    column_mismatches(con)
    columns_s = time.perf_counter() - started
    con.close()
    figures.append(Figure("columns vs wire (--columns)", columns_s, "s"))
    figures.append(Figure("audit --checkpoint / audit", (audit_s + tree_s) / audit_s, "x"))
    figures.append(
        Figure(
            "audit --checkpoint --columns / audit", (audit_s + tree_s + columns_s) / audit_s, "x"
        )
    )
    started = time.perf_counter()
    proof = decision_proof(path, str(decision), held)
    figures.append(Figure("proof --decision", time.perf_counter() - started, "s"))
    size = int(proof["decision"]["checkpoint"].split("\n")[1])
    figures.append(
        Figure(f"decision proof, tree of {size:,}", 32 * len(proof["decision"]["proof"]), "B")
    )
    figures.append(Figure("bound: 32 x ceil(log2 n)", 32 * math.ceil(math.log2(max(size, 2))), "B"))
    held_file.unlink()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--batch", type=int, default=100_000, help="records per write_batch")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--ledger", type=Path, help="where to build (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the ledger afterwards")
    parser.add_argument("--reuse", action="store_true", help="query an existing --ledger")
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="best of R for each query")
    parser.add_argument(
        "--reports", action="store_true", help="also bench/reports.py's figures on this ledger"
    )
    parser.add_argument("--merkle", action="store_true", help="also the Merkle/checkpoint costs")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    args = parser.parse_args()
    if args.reports:
        MEASUREMENTS.append(_reports_figures())
    if args.merkle:
        MEASUREMENTS.append(merkle_figures)

    written: list[Figure] = []
    temporary = args.ledger is None
    path = args.ledger or Path(tempfile.mkdtemp(prefix="ledger-bench-")) / "ledger"
    try:
        if not args.reuse:
            if path.exists():
                shutil.rmtree(path)
            print(f"building {args.events:,} events into {path}")
            written = build(path, args.events, args.batch, args.partitions, not args.no_fsync)
        print(f"queries (best of {args.rounds}):")
        figures = written + time_queries(path, args.rounds)
        for measure in MEASUREMENTS:
            figures += measure(path)
        for figure in figures:
            print(f"  {figure.name:<45} {figure.value:>9.3f} {figure.unit}")
        if args.json:
            import json

            print(json.dumps({f.name: f.value for f in figures}))
    finally:
        if temporary and not args.keep:
            shutil.rmtree(path.parent, ignore_errors=True)
        elif args.keep or not temporary:
            print(f"ledger kept at {path}")


if __name__ == "__main__":
    main()
