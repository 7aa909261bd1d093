"""Health windows, the switchover controller and automatic rollback on the real broker.

Each test runs a worker at demo speed (2 s health windows) with the demo plan's stages at 4 s
soaks (``TEST_PLAN``, given as a TOML plan file) and publishes live V1/V2 traffic; the
switchover is driven through the command line. Waits are on what the worker published (health
windows, switchover records, flag events), never on a fixed pause.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pipeline_support import Worker
from switchover_support import (
    HEALTH_ENV,
    TEST_PLAN,
    Traffic,
    cli,
    events_of,
    plan_toml,
    start_worker,
    summary,
    wait_for,
)

from ledger.events import FlagChanged, HealthAssessed, RollbackTriggered, SwitchoverRecorded
from ledger.health import ALL_OPERATIONS
from ledger.kafka.admin import ensure_topics
from ledger.settings import Settings
from ledger.switchover import CONTROLLER_ACTOR

WINDOW = timedelta(seconds=float(HEALTH_ENV["MIGRATION_LEDGER_HEALTH_WINDOW"]))
SOAK = timedelta(seconds=TEST_PLAN.stages[0].soak_s)
#: How long a command waits for the flag log writer's answer: the CLI's 15 s default is for
#: people at a terminal; a worker on a loaded shared machine has been seen to need more.
ANSWER = ("--timeout", "60")
# The waits' timeouts below bound a hang; they are generous because faust's offset commits were
# seen taking 25-30 s each at a load average of 15 on 2 cores. A passing run waits far less.


@pytest.fixture
def demo_speed(monkeypatch: pytest.MonkeyPatch, settings: Settings, tmp_path: Path) -> Settings:
    for name, value in HEALTH_ENV.items():
        monkeypatch.setenv(name, value)
    ensure_topics(settings)
    (tmp_path / "plan.toml").write_text(plan_toml(TEST_PLAN))
    return settings


def _records(settings: Settings) -> list[SwitchoverRecorded]:
    return events_of(settings, SwitchoverRecorded, ["health"])


def _flag_changes(settings: Settings) -> list[FlagChanged]:
    return events_of(settings, FlagChanged, ["flag_events"])


def _closed_window_from(settings: Settings, start: datetime) -> list[HealthAssessed]:
    """The closed all-operations windows that began at ``start`` or later (event time)."""
    return [
        w
        for w in events_of(settings, HealthAssessed, ["health"])
        if w.operation == ALL_OPERATIONS and w.window_start >= start
    ]


def _start(settings: Settings, tmp_path: Path, worker: Worker) -> None:
    """``switchover start`` once the worker is at work: its first closed health window shows
    it consumes the traffic and publishes (the flag log writer runs in the same worker)."""
    wait_for(
        lambda: events_of(settings, HealthAssessed, ["health"]),
        timeout=180,
        worker=worker,
        what="the worker's first health window",
    )
    plan = str(tmp_path / "plan.toml")
    done = cli(
        settings, "switchover", "start", "--plan", plan, "--reason", "integration test", *ANSWER
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_healthy_run_ramps_to_100_percent_and_a_v1_spike_does_not_stop_it(
    demo_speed: Settings, tmp_path: Path
) -> None:
    settings = demo_speed
    worker = start_worker(settings, tmp_path)
    traffic = Traffic(settings)
    traffic.start()
    try:
        _start(settings, tmp_path, worker)
        wait_for(
            lambda: [r for r in _records(settings) if r.action == "advanced" and r.stage >= 2],
            timeout=180,
            worker=worker,
            what="stage 3",
        )
        spike_at = traffic.switch("v1_spike")
        wait_for(
            lambda: [r for r in _records(settings) if r.action == "advanced" and r.at > spike_at],
            timeout=120,
            worker=worker,
            what="an advance during the V1 spike",
        )
        traffic.switch("healthy")
        records = wait_for(
            lambda: (rs := _records(settings)) and rs[-1].action == "completed" and rs,
            timeout=240,
            worker=worker,
            what="completion",
        )
        status = cli(settings, "switchover", "status", "--json")
    finally:
        traffic.stop()
        worker.stop()

    advanced = [r for r in records if r.action == "advanced"]
    assert [r.stage for r in advanced] == [1, 2, 3, 4, 5], summary(records)
    assert "rolled_back" not in {r.action for r in records}
    for record in advanced:
        assert isinstance(record.gates["samples"], int)
        assert record.gates["samples"] >= TEST_PLAN.min_samples
        assert record.gates["judge_verdict"] in ("pass", "marginal")
        assert record.gates["rollback_triggers"] == 0
        soak = record.gates["soak_s"]
        assert isinstance(soak, float)
        assert soak >= SOAK.total_seconds()
        assert record.command_id is not None
    ramp = [c.v2_rollout_bp for c in _flag_changes(settings) if c.command == "set_percentage"]
    assert ramp == [s.percentage_bp for s in TEST_PLAN.stages]
    assert '"status": "completed"' in status.stdout


def _rolled_back_by_trigger(settings: Settings, after: datetime) -> FlagChanged | None:
    for change in _flag_changes(settings):
        if change.command == "rollback" and change.at > after and change.cause_id:
            return change
    return None


def _assert_evidence(
    settings: Settings, rollback: FlagChanged, spike_at: datetime, trigger: str
) -> None:
    windows = {w.event_id: w for w in events_of(settings, HealthAssessed, ["health"])}
    cause = windows[rollback.cause_id or ""]
    assert cause.pool == "v2"
    assert trigger in cause.triggers
    # Within two windows of the spike's start (event time: the trigger's window began
    # at most one window after the spike did).
    assert cause.window_end > spike_at
    assert cause.window_start <= spike_at + WINDOW
    snapshots = [
        s
        for s in events_of(settings, RollbackTriggered, ["health"])
        if s.cause_id == cause.event_id
    ]
    assert snapshots
    assert snapshots[0].command_id == rollback.command_id
    assert snapshots[0].metrics  # the figures at that moment
    if cause.compared_with is not None:
        assert windows[cause.compared_with].pool == "v1"


def test_v2_error_spike_and_latency_regression_are_rolled_back_with_evidence(
    demo_speed: Settings, tmp_path: Path
) -> None:
    settings = demo_speed
    worker = start_worker(settings, tmp_path)
    traffic = Traffic(settings)
    traffic.start()
    try:
        _start(settings, tmp_path, worker)
        wait_for(
            lambda: [r for r in _records(settings) if r.action == "advanced"],
            timeout=120,
            worker=worker,
            what="the first advance",
        )
        spike_at = traffic.switch("v2_errors")
        errors_rollback = wait_for(
            lambda: _rolled_back_by_trigger(settings, spike_at),
            timeout=60,
            worker=worker,
            what="the rollback of the error spike",
        )
        traffic.switch("healthy")
        wait_for(
            lambda: [r for r in _records(settings) if r.action == "rolled_back"],
            timeout=40,
            worker=worker,
            what="the controller seeing the rollback",
        )
        _assert_evidence(settings, errors_rollback, spike_at, "error_rate")

        # Resume only once every window of the spike has closed: a V2 window that began after
        # the traffic turned healthy again is closed (windows close in order of their end).
        healthy_at = traffic.changed_at
        wait_for(
            lambda: [w for w in _closed_window_from(settings, healthy_at) if w.pool == "v2"],
            timeout=60,
            worker=worker,
            what="a closed V2 window of healthy traffic",
        )
        resumed = cli(settings, "switchover", "resume", "--reason", "fixed the errors", *ANSWER)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        wait_for(
            lambda: (c := _flag_changes(settings)) and c[-1].v2_pool_enabled,
            timeout=60,
            worker=worker,
            what="V2 on again",
        )
        slow_at = traffic.switch("v2_slow")
        latency_rollback = wait_for(
            lambda: _rolled_back_by_trigger(settings, slow_at),
            timeout=60,
            worker=worker,
            what="the rollback of the latency regression",
        )
        _assert_evidence(settings, latency_rollback, slow_at, "p99_latency")
    finally:
        traffic.stop()
        worker.stop()


def test_a_restart_mid_soak_resumes_the_soak_and_a_rollback_by_hand_is_respected(
    demo_speed: Settings, tmp_path: Path
) -> None:
    settings = demo_speed
    worker = start_worker(settings, tmp_path)
    traffic = Traffic(settings)
    traffic.start()
    try:
        _start(settings, tmp_path, worker)
        first = wait_for(
            lambda: [r for r in _records(settings) if r.action == "advanced"],
            timeout=120,
            worker=worker,
            what="the first advance",
        )[0]
        applied = wait_for(
            lambda: [c for c in _flag_changes(settings) if c.command_id == first.command_id],
            timeout=40,
            worker=worker,
            what="the stage command applied",
        )[0]
        soak_started = applied.at
        time.sleep(SOAK.total_seconds() / 3)
        worker.kill()
        worker.start()
        following = wait_for(
            lambda: [
                r
                for r in _records(settings)
                if r.action == "advanced" and r.stage == first.stage + 1
            ],
            timeout=180,
            worker=worker,
            what="the advance after the restart",
        )
        # Same stage, same soak: it began when the stage's command applied, before the kill.
        assert following[0].gates["soak_started_at"] == soak_started.isoformat()
        assert following[0].at >= soak_started + SOAK
        assert (
            len(
                [r for r in _records(settings) if r.action == "advanced" and r.stage == first.stage]
            )
            == 1
        )

        by_hand = cli(
            settings, "rollback", "--reason", "operator says no", "--actor", "alice", *ANSWER
        )
        assert by_hand.returncode == 0, by_hand.stdout + by_hand.stderr
        manual = next(c for c in reversed(_flag_changes(settings)) if c.command == "rollback")
        records = wait_for(
            lambda: [r for r in _records(settings) if r.action == "rolled_back"],
            timeout=40,
            worker=worker,
            what="the controller respecting the rollback",
        )
        assert "alice" in records[0].reason
        # The controller would have advanced by now: the worker has closed windows covering
        # two soaks after the rollback (event time, so a slow machine waits longer, not less).
        wait_for(
            lambda: _closed_window_from(settings, manual.at + 2 * SOAK),
            timeout=120,
            worker=worker,
            what="windows two soaks after the rollback",
        )
        later = [c for c in _flag_changes(settings) if c.version > manual.version]

        # By hand from here: resume (first stage again), pause, promote while paused.
        # (pause only writes a record; it waits for no answer and takes no --timeout)
        # Traffic stops first: with no new windows the resumed stage cannot pass its gates, so
        # the controller does not advance between resume and pause however slowly the two
        # commands start (seen on a loaded machine: the 4 s soak passed in between).
        traffic.stop()
        for args in (("resume", "--reason", "go on", *ANSWER), ("pause", "--reason", "hold on")):
            done = cli(settings, "switchover", *args)
            assert done.returncode == 0, done.stdout + done.stderr
        status = cli(settings, "switchover", "status", "--json")
        promoted = cli(settings, "switchover", "promote", "--reason", "confident", *ANSWER)
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        by_hand_records = _records(settings)
    finally:
        traffic.stop()
        worker.stop()

    assert not [c for c in later if c.actor == CONTROLLER_ACTOR], summary(later)
    assert '"status": "paused"' in status.stdout
    assert [r.action for r in by_hand_records][-3:] == ["resumed", "paused", "promoted"]
    assert by_hand_records[-1].gates["manual"] is True
    assert by_hand_records[-1].stage == 1
    assert _flag_changes(settings)[-1].v2_rollout_bp == TEST_PLAN.stages[1].percentage_bp
    assert not manual.v2_pool_enabled
    assert manual.v2_rollout_bp == 0
