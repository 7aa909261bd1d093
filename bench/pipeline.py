"""Throughput and delay of the pairing pipeline, on a real broker.

    .venv/bin/python bench/pipeline.py [--pairs 20000] [--bootstrap-servers 127.0.0.1:9092]

    .venv/bin/python -P bench/pipeline.py --pairs 10000 --json

1. Publishes N pairs (halves shuffled within a small window) to fresh topics.
2. A bare aiokafka consumer reads that topic end to end: messages per second, the ceiling.
3. faust's floor: an agent that does nothing with each message, in an app with the worker's
   own faust settings, reads the same topic (first to last message, wall and CPU).
4. ``migration-ledger worker`` (a subprocess) starts on the backlog: operations per second
   from the first to the N-th comparison (start-up excluded; two operations per comparison).
5. With the worker caught up, M more pairs are published at ``--live-rate``; the delay from
   the publication of each pair's second half to its comparison reaching a reader: p50/p99.
6. Two worker processes (one consumer group) on a second, equal backlog.

A phase that cannot finish fails loudly instead of hanging: a worker that exits, a minute
without a new comparison, or a phase past its limit ends it with the count reached and where
the worker logs are. A failed two-worker phase still prints the JSON line
(``workers2_ops_per_s: null``), then the bench exits non-zero.

Figures only; nothing here asserts timing. ``--json`` ends with one JSON line of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from typing import Any

# bench/ holds a ledger.py of its own; the script's folder must not shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from ledger.events import OperationRecorded, encode_event  # noqa: E402
from ledger.kafka.admin import ensure_topics  # noqa: E402
from ledger.settings import Settings  # noqa: E402

CLI = str(Path(sys.executable).parent / "migration-ledger")
#: ``BENCH_WORKER_LAUNCHER="python -m pyinstrument -r text -o prof.txt -m ledger"`` profiles it.
WORKER_ARGS = ("--without-web", "--pairing-timeout", "10", "--loglevel", "error")
WORKER_LAUNCHER = os.environ.get("BENCH_WORKER_LAUNCHER", CLI).split()


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
        #: Every comparison record read (a repeat of a correlation id counts here only).
        self.records = 0
        self.live_rate = 0.0

    async def run(self) -> None:
        await self.consumer.start()
        try:
            while True:
                batch = await self.consumer.getmany(timeout_ms=200, max_records=10_000)
                now = time.perf_counter()
                for records in batch.values():
                    self.records += len(records)
                    for record in records:
                        self.arrived.setdefault(record.key, now)
        finally:
            await self.consumer.stop()

    async def wait_for(
        self,
        count: int,
        workers: list[subprocess.Popen[bytes]],
        *,
        stall: float,
        limit: float,
        logs: Path,
    ) -> None:
        """Until ``count`` correlation ids have a comparison; fails loudly (``BenchFailed``)
        when a worker exits, when no new comparison arrives for ``stall`` seconds, or past
        ``limit`` seconds in all: a run that cannot finish says why instead of hanging."""
        started = last_change = time.monotonic()
        seen = len(self.arrived)
        while len(self.arrived) < count:
            now = time.monotonic()
            if len(self.arrived) != seen:
                seen, last_change = len(self.arrived), now
            exited = [(n, w.returncode) for n, w in enumerate(workers) if w.poll() is not None]
            why = None
            if exited:
                why = f"worker(s) exited (number, code): {exited}"
            elif now - last_change > stall:
                why = f"no new comparison for {stall:.0f} s"
            elif now - started > limit:
                why = f"not done in {limit:.0f} s"
            if why is not None:
                raise BenchFailed(
                    f"{why}: {len(self.arrived)}/{count} correlation ids compared "
                    f"({self.records} comparison records read); worker logs in {logs}"
                )
            await asyncio.sleep(0.05)


class BenchFailed(SystemExit):
    """A phase that cannot finish: the reason, the count reached, where the logs are."""


async def live_delays(
    bootstrap: str, topic: str, clock: ComparisonClock, pairs: int, rate: float, prefix: str
) -> list[float]:
    """Publish pairs at ``rate`` per second; delay of each comparison after its second half."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    second_sent: dict[bytes, float] = {}
    started = time.perf_counter()
    try:
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
    clock.live_rate = len(second_sent) / (time.perf_counter() - started)
    deadline = time.monotonic() + 60
    while any(cid not in clock.arrived for cid in second_sent) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return [clock.arrived[cid] - sent for cid, sent in second_sent.items() if cid in clock.arrived]


