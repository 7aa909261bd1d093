"""Throughput and delay of the pairing pipeline, on a real broker.

    .venv/bin/python bench/pipeline.py [--pairs 20000] [--bootstrap-servers 127.0.0.1:9092]

1. Publishes N pairs (halves shuffled within a small window) to fresh topics.
2. A bare aiokafka consumer reads that topic end to end: messages per second, the ceiling.
3. ``migration-ledger worker`` (a subprocess) starts on the backlog: comparisons per second from
   the first to the N-th comparison (start-up excluded). The ratio compares what the worker
   reads (two operations per comparison) with what the bare consumer reads.
4. With the worker caught up, M more pairs are published at a steady rate; the delay from the
   publication of each pair's second half to its comparison reaching a reader gives p50/p99.

Figures only; nothing here asserts timing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

# bench/ holds a ledger.py of its own; the script's folder must not shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from ledger.events import OperationRecorded, encode_event  # noqa: E402
from ledger.kafka.admin import ensure_topics  # noqa: E402
from ledger.settings import Settings  # noqa: E402

CLI = str(Path(sys.executable).parent / "migration-ledger")


def halves(cid: str, n: int) -> list[bytes]:
    """A typical pair: a small result (about 25 leaves), different in 5% of the pairs."""
    result = {
        "program_id": f"p{n}",
        "rows": [{"id": i, "name": f"row {i}", "score": i * 1.5} for i in range(6)],
        "status": "ok",
        "elapsed": {"compile": 3, "run": 12},
    }
    out = []
    for pool in ("v1", "v2"):
        value = result if pool == "v1" or n % 20 else {**result, "status": "partial"}
        out.append(
            encode_event(
                OperationRecorded(
                    event_id=f"{cid}-{pool}",
                    correlation_id=cid,
                    session_id=f"s{n % 1000}",
                    pool=pool,
                    role="primary" if pool == "v1" else "shadow",
                    operation="execute_program",
                    outcome="ok",
                    result=value,
                    started_at=datetime.now(UTC),
                    duration_ms=10.0 + n % 7,
                )
            )
        )
    return out


async def publish_backlog(bootstrap: str, topic: str, pairs: int, prefix: str) -> None:
    from aiokafka import AIOKafkaProducer

    messages: list[tuple[bytes, bytes]] = []
    for n in range(pairs):
        cid = f"{prefix}{n}"
        messages.extend((cid.encode(), value) for value in halves(cid, n))
    rng = random.Random(1)
    for start in range(0, len(messages), 100):
        chunk = messages[start : start + 100]
        rng.shuffle(chunk)
        messages[start : start + 100] = chunk
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send(topic, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


async def bare_read_rate(bootstrap: str, topic: str, expected: int) -> float:
    """Messages per second for a plain aiokafka consumer reading the topic from the start."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        seen = 0
        started = time.perf_counter()  # the first fetch counts, as the worker's first does
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            seen += sum(len(records) for records in batch.values())
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


class ComparisonClock:
    """Reads the comparisons topic; remembers when each correlation id's comparison arrived."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from aiokafka import AIOKafkaConsumer

        self.consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
        )
        self.arrived: dict[bytes, float] = {}

    async def run(self) -> None:
        await self.consumer.start()
        try:
            while True:
                batch = await self.consumer.getmany(timeout_ms=200, max_records=10_000)
                now = time.perf_counter()
                for records in batch.values():
                    for record in records:
                        self.arrived.setdefault(record.key, now)
        finally:
            await self.consumer.stop()

    async def wait_for(self, count: int, timeout: float, worker: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + timeout
        while len(self.arrived) < count:
            if worker.poll() is not None:
                raise SystemExit(f"worker exited with {worker.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(self.arrived)}/{count} comparisons in {timeout} s")
            await asyncio.sleep(0.05)


async def live_delays(
    bootstrap: str, topic: str, clock: ComparisonClock, pairs: int, rate: float, prefix: str
) -> list[float]:
    """Publish pairs at ``rate`` per second; delay of each comparison after its second half."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    second_sent: dict[bytes, float] = {}
    try:
        started = time.perf_counter()
        for n in range(pairs):
            cid = f"{prefix}{n}".encode()
            first, second = halves(cid.decode(), n)
            await producer.send(topic, key=cid, value=first)
            await producer.send_and_wait(topic, key=cid, value=second)
            second_sent[cid] = time.perf_counter()
            pause = started + (n + 1) / rate - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
    finally:
        await producer.stop()
    deadline = time.monotonic() + 60
    while any(cid not in clock.arrived for cid in second_sent) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return [clock.arrived[cid] - sent for cid, sent in second_sent.items() if cid in clock.arrived]


