"""Fuzz the wire contract through the real broker, the real worker and the real sink.

    .venv/bin/python bench/fuzz_contract.py [--events 100000] [--bootstrap-servers HOST:PORT]
                                            [--seed 1] [--json] [--keep-topics]

Sends ``--events`` operations (pairs of V1/V2 halves, about half of them mutated: bit flips,
truncations, type swaps, deep nesting, huge strings, duplicate keys, odd numbers, lone
surrogates, NUL in ids, unknown schema versions, wrong keys, missing or foreign ``type`` ...)
to fresh topics, with ``migration-ledger worker`` and ``migration-ledger sink`` running as
subprocesses. When the sink has accounted for every record, it checks the ledger and prints:

- sent, accepted (stored in ``operations``), dead-lettered (a dead letter for its position);
- stored altered: stored rows whose ``wire`` is not the bytes sent, or whose typed columns do
  not rebuild the event the wire decodes to (must be 0);
- lost: sent - accepted - dead-lettered (must be 0), and both: stored *and* dead-lettered;
- disagreements: records (among those the worker has read, per its committed offsets) where
  the worker's verdict (its dead letters) and the sink's differ
  for a contract reason (pairing's own refusals, e.g. a third half, are counted apart);
- whether both processes stayed alive. ``--json``: one JSON line with these at the end.

Figures only; nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

# bench/ holds a ledger.py of its own; the script's folder must not shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from ledger import wire  # noqa: E402
from ledger.errors import EventDecodeError  # noqa: E402
from ledger.events import OperationRecorded, decode_event_object  # noqa: E402
from ledger.kafka.admin import ensure_topics  # noqa: E402
from ledger.settings import Settings  # noqa: E402

CLI = str(Path(sys.executable).parent / "migration-ledger")
#: Contract refusals start so (``ledger.wire``); anything else the worker says is pairing's.
CONTRACT_REASONS = ("not a valid", "empty message value", "key ")


def base_half(rng: random.Random, cid: str, pool: str, n: int) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": f"{cid}-{pool}",
        "correlation_id": cid,
        "session_id": None if n % 5 == 0 else f"s{n % 997}",
        "pool": pool,
        "role": "primary" if pool == "v1" else "shadow",
        "operation": rng.choice(["quote", "execute_program", "list"]),
        "outcome": "ok",
        "result": {
            "id": n,
            "rows": [{"k": i, "v": rng.random() * 100, "s": f"r{i}"} for i in range(3)],
            "ok": rng.random() < 0.9,
            "tags": ["a", "b"],
        },
        "started_at": f"2026-03-01T10:{n // 60 % 60:02d}:{n % 60:02d}.{n % 1_000_000:06d}Z",
        "duration_ms": round(rng.uniform(0.1, 500.0), 3),
    }
    if rng.random() < 0.5:
        doc["type"] = "OperationRecorded"
    if rng.random() < 0.5:
        doc["resources"] = {"cpu_ms": 1.5, "memory_bytes": rng.randrange(1 << 40), "worker_id": "w"}
    return doc


ODD_NUMBERS = (
    "NaN", "Infinity", "-Infinity", "1e400", "-1e999", "1e-400", "-0", "18446744073709551616",
    "9223372036854775808", "-9223372036854775809", "9007199254740993", "1.7976931348623157e308",
    "123456789012345678901234567890", "0.1", "1E2",
)  # fmt: skip


def mutate(rng: random.Random, doc: dict[str, Any], key: bytes) -> tuple[bytes, bytes | None, str]:
    """One mutated wire form of ``doc``: (value, key, mutation name)."""
    text = json.dumps(doc).encode()
    kind = rng.choice(
        [
            "bit_flip", "truncate", "type_swap", "deep", "huge_string", "duplicate_key",
            "odd_number", "lone_surrogate", "nul_id", "schema_version", "missing_field",
            "extra_field", "wrong_key", "empty", "not_utf8", "foreign_type", "nested_odd",
        ]
    )  # fmt: skip
    body = dict(doc)
    if kind == "bit_flip":
        data = bytearray(text)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            data[at] ^= 1 << rng.randrange(8)
        return bytes(data), key, kind
    if kind == "truncate":
        return text[: rng.randrange(len(text))], key, kind
    if kind == "type_swap":
        field = rng.choice(sorted(body))
        body[field] = rng.choice([[1], {"a": 1}, True, False, 7, -1, 2.5, "x", None, ""])
    elif kind == "deep":
        depth = rng.choice([63, 64, 65, 100, 1_000, 20_000, 100_000])
        opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
        body["result"] = "__DEEP__"
        inner = opener * depth + "1" + closer * depth
        return json.dumps(body).replace('"__DEEP__"', inner).encode(), key, kind
    elif kind == "huge_string":
        field = rng.choice(["session_id", "operation", "event_id", "result", "correlation_id"])
        size = rng.choice([511, 512, 513, 1024, 1025, 4096, 300_000])
        body[field] = (doc["correlation_id"] + field + "x" * size)[:size]  # ids stay unique
    elif kind == "duplicate_key":
        field = rng.choice(sorted(body))
        extra = json.dumps(rng.choice([body[field], "v2", 10_000, None])).encode()
        return text[:-1] + b", " + json.dumps(field).encode() + b": " + extra + b"}", key, kind
    elif kind in ("odd_number", "nested_odd"):
        literal = rng.choice(ODD_NUMBERS)
        if kind == "odd_number":
            field = rng.choice(["duration_ms", "schema_version", "result"])
            body[field] = "__NUM__"
        else:
            body["resources"] = {"cpu_ms": "__NUM__", "memory_bytes": 1}
        return json.dumps(body).replace('"__NUM__"', literal).encode(), key, kind
    elif kind == "lone_surrogate":
        field = rng.choice(["operation", "session_id", "result"])
        body[field] = "__SUR__"
        escape = rng.choice(["\\ud800", "\\udfff", "\\ud83d", "\\ud83d\\ude00"])
        return json.dumps(body).replace("__SUR__", escape).encode(), key, kind
    elif kind == "nul_id":
        field = rng.choice(["event_id", "session_id", "operation"])
        body[field] = f"{body[field] or ''}\x00z"
    elif kind == "schema_version":
        body["schema_version"] = rng.choice([0, 1, 2, 99, -1, 2**70, True, "1"])
    elif kind == "missing_field":
        body.pop(rng.choice(sorted(body)))
    elif kind == "extra_field":
        body[rng.choice(["extra", "Pool", "type2"])] = 1
    elif kind == "wrong_key":
        return text, rng.choice([None, b"", b"other", key + b"x"]), kind
    elif kind == "empty":
        return b"", key, kind
    elif kind == "not_utf8":
        return text.replace(b'"', b'"\xff', 1), key, kind
    elif kind == "foreign_type":
        body["type"] = rng.choice(["ComparisonRecorded", "FlagChanged", "Nope", 1, None])
    return json.dumps(body).encode(), key, kind


def generate(events: int, seed: int, prefix: str) -> list[tuple[bytes, bytes | None, str]]:
    rng = random.Random(seed)
    out: list[tuple[bytes, bytes | None, str]] = []
    n = 0
    while len(out) < events:
        cid = f"{prefix}{n}"
        for pool in ("v1", "v2"):
            doc = base_half(rng, cid, pool, n)
            key = cid.encode()
            if rng.random() < 0.5:
                out.append(mutate(rng, doc, key))
            else:
                out.append((json.dumps(doc).encode(), key, "valid"))
        n += 1
    return out[:events]


async def publish(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None, str]]
) -> dict[tuple[int, int], int]:
    """Send every record; (partition, offset) -> index into ``records``."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_request_size=2_000_000, acks="all"
    )
    await producer.start()
    where: dict[tuple[int, int], int] = {}
    try:
        for start in range(0, len(records), 2_000):
            futures = [
                (i, await producer.send(topic, key=records[i][1], value=records[i][0]))
                for i in range(start, min(start + 2_000, len(records)))
            ]
            for i, future in futures:
                metadata = await future
                where[(metadata.partition, metadata.offset)] = i
    finally:
        await producer.stop()
    return where


