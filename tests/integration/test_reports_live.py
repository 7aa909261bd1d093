"""Reports, replay, audit and reclassify while the sink writes, on the real broker.

The events are the report tests' small parallel run (real flag log, real decisions, real
comparisons), published in chunks to the ledger topics while ``migration-ledger sink`` runs
as a subprocess; every command runs as its own process beside it, as people would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.events import Event, encode_event
from ledger.kafka.admin import ensure_topics
from ledger.settings import Settings

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "reports"))
from report_factories import Ledger, build

CLI = str(Path(sys.executable).parent / "migration-ledger")
TOPIC_OF = {
    "OperationRecorded": "operations",
    "ComparisonRecorded": "comparisons",
    "FlagChanged": "flag_events",
    "RolloutDecided": "decisions",
}


def key_of(event: Any) -> bytes:
    if event.type == "FlagChanged":
        return str(event.flag).encode()
    if event.type == "RolloutDecided":
        return str(event.session_id or event.correlation_id).encode()
    return str(event.correlation_id).encode()


def publish(settings: Settings, events: list[Event]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    try:
        for event in events:
            topic = settings.topic(TOPIC_OF[event.type])  # type: ignore[attr-defined]
            producer.send(topic, key=key_of(event), value=encode_event(event))
        producer.flush(timeout=60)
    finally:
        producer.close()


def run(settings: Settings, *args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [CLI, *args, "--duckdb", str(settings.duckdb)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def until(done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def sink(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    ensure_topics(settings)
    env = {
        **os.environ,
        "MIGRATION_LEDGER_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "MIGRATION_LEDGER_TOPIC_PREFIX": settings.topic_prefix,
        "MIGRATION_LEDGER_DUCKDB": str(settings.duckdb),
    }
    log = (tmp_path / "sink.log").open("ab")
    process = subprocess.Popen(
        [CLI, "sink", "--quiet", "--batch-seconds", "0.2", "--compact-every", "2", "--no-fsync"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        log.close()


def summary(settings: Settings) -> dict[str, Any]:
    code, out, err = run(settings, "report", "summary", "--format", "json")
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    return document


def operations_in(document: dict[str, Any]) -> int:
    return sum(row["operations"] for row in document["sections"]["pools"])


def test_reports_replay_and_audit_run_while_the_sink_writes(
    settings: Settings, sink: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    ledger: Ledger = build(pairs=300)
    traffic: list[Event] = [*ledger.decisions, *ledger.operations, *ledger.comparisons]
    traffic.sort(key=lambda e: getattr(e, "at", None) or e.started_at)  # type: ignore[attr-defined]
    publish(settings, list(ledger.flag_changes))
    chunks = [traffic[i : i + 400] for i in range(0, len(traffic), 400)]
    seen: list[int] = []
    published: list[Event] = []
    for chunk in chunks:
        publish(settings, chunk)
        published += chunk
        if not (settings.duckdb / "LEDGER").exists():
            until(lambda: (settings.duckdb / "LEDGER").exists(), 60, "the ledger")
        assert sink.poll() is None, "the sink died"
        document = summary(settings)
        seen.append(operations_in(document))
        # Every reader works mid-stream on whatever the sink has committed so far.
        code, out, err = run(settings, "audit", "--sample", "50", "--format", "json")
        assert code == 0, out + err
        assert json.loads(out)["ok"] is True
    assert seen == sorted(seen), "a later report saw fewer operations than an earlier one"
    assert seen[-1] <= len(ledger.operations)

    # Once the sink has caught up, a report sees exactly what was published.
    until(
        lambda: operations_in(summary(settings)) == len(ledger.operations),
        90,
        "the sink to store every operation",
    )
    assert sink.poll() is None
    decision = ledger.decisions[-1]
    code, out, err = run(
        settings, "replay", "--correlation-id", decision.correlation_id, "-f", "json"
    )
    assert code == 0, out + err
    assert json.loads(out)["decision"]["event_id"] == decision.event_id
    code, out, err = run(settings, "audit", "--sample", "1000", "--format", "json")
    assert code == 0, out + err
    result = json.loads(out)
    assert result["decisions"] == len(ledger.decisions)
    assert result["sample_size"] == len(ledger.decisions)
    code, out, err = run(settings, "sql", "SELECT count(*) AS n FROM comparisons", "-f", "json")
    assert code == 0, err
    assert json.loads(out)[0]["n"] == len(ledger.comparisons)
    code, out, err = run(
        settings, "report", "rollout", "--format", "csv", "--section", "flag_history"
    )
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1 + len(ledger.flag_changes)
    page = tmp_path / "daily.html"
    code, _, err = run(settings, "report", "daily", "--format", "html", "--out", str(page))
    assert code == 0, err
    assert 'data-chart="categories"' in page.read_text()
    rules = tmp_path / "rules.toml"
    rules.write_text('version = "loose"\n[compare]\nignore = ["value", "name"]\n')
    code, out, err = run(settings, "reclassify", "--rules", str(rules), "-f", "json")
    assert code == 0, err
    assert json.loads(out)["pairs"] == len(ledger.comparisons)
