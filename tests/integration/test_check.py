"""`migration-ledger check` against the real broker: topics before and after `ensure`, a flag
log with foreign records, and a real worker's liveness endpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ledger.cli.app import app
from ledger.kafka.broker import free_ports
from ledger.kafka.topics import TOPIC_SPECS, topic_name
from ledger.settings import Settings

CLI = str(Path(sys.executable).parent / "migration-ledger")


def run_check(settings: Settings, *extra: str) -> tuple[int, dict[str, dict[str, str]]]:
    """Exit code and the JSON lines by check name."""
    result = CliRunner().invoke(
        app,
        [
            "check",
            "--bootstrap-servers",
            settings.bootstrap_servers,
            "--topic-prefix",
            settings.topic_prefix,
            "--duckdb",
            str(settings.duckdb),
            "--format",
            "json",
            *extra,
        ],
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    answer: dict[str, Any] = json.loads(result.stdout)
    return result.exit_code, {line["check"]: line for line in answer["checks"]}


def test_check_fails_naming_every_missing_topic_until_ensure_creates_them(
    settings: Settings,
) -> None:
    code, lines = run_check(settings)
    assert code == 1
    assert lines["broker"]["status"] == "PASS"
    assert lines["topics"]["status"] == "FAIL"
    expected = [topic_name(settings, spec.logical) for spec in TOPIC_SPECS]
    for name in expected:
        assert name in lines["topics"]["figure"]
    assert lines["flag log"]["status"] == "SKIP"

    ensured = CliRunner().invoke(
        app,
        [
            "topics",
            "ensure",
            "--bootstrap-servers",
            settings.bootstrap_servers,
            "--topic-prefix",
            settings.topic_prefix,
        ],
    )
    assert ensured.exit_code == 0, ensured.output

    code, lines = run_check(settings)
    assert code == 0, lines
    assert lines["topics"]["status"] == "PASS"
    assert f"all {len(expected)} present" in lines["topics"]["figure"]
    # An empty flag log and no sink yet are worth a look, not a stop.
    assert lines["flag log"]["status"] == "WARN"
    assert "initial state" in lines["flag log"]["figure"]
    assert lines["sink"]["status"] == "WARN"
    assert lines["worker"]["status"] == "SKIP"


def test_check_never_creates_a_topic(settings: Settings) -> None:
    from kafka.admin import KafkaAdminClient

    run_check(settings)
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        assert not [t for t in admin.list_topics() if t.startswith(settings.topic_prefix)]
    finally:
        admin.close()


def test_records_in_the_flag_log_that_are_not_flag_events_fail_the_check(
    settings: Settings,
) -> None:
    from kafka import KafkaProducer

    from ledger.kafka.admin import ensure_topics

    ensure_topics(settings)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    try:
        producer.send(settings.topic("flag_events"), key=b"v2_migration", value=b"{not json")
        producer.flush(timeout=10)
    finally:
        producer.close()

    code, lines = run_check(settings)
    assert code == 1
    assert lines["flag log"]["status"] == "FAIL"
    assert "1 record(s)" in lines["flag log"]["figure"]


def test_dead_worker_url_fails_the_worker_line(settings: Settings) -> None:
    (port,) = free_ports(1)
    code, lines = run_check(settings, "--worker-url", f"http://127.0.0.1:{port}")
    assert code == 1
    assert lines["worker"]["status"] == "FAIL"
    assert f"127.0.0.1:{port}" in lines["worker"]["figure"]


def test_running_worker_answers_the_liveness_check(settings: Settings, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    env = {
        **os.environ,
        "MIGRATION_LEDGER_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "MIGRATION_LEDGER_TOPIC_PREFIX": settings.topic_prefix,
        "MIGRATION_LEDGER_CACHE_DIR": str(tmp_path / "cache"),
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [CLI, "worker", "--web-port", str(port), "--loglevel", "warning"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url + "/healthz", worker, log)
        code, lines = run_check(settings, "--worker-url", url)
        assert lines["worker"]["status"] in {"PASS", "WARN"}, lines["worker"]
        assert f"{url} alive" in lines["worker"]["figure"]
        assert code == 0, lines
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)


def _wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"worker exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"worker did not answer {url} in 60 s:\n{log.read_text()[-3000:]}")


def test_sink_line_shows_rows_last_commit_and_lag_against_the_topics(settings: Settings) -> None:
    from kafka import KafkaProducer

    from ledger.kafka.admin import ensure_topics
    from ledger.store.writer import LedgerWriter, SourceRecord

    ensure_topics(settings)
    topic = settings.topic("dead_letters")
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    try:
        for i in range(5):
            producer.send(topic, value=b"bytes %d" % i, partition=0)
        producer.flush(timeout=10)
    finally:
        producer.close()
    # The ledger holds offsets 0..2 of that partition, as a sink stopped there would.
    with LedgerWriter(settings.duckdb, fsync=False) as writer:
        writer.write_batch(SourceRecord(topic, 0, i, None, b"bytes %d" % i) for i in range(3))

    code, lines = run_check(settings)
    assert code == 0, lines
    assert lines["sink"]["status"] == "PASS", lines["sink"]
    assert "3 row(s)" in lines["sink"]["figure"]
    assert "lag 2" in lines["sink"]["figure"]

    code, lines = run_check(settings, "--max-sink-lag", "1")
    assert lines["sink"]["status"] == "WARN"
    assert code == 0


def test_flag_log_written_by_the_rules_passes_and_a_tampered_event_fails(
    settings: Settings,
) -> None:
    from datetime import UTC, datetime

    from kafka import KafkaProducer

    from ledger.events import encode_event
    from ledger.flags import Enable, SetPercentage, apply, decide_command, initial_state
    from ledger.kafka.admin import ensure_topics

    ensure_topics(settings)
    state = initial_state(settings.flag)
    events = []
    for command in (
        Enable(command_id="c1", flag=settings.flag, actor="ops", reason="go"),
        SetPercentage(
            command_id="c2", flag=settings.flag, actor="ops", reason="stage 1", percentage_bp=500
        ),
    ):
        event = decide_command(state, command, at=datetime.now(UTC))
        assert event is not None
        events.append(event)
        state = apply(state, event)
    topic = settings.topic("flag_events")
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    try:
        for event in events:
            producer.send(topic, key=settings.flag.encode(), value=encode_event(event))
        producer.flush(timeout=10)

        code, lines = run_check(settings)
        assert code == 0, lines
        assert lines["flag log"]["status"] == "PASS", lines["flag log"]
        assert "v2, V2 on, rollout 5 %" in lines["flag log"]["figure"]

        # Someone appends a version 3 by hand: linked to version 2, but it cannot carry the
        # hash of its own content without the writer's rules, so it keeps a copied one.
        forged = events[-1].model_copy(
            update={
                "event_id": "forged",
                "version": 3,
                "prev_hash": events[-1].hash,
                "v2_rollout_bp": 10000,
            }
        )
        producer.send(topic, key=settings.flag.encode(), value=encode_event(forged))
        producer.flush(timeout=10)
    finally:
        producer.close()

    code, lines = run_check(settings)
    assert code == 1
    assert lines["flag log"]["status"] == "FAIL"
    assert "version 3" in lines["flag log"]["figure"]