def worker_dead_letters(bootstrap: str, topic: str, source: str) -> dict[tuple[int, int], str]:
    """The worker's dead letters of ``source`` read straight from Kafka: position -> reason."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    found: dict[tuple[int, int], str] = {}
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            for records in consumer.poll(timeout_ms=1000, max_records=10_000).values():
                for record in records:
                    letter = json.loads(record.value)
                    if letter.get("source_topic") == source:
                        position = (letter["source_partition"], letter["source_offset"])
                        found[position] = letter["reason"]
    finally:
        consumer.close()
    return found


def ledger_state(
    ledger: Path, topic: str
) -> tuple[dict[tuple[int, int], dict[str, Any]], dict[tuple[int, int], dict[str, Any]]]:
    from ledger.store.reader import open_reader

    con = open_reader(ledger)
    try:
        cursor = con.execute("SELECT * FROM operations WHERE _topic = ?", [topic])
        names = [d[0] for d in cursor.description]
        stored = {
            (r["_partition"], r["_offset"]): r
            for r in (dict(zip(names, row, strict=True)) for row in cursor.fetchall())
        }
        cursor = con.execute(
            "SELECT source_partition, source_offset, reason, original_b64 FROM dead_letters "
            "WHERE source_topic = ?",
            [topic],
        )
        dead = {
            (p, o): {"reason": reason, "original_b64": b64}
            for p, o, reason, b64 in cursor.fetchall()
        }
    finally:
        con.close()
    return stored, dead


def worker_progress(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """Partition -> the worker's committed offset on ``topic``: it has judged every record
    below it (a busy machine may not let it finish the whole campaign in time)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group)
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