#: A phase fails when no new comparison arrives for this long (a rebalance settles in seconds).
STALL_S = 60.0


def worker_command(agents: str | None) -> list[str]:
    """The real ``migration-ledger worker``, or the same app with only some agent modules."""
    if agents is None:
        return [*WORKER_LAUNCHER, "worker", *WORKER_ARGS]
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


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else 0


#: A faust agent that does nothing with each message, with the worker's own faust settings
#: (``streams.app.create_app`` with no agent module), reading the same topic: faust's floor.
FLOOR_CODE = """
import sys, time, faust
from ledger.settings import Settings
from streams.app import create_app
expected, out = int(sys.argv[1]), sys.argv[2]
settings = Settings()
ledger = create_app(settings, app_id=settings.topic_prefix + "floor", web_enabled=False, modules=())
topic = ledger.topic("operations")
seen = 0
first = None
@ledger.app.agent(topic)
async def floor(stream):
    global seen, first
    async for _ in stream:
        seen += 1
        if first is None:
            first = (time.perf_counter(), time.process_time())
        if seen == expected:
            wall, cpu = time.perf_counter() - first[0], time.process_time() - first[1]
            open(out, "w").write(f"{(expected - 1) / wall} {(expected - 1) / cpu}")
from ledger.cli.worker import run_worker
run_worker(ledger.app, loglevel="error")
"""


def start(command: list[str], env: dict[str, str], workdir: Path, name: str) -> Any:
    with (workdir / f"{name}.log").open("wb") as log:
        return subprocess.Popen(command, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)


def stop(*processes: Any) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


async def floor_rate(env: dict[str, str], workdir: Path, expected: int) -> tuple[float, float]:
    """Messages per second (wall, CPU) of a do-nothing faust agent over the backlog."""
    out = workdir / "floor.txt"
    floor = start(
        [sys.executable, "-c", FLOOR_CODE, str(expected), str(out)], env, workdir, "floor"
    )
    try:
        deadline = time.monotonic() + 600
        while not out.exists() or not out.read_text():
            if floor.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the faust floor agent failed; see {workdir / 'floor.log'}")
            await asyncio.sleep(0.2)
        wall, cpu = (float(x) for x in out.read_text().split())
        return wall, cpu
    finally:
        stop(floor)


