"""Two workers in one consumer group, one SIGKILLed mid-run: the results of one worker.

Every correlation id is classified once (after deduplication by comparison id), and the
health windows count each execution once, however often it was delivered, over every
partition: the same counts as one worker given the same input.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline_support import TopicReader, Worker, operation, publish

from ledger.events import encode_event
from ledger.kafka.admin import ensure_topics
from ledger.settings import Settings

PAIRS = 300
PAIRING_TIMEOUT = 3.0
#: Short windows so the test sees several of them close; grace covers publishing delays.
HEALTH = {"MIGRATION_LEDGER_HEALTH_WINDOW": "2", "MIGRATION_LEDGER_HEALTH_GRACE": "3"}


@dataclass
class Input:
    messages: list[tuple[bytes, bytes]] = field(default_factory=list)
    expected: dict[str, str] = field(default_factory=dict)  # correlation id -> category
    executions: set[str] = field(default_factory=set)  # distinct event ids


def stream(pairs: int, start: datetime, *, seed: int = 5) -> Input:
    """Adjacent halves, some shadows missing, 5 % of the halves sent twice (same event id)."""
    rng = random.Random(seed)
    out = Input()
    for n in range(pairs):
        cid = f"sc-{n:04d}"
        at = start + timedelta(milliseconds=40 * n)
        pools = ["v1"] if n % 37 == 5 else ["v1", "v2"]
        out.expected[cid] = "match" if len(pools) == 2 else "shadow_missing"
        for pool in pools:
            event = operation(cid, pool, n, {"result": {"rows": n}}).model_copy(
                update={"started_at": at}
            )
            out.executions.add(event.event_id)
            out.messages.append((cid.encode(), encode_event(event)))
    for _ in range(round(len(out.messages) * 0.05)):
        original = rng.randrange(len(out.messages))
        out.messages.insert(
            min(len(out.messages), original + rng.randrange(1, 20)), out.messages[original]
        )
    return out


def windows(reader: TopicReader) -> dict[tuple[str, str], int]:
    """(pool, window start) -> executions of the one operation, each window once.

    Windows without executions are left out: V2's hold the comparisons too, counted at the
    time they were compared, which differs from one run to the next.
    """
    seen: dict[str, tuple[tuple[str, str], int]] = {}
    for value in reader.values:
        if (
            value.get("type") == "HealthAssessed"
            and value["operation"] == "execute_program"
            and value["count"]
        ):
            seen.setdefault(
                value["event_id"], ((value["pool"], value["window_start"]), value["count"])
            )
    return dict(seen.values())


def until(reader: TopicReader, done: Callable[[], bool], worker: Worker, timeout: float) -> None:
    reader.until(done, timeout=timeout, worker=worker)


def test_two_workers_one_killed_give_the_results_of_one_worker(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings)
    given = stream(PAIRS, datetime.now(UTC))
    first, second = (
        Worker(settings, _dir(tmp_path / name), pairing_timeout=PAIRING_TIMEOUT, env=HEALTH)
        for name in ("a", "b")
    )
    comparisons = TopicReader(settings.bootstrap_servers, settings.topic("comparisons"))
    health = TopicReader(settings.bootstrap_servers, settings.topic("health"))
    first.start()
    second.start()
    try:
        half = len(given.messages) // 2
        publish(settings.bootstrap_servers, settings.topic("operations"), given.messages[:half])
        until(comparisons, lambda: len(comparisons.values) >= PAIRS // 4, second, 180)
        first.kill()  # mid-run: no shutdown, no final commit
        killed_at = len({v["comparison_id"] for v in comparisons.values})
        publish(settings.bootstrap_servers, settings.topic("operations"), given.messages[half:])

        def classified() -> int:
            return len({v["comparison_id"] for v in comparisons.values})

        until(comparisons, lambda: classified() >= PAIRS, second, 180)
        until(
            health,
            lambda: sum(windows(health).values()) >= len(given.executions),
            second,
            120,
        )
        health.poll(5.0)  # nothing more may follow
        assert second.stop() == 0
    finally:
        first.stop()
        second.stop()
        comparisons.close()

    assert killed_at < PAIRS
    categories: dict[str, set[tuple[str, str]]] = {}
    for value in comparisons.values:
        categories.setdefault(value["comparison_id"], set()).add(
            (value["correlation_id"], value["category"])
        )
    assert all(len(copies) == 1 for copies in categories.values())  # copies are the same
    assert {cid: cat for copies in categories.values() for cid, cat in copies} == given.expected
    two_workers = windows(health)
    health.close()
    assert sum(two_workers.values()) == len(given.executions)  # duplicates counted once

    # One worker, same input, its own topics.
    alone = Settings(
        bootstrap_servers=settings.bootstrap_servers,
        topic_prefix=settings.topic_prefix + "one.",
        duckdb=settings.duckdb,
    )
    ensure_topics(alone)
    worker = Worker(alone, _dir(tmp_path / "one"), pairing_timeout=PAIRING_TIMEOUT, env=HEALTH)
    reader = TopicReader(alone.bootstrap_servers, alone.topic("health"))
    worker.start()
    try:
        publish(alone.bootstrap_servers, alone.topic("operations"), given.messages)
        until(reader, lambda: sum(windows(reader).values()) >= len(given.executions), worker, 180)
        reader.poll(3.0)
        assert worker.stop() == 0
    finally:
        worker.stop()
        reader.close()
    assert windows(reader) == two_workers


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
