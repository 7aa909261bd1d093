"""Events per second the publisher sustains, and what the shadow runner adds to a caller's call.

Usage: ``python bench/publish.py [--bootstrap-servers HOST:PORT] [--events N] [--calls N]
[--rate R]`` (the broker defaults to ``MIGRATION_LEDGER_BOOTSTRAP_SERVERS`` or 127.0.0.1:9092;
topics get a fresh prefix, so nothing else is disturbed).

1. **Throughput** — N ``OperationRecorded`` events published as fast as one thread can call
   ``publish``, then ``flush``: events per second from the first ``publish`` until Kafka
   acknowledged the last one (through the journal, idempotent, ``acks="all"``), and the cost
   of one ``publish`` call on the caller's thread (p50, p99).
2. **The caller's path** — N calls of one seeded workload at R calls per second, made three
   ways against the same simulated pool (latency reported, not slept, so the pool itself costs
   the same tens of microseconds each time): the pool called directly; through the shadow
   runner with shadowing off (decision + two events published); and with every call shadowed
   (the other pool runs on the runner's threads). Added latency = runner minus direct, at
   p50 and p99.

Everything runs in this one process on a shared 2-core machine: read the figures as orders
of magnitude, and the three latency rows side by side. The p99 rows are dominated by CPython's
GIL hand-over (the publisher's and kafka-python's threads, the shadow thread) and, on an
oversubscribed machine, by the OS preempting a thread that holds it: compare the load average
printed with the figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python bench/publish.py`, this folder comes first on sys.path, and a script here
# named like a package (bench/ledger.py) would shadow the package itself.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ledger.events import OperationRecorded
from ledger.settings import Settings
from producers.publisher import Publisher
from producers.shadow import PoolError, Route, ShadowRunner
from producers.simulator import Simulator, Workload

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _event(n: int) -> OperationRecorded:
    return OperationRecorded(
        event_id=uuid.uuid4().hex,
        correlation_id=f"bench-{n}",
        session_id=f"session-{n % 500}",
        pool="v1",
        role="primary",
        operation="execute_program",
        outcome="ok",
        result={"exit_code": 0, "stdout": f"processed {n} rows", "files": ["a.csv", "b.csv"]},
        started_at=AT,
        duration_ms=12.5,
    )


def throughput(settings: Settings, events: int, journal: Path) -> None:
    batch = [_event(n) for n in range(events)]
    costs: list[float] = []
    with Publisher(settings, journal_path=journal) as publisher:
        publisher.publish(_event(-1))  # connect and learn the topic before timing
        publisher.flush(60)
        started = time.perf_counter()
        for event in batch:
            before = time.perf_counter()
            publisher.publish(event)
            costs.append(time.perf_counter() - before)
        published = time.perf_counter()
        delivered = publisher.flush(300)
        finished = time.perf_counter()
        stats = publisher.stats
    print(f"publisher: {events} events, delivered={delivered} {stats}")
    print(
        f"  sustained {events / (finished - started):,.0f} events/s end to end "
        f"(publish calls alone: {events / (published - started):,.0f}/s)"
    )
    print(
        f"  publish() on the caller's thread: p50 {_percentile(costs, 0.5) * 1e6:.1f} us, "
        f"p99 {_percentile(costs, 0.99) * 1e6:.1f} us, max {max(costs) * 1e3:.2f} ms"
    )


class _NoShadow:
    """The flag client's decision with shadowing switched off (the runner's other mode)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def route(
        self, session_id: str | None, *, correlation_id: str, environment: str | None = None
    ) -> Route:
        route = self.client.route(
            session_id, correlation_id=correlation_id, environment=environment
        )
        return Route(route.decision, shadow=False)


def _timed_calls(
    call: Callable[[str, dict[str, Any], str | None], Any], calls: list[Any], rate: float
) -> list[float]:
    durations: list[float] = []
    interval = 1.0 / rate
    next_at = time.perf_counter()
    for c in calls:
        before = time.perf_counter()
        with contextlib.suppress(PoolError):
            call(c.operation, c.args, c.session_id)
        after = time.perf_counter()
        durations.append(after - before)
        next_at += interval
        delay = next_at - after
        if delay > 0:
            time.sleep(delay)
    return durations


def callers_path(settings: Settings, count: int, rate: float, journal: Path) -> None:
    from producers.flag_client import FlagClient

    calls = Workload(seed=1, sessions=500, rate=rate).calls(count)
    sim = Simulator(seed=1)
    client = FlagClient(settings, environ={})  # default flag state: V1 primary, V2 shadowed
    rows: list[tuple[str, list[float], str]] = []
    rows.append(("direct pool call", _timed_calls(lambda o, a, s: sim.v1(o, a), calls, rate), ""))
    with Publisher(settings, journal_path=journal) as publisher:
        plain = ShadowRunner(sim.v1, sim.v2, _NoShadow(client), publisher)
        rows.append(("runner, no shadow", _timed_calls(plain.run, calls, rate), ""))
        shadowed = ShadowRunner(sim.v1, sim.v2, client, publisher)
        durations = _timed_calls(shadowed.run, calls, rate)
        stats = shadowed.close(timeout=10)
        note = f"shadow started {stats.shadow_started}, dropped {stats.shadow_dropped}"
        rows.append(("runner, every call shadowed", durations, note))
        publisher.flush(120)
    base50, base99 = _percentile(rows[0][1], 0.5), _percentile(rows[0][1], 0.99)
    print(f"caller's path: {count} calls at {rate:g}/s")
    for name, durations, note in rows:
        p50, p99 = _percentile(durations, 0.5), _percentile(durations, 0.99)
        added = (
            ""
            if name.startswith("direct")
            else (f"  added p50 {(p50 - base50) * 1e6:+.0f} us, p99 {(p99 - base99) * 1e6:+.0f} us")
        )
        print(
            f"  {name:<28} p50 {p50 * 1e6:7.0f} us  p99 {p99 * 1e6:7.0f} us  "
            f"mean {statistics.fmean(durations) * 1e6:7.0f} us{added}  {note}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("MIGRATION_LEDGER_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=3_000)
    parser.add_argument("--rate", type=float, default=300.0)
    options = parser.parse_args()
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    settings = Settings(bootstrap_servers=options.bootstrap_servers, topic_prefix=prefix)
    _ensure_topics(settings)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        throughput(settings, options.events, Path(tmp) / "throughput.jsonl")
        callers_path(settings, options.calls, options.rate, Path(tmp) / "callers.jsonl")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


def _ensure_topics(settings: Settings) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        admin.create_topics(
            {
                settings.topic(name): {"num_partitions": 4, "replication_factor": 1}
                for name in ("operations", "decisions")
            },
            wait_for_metadata=True,
        )
    finally:
        admin.close()


if __name__ == "__main__":
    main()
