"""A simulated migration from shadow to 100 % on the real broker, then the last mile:
``report cleanup`` judges whether V1 may go, ``report post-migration`` shows the simulator's
known latency change (V1's median 45 ms, V2's 28 ms: p50 about 38 % lower).

The worker (flag log writer, pairing) and the sink run as subprocesses; the traffic is
``migration-ledger simulate`` (the real shadow runner and flag client); the flag is moved with
``migration-ledger flags set``, as an operator would.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_support import CLI, Worker

from ledger.kafka.admin import ensure_topics
from ledger.settings import Settings

SIMULATED = 300
SIMULATOR_P50_CHANGE = 28.0 / 45.0 - 1  # producers/simulator.py DEFAULT_V2 / DEFAULT_V1 medians


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "MIGRATION_LEDGER_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "MIGRATION_LEDGER_TOPIC_PREFIX": settings.topic_prefix,
        "MIGRATION_LEDGER_DUCKDB": str(settings.duckdb),
        "MIGRATION_LEDGER_FLAG": settings.flag,
    }


def cli(settings: Settings, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def running(settings: Settings, tmp_path: Path) -> Iterator[Worker]:
    ensure_topics(settings)
    worker = Worker(settings, tmp_path, pairing_timeout=3.0)
    worker.start()
    log = (tmp_path / "sink.log").open("ab")
    sink = subprocess.Popen(
        [CLI, "sink", "--quiet", "--batch-seconds", "0.2", "--no-fsync"],
        env=_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield worker
    finally:
        sink.terminate()
        sink.wait(timeout=30)
        log.close()
        worker.stop()


def _set(settings: Settings, name: str, value: str) -> None:
    done = cli(
        settings, "flags", "set", name, value, "--reason", "last-mile test", "--timeout", "90"
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _primary_operations(settings: Settings, pool: str) -> int:
    done = cli(
        settings,
        "sql",
        f"SELECT count(*) AS n FROM operations WHERE pool = '{pool}' AND role = 'primary'",
        "-f",
        "json",
    )
    if done.returncode != 0:
        return 0
    return int(json.loads(done.stdout)[0]["n"])


def _until(settings: Settings, pool: str, n: int, worker: Worker, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while _primary_operations(settings, pool) < n:
        worker.assert_running()
        if time.monotonic() > deadline:
            raise AssertionError(f"the ledger never held {n} {pool} primaries\n{worker.tail()}")
        time.sleep(1)


def test_a_simulated_migration_reaches_100_percent_and_the_last_mile_reports_judge_it(
    settings: Settings, running: Worker
) -> None:
    simulate = ("simulate", "-n", str(SIMULATED), "--rate", "200", "--shadow-timeout", "2")
    # Shadow run: V1 primary (the flag starts disabled), V2 in the shadow.
    done = cli(settings, *simulate, "--seed", "1", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    _until(settings, "v1", SIMULATED, running)
    # The ramp, in one step to 100 %, then the shadow off: V1 no longer runs.
    _set(settings, "v2_pool_enabled", "true")
    _set(settings, "v2_rollout_percentage", "100")
    _set(settings, "shadow_mode_enabled", "false")
    done = cli(settings, *simulate, "--seed", "2", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    deadline = time.monotonic() + 240
    while _primary_operations(settings, "v1") + _primary_operations(settings, "v2") < 2 * SIMULATED:
        running.assert_running()
        assert time.monotonic() < deadline, running.tail()
        time.sleep(1)
    late_v1 = _primary_operations(settings, "v1") - SIMULATED
    now = _primary_operations(settings, "v2")

    # Found by this test: a new router decided its first requests before its flag client had
    # read the flag log (flag version 0: V2 off), so V1 served a few requests after V2 reached
    # 100 %. Routers now wait until the client has read the log (FlagClient.wait_until_current).
    assert late_v1 == 0
    cleanup = cli(settings, "report", "cleanup", "--min-days", "0", "-f", "json")
    document = json.loads(cleanup.stdout)
    lines = {r["check"]: (r["status"], r["figure"]) for r in document["sections"]["checklist"]}
    assert cleanup.returncode == 0, lines
    assert {status for status, _ in lines.values()} == {"PASS"}
    assert lines["v2_at_100_percent"][0] == "PASS"
    assert lines["shadow_off"][0] == "PASS"

    post = cli(settings, "report", "post-migration", "-f", "json", "--seed", "1")
    assert post.returncode == 0, post.stderr
    report = json.loads(post.stdout)
    periods = {r["period"]: r["operations"] for r in report["sections"]["periods"]}
    assert periods == {"baseline": SIMULATED, "now": now}
    p50 = [r for r in report["sections"]["changes"] if r["metric"] == "p50_ms"]
    assert p50
    for row in p50:
        assert row["ci_low"] <= SIMULATOR_P50_CHANGE <= row["ci_high"], row
        assert row["verdict"] == "improvement", row