def worker_command(agents: str | None) -> list[str]:
    """The real ``migration-ledger worker``, or the same app with only some agent modules."""
    if agents is None:
        return [CLI, "worker", "--without-web", "--pairing-timeout", "10", "--loglevel", "error"]
    code = (
        "from ledger.settings import Settings\n"
        "from streams.app import create_app\n"
        "from ledger.kafka.admin import ensure_topics\n"
        "from ledger.cli.worker import run_worker\n"
        "settings = Settings(pairing_timeout=10)\n"
        "ensure_topics(settings)\n"
        f"app = create_app(settings, web_enabled=False, modules={agents.split(',')!r})\n"
        "run_worker(app.app, loglevel='error')\n"
    )
    return [sys.executable, "-c", code]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux): the worker's own cost, whatever else runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else 0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--keep-topics", action="store_true", help="leave this run's topics")
    parser.add_argument(
        "--agents",
        default=None,
        help="comma-separated agent modules (e.g. streams.metrics,streams.pairing) "
        "[default: the whole worker, as `migration-ledger worker` runs it]",
    )
    parser.add_argument("--live-pairs", type=int, default=2_000)
    parser.add_argument(
        "--live-rate",
        type=float,
        default=None,
        help="pairs per second [default: a quarter of the worker's measured backlog rate]",
    )
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("MIGRATION_LEDGER_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    )
    args = parser.parse_args()

    prefix = f"bench{uuid.uuid4().hex[:6]}."
    settings = Settings(bootstrap_servers=args.bootstrap_servers, topic_prefix=prefix)
    ensure_topics(settings)
    operations = settings.topic("operations")
    print(f"topics {prefix}*, {args.pairs} pairs ({2 * args.pairs} operations)")
    print(f"agents: {args.agents or 'the whole worker'}")

    await publish_backlog(args.bootstrap_servers, operations, args.pairs, "b")
    bare = await bare_read_rate(args.bootstrap_servers, operations, 2 * args.pairs)
    print(f"bare aiokafka consumer:  {bare:,.0f} operations/s  (= {bare / 2:,.0f} pairs/s)")

    workdir = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    env = {
        **os.environ,
        "MIGRATION_LEDGER_BOOTSTRAP_SERVERS": args.bootstrap_servers,
        "MIGRATION_LEDGER_TOPIC_PREFIX": prefix,
        "MIGRATION_LEDGER_CACHE_DIR": str(workdir),
    }
    clock = ComparisonClock(args.bootstrap_servers, settings.topic("comparisons"))
    reader = asyncio.create_task(clock.run())
    with (workdir / "worker.log").open("wb") as log:
        worker = subprocess.Popen(
            worker_command(args.agents),
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        await clock.wait_for(1, 120, worker)
        first = min(clock.arrived.values())
        cpu_first = cpu_seconds(worker.pid)
        await clock.wait_for(args.pairs, 600, worker)
        last = max(clock.arrived.values())
        cpu_used = cpu_seconds(worker.pid) - cpu_first
        rate = (args.pairs - 1) / (last - first)
        print(
            f"worker (backlog):        {rate:,.0f} comparisons/s  "
            f"(reads {2 * rate:,.0f} operations/s; "
            f"{(args.pairs - 1) / cpu_used:,.0f} comparisons per CPU second of the worker)"
        )
        print(f"ratio worker/bare:       {2 * rate / bare:.3f}  (operations read per second)")

        live_rate = args.live_rate or max(1.0, rate / 4)
        delays = await live_delays(
            args.bootstrap_servers, operations, clock, args.live_pairs, live_rate, "l"
        )
        print(
            f"live at {live_rate:.0f} pairs/s:     "
            f"p50 {1000 * percentile(delays, 50):.1f} ms, "
            f"p99 {1000 * percentile(delays, 99):.1f} ms "
            f"(second half published -> comparison read; {len(delays)} pairs)"
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        reader.cancel()
        if not args.keep_topics:
            delete_topics(args.bootstrap_servers, prefix)


def delete_topics(bootstrap: str, prefix: str) -> None:
    """Remove this run's topics (its own prefix: faust's changelogs included)."""
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
