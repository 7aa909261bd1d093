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
import functools
import json
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
from producers.publisher import ProcessPublisher, Publisher
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


def throughput(settings: Settings, events: int, journal: Path) -> dict[str, Any]:
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
    return {
        "events_per_s": round(events / (finished - started)),
        "publish_p50_us": round(_percentile(costs, 0.5) * 1e6, 2),
        "publish_p99_us": round(_percentile(costs, 0.99) * 1e6, 2),
    }


class _NoShadow:
    """The flag client's decision with shadowing switched off (the runner's other mode)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def route(
        self,
        session_id: str | None,
        *,
        correlation_id: str,
        environment: str | None = None,
        breaker_open: bool = False,
    ) -> Route:
        route = self.client.route(
            session_id,
            correlation_id=correlation_id,
            environment=environment,
            breaker_open=breaker_open,
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


def callers_path(settings: Settings, count: int, rate: float, journal: Path) -> dict[str, Any]:
    from producers.flag_client import FlagClient

    calls = Workload(seed=1, sessions=500, rate=rate).calls(count)
    sim = Simulator(seed=1)
    client = FlagClient(settings, environ={})  # default flag state: V1 primary, V2 shadowed
    rows: list[tuple[str, list[float], str]] = []
    direct = _timed_calls(lambda o, a, s: sim.v1(o, a), calls, rate)
    # Before: the publisher's threads and the shadow threads in the caller's process.
    with Publisher(settings, journal_path=journal) as publisher:
        plain = ShadowRunner(sim.v1, sim.v2, _NoShadow(client), publisher)
        rows.append(("threads: runner, no shadow", _timed_calls(plain.run, calls, rate), ""))
        shadowed = ShadowRunner(sim.v1, sim.v2, client, publisher)
        durations = _timed_calls(shadowed.run, calls, rate)
        stats = shadowed.close(timeout=10)
        note = f"shadow started {stats.shadow_started}, dropped {stats.shadow_dropped}"
        rows.append(("threads: every call shadowed", durations, note))
        publisher.flush(120)
    # After: publisher and shadows in a child process; the caller decides and writes a pipe.
    child_journal = journal.with_name("child-" + journal.name)
    pools = functools.partial(Simulator, seed=1)
    with ProcessPublisher(settings, journal_path=child_journal, pools=pools) as child:
        plain = ShadowRunner(sim.v1, sim.v2, _NoShadow(client), child)
        rows.append(("child: runner, no shadow", _timed_calls(plain.run, calls, rate), ""))
        shadowed = ShadowRunner(sim.v1, sim.v2, client, child)
        started = time.perf_counter()
        durations = _timed_calls(shadowed.run, calls, rate)
        elapsed = time.perf_counter() - started
        stats = shadowed.close(timeout=10)
        note = f"shadow started {stats.shadow_started}, dropped {stats.shadow_dropped}"
        rows.append(("child: every call shadowed", durations, note))
        delivered = child.flush(120)
        child_stats = child.stats
    direct += _timed_calls(lambda o, a, s: sim.v1(o, a), calls, rate)  # before and after
    base50, base99 = _percentile(direct, 0.5), _percentile(direct, 0.99)
    print(f"caller's path: {count} calls at {rate:g}/s")
    print(f"  {'direct pool call':<30} p50 {base50 * 1e6:7.0f} us  p99 {base99 * 1e6:7.0f} us")
    figures: dict[str, Any] = {"calls_per_s": round(count / elapsed, 1)}
    for name, durations, note in rows:
        p50, p99 = _percentile(durations, 0.5), _percentile(durations, 0.99)
        print(
            f"  {name:<30} p50 {p50 * 1e6:7.0f} us  p99 {p99 * 1e6:7.0f} us  "
            f"mean {statistics.fmean(durations) * 1e6:7.0f} us  "
            f"added p50 {(p50 - base50) * 1e6:+.0f} us, p99 {(p99 - base99) * 1e6:+.0f} us  "
            f"{note}"
        )
        key = name.split(":")[0] + ("_shadowed" if "shadowed" in name else "_no_shadow")
        figures[f"{key}_added_p50_ms"] = round((p50 - base50) * 1e3, 3)
        figures[f"{key}_added_p99_ms"] = round((p99 - base99) * 1e3, 3)
    print(f"  child publisher: delivered={delivered} {child_stats}")
    figures["caller_added_p50_ms"] = figures["child_shadowed_added_p50_ms"]
    figures["caller_added_p99_ms"] = figures["child_shadowed_added_p99_ms"]
    figures["direct_p50_ms"] = round(base50 * 1e3, 3)
    figures["direct_p99_ms"] = round(base99 * 1e3, 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("MIGRATION_LEDGER_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=3_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    options = parser.parse_args()
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    settings = Settings(bootstrap_servers=options.bootstrap_servers, topic_prefix=prefix)
    _ensure_topics(settings)
    load_start = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load_start:.1f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        figures = throughput(settings, options.events, Path(tmp) / "throughput.jsonl")
        figures |= callers_path(settings, options.calls, options.rate, Path(tmp) / "callers.jsonl")
    load_end = os.getloadavg()[0]
    print(f"load average {load_end:.1f} at the end")
    if options.json:
        figures |= {
            "load_average_start": round(load_start, 2),
            "load_average_end": round(load_end, 2),
        }
        print(json.dumps(figures, sort_keys=True))


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