def ledger_coverage(ledger: Path, topic: str) -> int:
    """Records of ``topic`` the ledger has accounted for (stored or dead-lettered), cheaply."""
    from ledger.store.reader import open_reader

    con = open_reader(ledger)
    try:
        stored = con.execute("SELECT count(*) FROM operations WHERE _topic = ?", [topic])
        dead = con.execute("SELECT count(*) FROM dead_letters WHERE source_topic = ?", [topic])
        return int(stored.fetchall()[0][0]) + int(dead.fetchall()[0][0])
    finally:
        con.close()


def rebuilt(row: dict[str, Any]) -> OperationRecorded:
    data = {k: v for k, v in row.items() if not k.startswith("_") and k != "wire"}
    for name in ("result", "error"):
        if isinstance(data[name], str):
            data[name] = json.loads(data[name])
    event = decode_event_object(data, OperationRecorded)
    assert isinstance(event, OperationRecorded)
    return event


def alive(*processes: subprocess.Popen[bytes]) -> bool:
    return all(p.poll() is None for p in processes)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--timeout", type=float, default=1_800.0, help="seconds to wait for the sink"
    )
    parser.add_argument(
        "--worker-wait",
        type=float,
        default=600.0,
        help="seconds the worker gets after the sink is done; its verdicts are compared on "
        "what it has read by then",
    )
    parser.add_argument("--keep-topics", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("MIGRATION_LEDGER_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    )
    args = parser.parse_args()
    prefix = f"fuzz{uuid.uuid4().hex[:6]}."
    settings = Settings(bootstrap_servers=args.bootstrap_servers, topic_prefix=prefix)
    ensure_topics(settings)
    operations = settings.topic("operations")
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-contract-"))
    ledger = workdir / "ledger"
    env = {
        **os.environ,
        "MIGRATION_LEDGER_BOOTSTRAP_SERVERS": args.bootstrap_servers,
        "MIGRATION_LEDGER_TOPIC_PREFIX": prefix,
        "MIGRATION_LEDGER_CACHE_DIR": str(workdir),
        "MIGRATION_LEDGER_DUCKDB": str(ledger),
    }
    records = generate(args.events, args.seed, "f")
    kinds: dict[str, int] = {}
    for _, _, kind in records:
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"topics {prefix}*, {len(records)} operations, mutations: {kinds}")
    with (
        (workdir / "worker.log").open("wb") as worker_log,
        (workdir / "sink.log").open("wb") as sink_log,
    ):
        worker = subprocess.Popen(
            [CLI, "worker", "--without-web", "--pairing-timeout", "5", "--loglevel", "error"],
            env=env, cwd=workdir, stdout=worker_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        sink = subprocess.Popen(
            [CLI, "sink", "--duckdb", str(ledger), "--no-fsync", "--compact-every", "0", "--quiet"],
            env=env, cwd=workdir, stdout=sink_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    stayed_alive = True
    started = time.monotonic()
    try:
        where = await publish(args.bootstrap_servers, operations, records)
        print(f"published in {time.monotonic() - started:.1f} s")
        deadline = time.monotonic() + args.timeout
        progress: dict[int, int] = {}
        covered = 0
        while time.monotonic() < deadline:
            stayed_alive = stayed_alive and alive(worker, sink)
            if not stayed_alive:
                break
            try:
                covered = ledger_coverage(ledger, operations)
            except Exception:  # the ledger folder may not exist yet
                covered = 0
            if covered >= len(where):
                break
            await asyncio.sleep(5)
        # The worker (faust) runs behind the sink: wait until its dead letters stop coming.
        dead_topic = settings.topic("dead_letters")
        from_worker = worker_dead_letters(args.bootstrap_servers, dead_topic, operations)
        quiet_since = time.monotonic()
        worker_until = min(deadline, time.monotonic() + args.worker_wait)
        while time.monotonic() < worker_until and time.monotonic() - quiet_since < 20:
            await asyncio.sleep(10)
            again = worker_dead_letters(args.bootstrap_servers, dead_topic, operations)
            if len(again) != len(from_worker):
                from_worker, quiet_since = again, time.monotonic()
        stayed_alive = stayed_alive and alive(worker, sink)
        progress = worker_progress(args.bootstrap_servers, f"{prefix}migration-ledger", operations)
        from_worker = worker_dead_letters(args.bootstrap_servers, dead_topic, operations)
        stored, dead = ledger_state(ledger, operations)
    finally:
        for process in (worker, sink):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in (worker, sink):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        if not args.keep_topics:
            delete_topics(args.bootstrap_servers, prefix)

    sent = len(where)
    altered = 0
    for position, row in stored.items():
        value = records[where[position]][0]
        try:
            same = row["wire"].encode() == value and rebuilt(row) == wire.decode(
                value, "operations"
            )
        except (EventDecodeError, ValueError):
            same = False
        altered += not same
    bad_letters = sum(
        base64.b64decode(letter["original_b64"]) != records[where[position]][0]
        for position, letter in dead.items()
    )
    both = len(set(stored) & set(dead))
    accepted = len(stored)
    dead_lettered = len(set(dead) - set(stored))
    lost = sent - accepted - dead_lettered
    # The worker refuses what the contract refuses (same decoder): its contract dead letters
    # must be exactly the records the sink did not store.
    worker_refused = {p for p, reason in from_worker.items() if reason.startswith(CONTRACT_REASONS)}
    pairing_refused = len(from_worker) - len(worker_refused)
    judged = {p for p in where if p[1] < progress.get(p[0], 0)}  # what the worker has read
    sink_refused = (set(where) - set(stored)) & judged
    worker_refused &= judged
    disagreements = len(worker_refused ^ sink_refused)
    for position in sorted(worker_refused ^ sink_refused)[:5]:
        kind = records[where[position]][2]
        print(
            f"worker and sink disagree at {position} ({kind}): worker {from_worker.get(position)}"
        )
    # And a local oracle: the same decoder in this process.
    oracle = 0
    for position, index in where.items():
        value, key, _ = records[index]
        try:
            wire.decode_record(operations, key, value)
            expected = True
        except EventDecodeError:
            expected = False
        if expected != (position in stored):
            oracle += 1
            if oracle <= 5:
                reason = dead.get(position, {}).get("reason")
                print(f"oracle disagrees at {position} ({records[index][2]}): sink says {reason}")
    figures = {
        "sent": sent,
        "accepted": accepted,
        "dead_lettered": dead_lettered,
        "stored_altered": altered,
        "dead_letters_with_other_bytes": bad_letters,
        "lost": lost,
        "stored_and_dead_lettered": both,
        "worker_judged": len(judged),
        "worker_sink_disagreements": disagreements,
        "pairing_refusals": pairing_refused,
        "oracle_disagreements": oracle,
        "both_alive": stayed_alive,
        "seconds": round(time.monotonic() - started, 1),
        "load_average": os.getloadavg()[0],
    }
    for name, value in figures.items():
        print(f"{name:>30}: {value}")
    if args.json:
        print(json.dumps(figures))


def delete_topics(bootstrap: str, prefix: str) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        ours = [topic for topic in admin.list_topics() if topic.startswith(prefix)]
        if ours:
            admin.delete_topics(ours)
    finally:
        admin.close()


if __name__ == "__main__":
    asyncio.run(main())