async def backlog_rate(
    settings: Settings,
    env: dict[str, str],
    workdir: Path,
    pairs: int,
    workers: int,
    agents: str | None,
) -> tuple[float, float, ComparisonClock, asyncio.Task[None], list[Any]]:
    """Comparisons per second (wall, per worker CPU second) of ``workers`` worker processes
    over a backlog of ``pairs``; returns the running workers and their comparison reader."""
    clock = ComparisonClock(settings.bootstrap_servers, settings.topic("comparisons"))
    reader = asyncio.create_task(clock.run())
    processes = [start(worker_command(agents), env, workdir, f"worker{n}") for n in range(workers)]
    # Start-up (topics, group join, recovery) may take a while on a loaded machine; after
    # the first comparison, a minute without a new one means the run is stuck.
    await clock.wait_for(1, processes, stall=240, limit=240, logs=workdir)
    first = min(clock.arrived.values())
    cpu_first = sum(cpu_seconds(p.pid) for p in processes)
    await clock.wait_for(pairs, processes, stall=STALL_S, limit=max(600, pairs / 5), logs=workdir)
    last = max(clock.arrived.values())
    cpu_used = sum(cpu_seconds(p.pid) for p in processes) - cpu_first
    return (pairs - 1) / (last - first), (pairs - 1) / cpu_used, clock, reader, processes


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
    parser.add_argument("--live-pairs", type=int, default=5_000)
    parser.add_argument("--live-rate", type=float, default=1_000.0, help="pairs per second")
    parser.add_argument("--skip-two", action="store_true", help="no two-worker run")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("MIGRATION_LEDGER_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    )
    args = parser.parse_args()
    figures: dict[str, Any] = {"pairs": args.pairs, "load_before": os.getloadavg()}

    def prepared(tag: str) -> tuple[Settings, dict[str, str], Path, str]:
        prefix = f"bench{uuid.uuid4().hex[:6]}{tag}."
        settings = Settings(bootstrap_servers=args.bootstrap_servers, topic_prefix=prefix)
        ensure_topics(settings)
        workdir = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
        env = {
            **os.environ,
            "MIGRATION_LEDGER_BOOTSTRAP_SERVERS": args.bootstrap_servers,
            "MIGRATION_LEDGER_TOPIC_PREFIX": prefix,
            "MIGRATION_LEDGER_CACHE_DIR": str(workdir),
        }
        return settings, env, workdir, prefix

    settings, env, workdir, prefix = prepared("")
    operations = settings.topic("operations")
    print(f"topics {prefix}*, {args.pairs} pairs ({2 * args.pairs} operations)")
    print(f"agents: {args.agents or 'the whole worker'}")
    prefixes = [prefix]
    failures: list[str] = []
    processes: list[Any] = []
    reader: asyncio.Task[None] | None = None
    try:
        await publish_backlog(args.bootstrap_servers, operations, args.pairs, "b")
        bare = await bare_read_rate(args.bootstrap_servers, operations, 2 * args.pairs)
        figures["aiokafka_ops_per_s"] = round(bare)
        print(f"bare aiokafka consumer:  {bare:,.0f} operations/s")
        floor, floor_cpu = await floor_rate(env, workdir, 2 * args.pairs)
        figures["faust_floor_ops_per_s"] = round(floor)
        figures["faust_floor_cpu_ops_per_s"] = round(floor_cpu)
        print(f"faust floor (no-op agent): {floor:,.0f} operations/s ({floor_cpu:,.0f} per CPU s)")

        rate, cpu_rate, clock, reader, processes = await backlog_rate(
            settings, env, workdir, args.pairs, 1, args.agents
        )
        figures["worker_ops_per_s"] = round(2 * rate)
        figures["worker_cpu_ops_per_s"] = round(2 * cpu_rate)
        figures["worker_over_floor"] = round(2 * rate / floor, 3)
        print(
            f"worker (backlog):        {2 * rate:,.0f} operations/s = {rate:,.0f} comparisons/s "
            f"({2 * cpu_rate:,.0f} operations per CPU second); {2 * rate / floor:.2f} x the floor"
        )

        delays = await live_delays(
            args.bootstrap_servers, operations, clock, args.live_pairs, args.live_rate, "l"
        )
        figures["live_pairs_per_s"] = round(clock.live_rate, 1)
        figures["live_p50_ms"] = round(1000 * percentile(delays, 50), 1)
        figures["live_p99_ms"] = round(1000 * percentile(delays, 99), 1)
        print(
            f"live at {clock.live_rate:,.0f} pairs/s: p50 {figures['live_p50_ms']} ms, "
            f"p99 {figures['live_p99_ms']} ms (second half published -> comparison read; "
            f"{len(delays)} pairs)"
        )
        stop(*processes)
        reader.cancel()

        if not args.skip_two:
            settings2, env2, workdir2, prefix2 = prepared("w2")
            prefixes.append(prefix2)
            await publish_backlog(
                args.bootstrap_servers, settings2.topic("operations"), args.pairs, "b"
            )
            try:
                rate2, _, clock2, reader, processes = await backlog_rate(
                    settings2, env2, workdir2, args.pairs, 2, args.agents
                )
            except BenchFailed as failed:
                figures["workers2_ops_per_s"] = None
                failures.append(f"two workers: {failed}")
                print(f"two workers (backlog):   FAILED: {failed}")
            else:
                figures["workers2_ops_per_s"] = round(2 * rate2)
                figures["workers2_over_worker"] = round(rate2 / rate, 3)
                figures["workers2_repeats"] = clock2.records - len(clock2.arrived)
                print(
                    f"two workers (backlog):   {2 * rate2:,.0f} operations/s "
                    f"({rate2 / rate:.2f} x one; {figures['workers2_repeats']} comparison "
                    "records repeated a correlation id)"
                )
    finally:
        stop(*processes)
        if reader is not None:
            reader.cancel()
        if not args.keep_topics:
            for each in prefixes:
                delete_topics(args.bootstrap_servers, each)
    figures["load_after"] = os.getloadavg()
    print(f"load average before {figures['load_before']}, after {figures['load_after']}")
    if args.json:
        print(json.dumps(figures))
    if failures:
        raise SystemExit("; ".join(failures))


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
