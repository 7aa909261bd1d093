"""The switchover controller: ramps behind gates, rolls back, respects operators, rebuilds."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import wire
from ledger.errors import ConfigurationError, SwitchoverError
from ledger.events import (
    GateVerdict,
    RollbackTriggered,
    SwitchoverRecorded,
    decode_event,
    encode_event,
)
from ledger.sequential import SequentialPolicy
from ledger.switchover import (
    DEFAULT_PLAN,
    DEMO_PLAN,
    ControllerState,
    Stage,
    StepResult,
    SwitchoverPlan,
    describe,
    load_plan,
    pause,
    plan_named,
    promote,
    rebuild,
    resume,
    rollback_command_id,
    start,
    step,
)
from tests.unit.health_factories import window_of
from tests.unit.switchover_sim import FLAG, Run

#: Three stages soaking 6 s each, windows of 2 s: a whole ramp in a few dozen ticks.
PLAN = SwitchoverPlan(
    name="test",
    stages=(
        Stage(percentage_bp=500, soak_s=6),
        Stage(percentage_bp=5000, soak_s=6),
        Stage(percentage_bp=10000, soak_s=0),
    ),
    min_samples=60,
)


def _started(plan: SwitchoverPlan = PLAN) -> Run:
    run = Run(plan=plan)
    run.publish(start(run.state, plan, actor="alice", reason="go", now=run.now))
    return run


def _tick_until_advance(run: Run, *, deliver_commands: bool = True) -> StepResult:
    for _ in range(20):
        result = run.tick(deliver_commands=deliver_commands)
        if result.records and result.records[0].action == "advanced":
            return result
    raise AssertionError("no advance within 20 windows")


def _actions(run: Run) -> list[str]:
    return [record.action for record in run.records]


# --- plans ----------------------------------------------------------------------------------


def test_the_default_plan_is_five_to_a_hundred_percent_soaking_one_to_eight_hours() -> None:
    assert [s.percentage_bp for s in DEFAULT_PLAN.stages] == [500, 1000, 2500, 5000, 7500, 10000]
    assert [s.soak for s in DEFAULT_PLAN.stages] == [timedelta(hours=h) for h in (1, 1, 2, 4, 8, 0)]


def test_the_demo_plan_has_the_same_stages_soaking_seconds() -> None:
    assert [s.percentage_bp for s in DEMO_PLAN.stages] == [
        s.percentage_bp for s in DEFAULT_PLAN.stages
    ]
    assert all(s.soak <= timedelta(seconds=10) for s in DEMO_PLAN.stages)
    assert plan_named("demo") == DEMO_PLAN


def test_stages_must_rise() -> None:
    with pytest.raises(ValueError, match="strictly increase"):
        SwitchoverPlan(
            name="x",
            stages=(Stage(percentage_bp=500, soak_s=1), Stage(percentage_bp=500, soak_s=1)),
        )


def test_a_plan_file_gives_percentages_with_two_decimals(tmp_path: Path) -> None:
    path = tmp_path / "careful.toml"
    path.write_text(
        "min_samples = 500\n[[stages]]\npercentage = 0.25\nsoak_s = 60\n"
        "[[stages]]\npercentage = 100\nsoak_s = 0\n"
    )

    plan = load_plan(path)

    assert plan.name == "careful"
    assert [s.percentage_bp for s in plan.stages] == [25, 10000]
    assert plan.min_samples == 500


def test_an_unknown_plan_name_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="demo"):
        plan_named("fast")


# --- ramping --------------------------------------------------------------------------------


def test_start_records_the_plan_and_enables_v2_at_the_first_stage() -> None:
    run = _started()

    [record] = run.records
    assert record.action == "started"
    assert SwitchoverPlan.model_validate(record.gates["plan"]) == PLAN
    assert [(c.command, c.percentage_bp, c.expected_version) for c in run.commands] == [
        ("enable", None, 0),
        ("set_percentage", 500, 1),
    ]
    assert (run.flags.enabled, run.flags.bp) == (True, 500)
    assert run.state.soak_started_at == run.now


def test_a_healthy_run_ramps_through_every_stage_recording_the_gates() -> None:
    run = _started()
    for _ in range(30):
        run.tick("healthy")

    assert _actions(run) == ["started", "advanced", "advanced", "completed"]
    assert run.flags.bp == 10000
    advances = [r for r in run.records if r.action == "advanced"]
    for record in advances:
        assert isinstance(record.gates["samples"], int)
        assert record.gates["samples"] >= PLAN.min_samples
        assert record.gates["judge_verdict"] in ("pass", "marginal")
        assert record.gates["mismatch_rate"] == 0.0
        assert record.command_id is not None
        soak = record.gates["soak_s"]
        assert isinstance(soak, float)
        assert soak >= 6
    assert run.state.status == "completed"


def test_it_does_not_advance_before_the_soak_has_elapsed() -> None:
    run = _started()
    run.tick()
    run.tick()

    assert _actions(run) == ["started"]


def test_it_waits_while_there_are_too_few_samples() -> None:
    run = _started()
    for _ in range(10):
        run.tick("quiet")

    assert _actions(run) == ["started"]
    run.tick()
    run.tick()
    run.tick()
    run.tick()
    assert _actions(run)[-1] == "advanced"


def test_a_mismatch_rate_over_the_gate_holds_and_restarts_the_soak() -> None:
    run = _started()
    for _ in range(4):
        run.tick("mismatches")

    held = [r for r in run.records if r.action == "held"]
    assert held
    assert held[0].gates["failed"] == ["mismatch_rate"]
    assert run.state.stage == 0
    assert run.state.soak_started_at == held[-1].at


# --- rollback -------------------------------------------------------------------------------


@pytest.mark.parametrize("health", ["v2_errors", "v2_slow"])
def test_a_v2_trigger_rolls_back_citing_the_window_that_fired(health: str) -> None:
    run = _started()
    run.tick("healthy")
    result = run.tick(health)  # type: ignore[arg-type]

    [record] = result.records
    [command] = result.commands
    [snapshot] = result.snapshots
    assert isinstance(snapshot, RollbackTriggered)
    cause = next(a for a in run.assessments if a.pool == "v2" and a.triggers)
    assert record.action == "rolled_back"
    assert record.cause_id == command.cause_id == snapshot.cause_id == cause.event_id
    assert command.command == "rollback"
    assert command.command_id == rollback_command_id(FLAG, cause.event_id)
    assert snapshot.metrics["v2.p99_ms"] == cause.p99_ms
    assert snapshot.baseline_id == cause.compared_with
    assert decode_event(encode_event(snapshot), RollbackTriggered) == snapshot
    assert (run.flags.enabled, run.flags.bp) == (False, 0)
    assert run.state.status == "rolled_back"


def test_a_spike_in_v1_alone_does_not_stop_the_ramp() -> None:
    run = _started()
    for _ in range(30):
        run.tick("v1_spike")

    assert "rolled_back" not in _actions(run)
    assert run.state.status == "completed"


def test_a_rollback_already_sent_by_the_health_monitor_is_decided_once() -> None:
    run = _started()
    run.tick("healthy")
    run.tick("v2_errors", deliver_commands=False)
    cause = next(a for a in run.assessments if a.pool == "v2" and a.triggers)
    run.flags.decide(
        "rollback",
        rollback_command_id(FLAG, cause.event_id),
        actor="health-monitor",
        reason="trigger",
        at=run.now,
        cause_id=cause.event_id,
    )
    versions_before = run.flags.version
    run.deliver(run.commands[-1])

    assert run.flags.version == versions_before


# --- operators ------------------------------------------------------------------------------


def test_a_manual_rollback_during_a_soak_is_respected_and_never_overwritten() -> None:
    run = _started()
    run.tick()
    run.by_hand("rollback")
    result = run.tick()

    [record] = result.records
    assert record.action == "rolled_back"
    assert "alice" in record.reason
    for _ in range(20):
        run.tick()
    assert run.commands[-1].command == "set_percentage"  # nothing after the start
    assert (run.flags.enabled, run.flags.bp) == (False, 0)
    assert _actions(run) == ["started", "rolled_back"]


def test_a_percentage_set_by_hand_halts_the_controller() -> None:
    run = _started()
    run.tick()
    run.by_hand("set_percentage", percentage_bp=3000)
    for _ in range(20):
        run.tick()

    assert _actions(run) == ["started", "halted"]
    assert run.flags.bp == 3000
    assert run.state.status == "halted"


def test_a_ramp_decided_against_a_stale_flag_is_rejected_not_applied() -> None:
    run = _started()
    result = _tick_until_advance(run, deliver_commands=False)
    run.by_hand("set_percentage", percentage_bp=700)
    run.deliver(result.commands[0])

    assert run.flags.bp == 700
    run.tick()
    assert _actions(run)[-1] == "halted"


def test_pause_stops_advancing_and_resume_soaks_again() -> None:
    run = _started()
    run.publish(pause(run.state, actor="alice", reason="lunch", now=run.now))
    for _ in range(10):
        run.tick()
    assert _actions(run) == ["started", "paused"]
    assert run.state.display_status == "paused"

    run.publish(resume(run.state, actor="alice", reason="back", now=run.now))
    assert run.state.soak_started_at == run.now
    for _ in range(4):
        run.tick()
    assert _actions(run)[-1] == "advanced"


def test_promote_advances_at_once_recording_that_it_was_by_hand() -> None:
    run = _started()
    run.tick()
    run.publish(promote(run.state, run.assessments, actor="alice", reason="confident", now=run.now))

    record = run.records[-1]
    assert record.action == "promoted"
    assert record.gates["manual"] is True
    assert run.flags.bp == 5000
    assert run.state.stage == 1


def test_resume_after_a_halt_continues_from_where_the_flag_is() -> None:
    run = _started()
    run.tick()
    run.by_hand("set_percentage", percentage_bp=6000)
    run.tick()
    run.publish(resume(run.state, actor="alice", reason="ok, go on", now=run.now))

    assert run.state.status == "ramping"
    assert run.state.stage == 1
    assert run.flags.bp == 6000
    for _ in range(5):
        run.tick()
    assert run.flags.bp == 10000


def test_resume_after_a_rollback_starts_again_at_the_first_stage() -> None:
    run = _started()
    run.tick()
    run.by_hand("rollback")
    run.tick()
    run.publish(resume(run.state, actor="alice", reason="fixed", now=run.now))

    assert run.state.stage == 0
    assert (run.flags.enabled, run.flags.bp) == (True, 500)


def test_instructions_that_do_not_fit_the_state_are_refused() -> None:
    idle = ControllerState(flag=FLAG)
    run = _started()

    with pytest.raises(SwitchoverError, match="idle"):
        pause(idle, actor="a", reason="r", now=run.now)
    with pytest.raises(SwitchoverError, match="idle"):
        promote(idle, [], actor="a", reason="r", now=run.now)
    with pytest.raises(SwitchoverError, match="already ramping"):
        start(run.state, PLAN, actor="a", reason="r", now=run.now)
    with pytest.raises(SwitchoverError, match="not paused"):
        resume(run.state, actor="a", reason="r", now=run.now)


def test_a_frozen_flag_halts_the_ramp() -> None:
    run = _started()
    run.by_hand("freeze")
    run.tick()

    assert _actions(run) == ["started", "halted"]


# --- rebuilding from the log ----------------------------------------------------------------


def test_a_restart_mid_soak_resumes_the_same_stage_with_the_same_remaining_soak() -> None:
    run = _started()
    for _ in range(5):
        run.tick()
    assert run.state.stage == 1
    before = describe(run.state, run.assessments, run.now)

    restarted = rebuild(FLAG, run.records, run.flags.events)
    after = describe(restarted, run.assessments, run.now)

    assert restarted == run.state
    assert after["stage"] == before["stage"] == 1
    assert after["soak_remaining_s"] == before["soak_remaining_s"] > 0


def test_a_controller_dead_between_record_and_command_resends_the_same_command() -> None:
    run = _started()
    lost = _tick_until_advance(run, deliver_commands=False)

    run.state = rebuild(FLAG, run.records, run.flags.events)
    assert run.state.pending_command_id == lost.commands[0].command_id
    resent = [run.tick() for _ in range(int(PLAN.command_timeout_s) // 2 + 1)]

    assert any(
        r.commands and r.commands[0].command_id == lost.commands[0].command_id for r in resent
    )
    assert run.flags.bp == 5000
    assert _actions(run).count("advanced") == 1


def test_a_command_whose_record_was_lost_is_still_the_controllers_own() -> None:
    run = _started()
    result = _tick_until_advance(run, deliver_commands=False)
    run.records.pop()  # the record never reached the log; its command did
    run.deliver(result.commands[0])

    run.state = rebuild(FLAG, run.records, run.flags.events)
    assert run.state.external_changes == ()
    again = run.tick()

    assert [r.action for r in again.records] == ["advanced"]
    assert again.commands[0].command_id == result.commands[0].command_id
    assert run.flags.bp == 5000
    assert [e.command_id for e in run.flags.events].count(result.commands[0].command_id) == 1


Action = st.sampled_from(
    [
        "healthy",
        "healthy",
        "healthy",
        "quiet",
        "mismatches",
        "v2_errors",
        "v1_spike",
        "pause",
        "resume",
        "promote",
        "hand_rollback",
        "hand_percentage",
        "lost_command",
    ]
)


@given(actions=st.lists(Action, max_size=25))
@settings(max_examples=40, deadline=None)
def test_the_state_rebuilt_from_the_log_equals_the_live_one_after_any_run(
    actions: list[str],
) -> None:
    run = _started()
    for action in actions:
        try:
            if action == "pause":
                run.publish(pause(run.state, actor="bob", reason="r", now=run.now))
            elif action == "resume":
                run.publish(resume(run.state, actor="bob", reason="r", now=run.now))
            elif action == "promote":
                run.publish(
                    promote(run.state, run.assessments, actor="bob", reason="r", now=run.now)
                )
            elif action == "hand_rollback":
                run.by_hand("rollback")
            elif action == "hand_percentage":
                run.by_hand("set_percentage", percentage_bp=4200)
            elif action == "lost_command":
                run.tick(deliver_commands=False)
            else:
                run.tick(action)  # type: ignore[arg-type]
        except SwitchoverError:
            pass
        assert rebuild(FLAG, run.records, run.flags.events) == run.state

    # Every ramp command names the flag version it was decided against, so the writer
    # refuses it if an operator changed the flag in between: it can never overwrite them.
    assert all(c.expected_version is not None for c in run.commands if c.command != "rollback")


def test_switchover_records_round_trip_through_the_event_contract() -> None:
    run = _started()
    for _ in range(6):
        run.tick()

    for record in run.records:
        assert decode_event(encode_event(record), SwitchoverRecorded) == record


# --- sequential gates and verdicts (issue 15) -----------------------------------------------


def _tick_with(run: Run, v1_errors: int, v2_errors: int, n: int = 1000) -> StepResult:
    start = run.now
    run.now += run.window
    run.assessments += [
        window_of("v1", count=n, errors=v1_errors, operation="*", start=start, size=run.window),
        window_of("v2", count=n, errors=v2_errors, operation="*", start=start, size=run.window),
    ]
    result = step(run.state, run.assessments, run.now)
    run.publish(result)
    return result


def test_proven_harm_rolls_back_at_once_citing_the_sequential_verdict() -> None:
    run = _started(PLAN.model_copy(update={"sequential": SequentialPolicy()}))
    results = [_tick_with(run, 10, 30) for _ in range(3)]
    rolled = next(r for r in results if r.records)
    [record] = rolled.records
    [command] = rolled.commands
    assert record.action == "rolled_back"
    verdicts = [s for s in rolled.snapshots if isinstance(s, GateVerdict)]
    assert [v.gate for v in verdicts] == ["sequential_error_rate"]
    [verdict] = verdicts
    assert record.cause_id == command.cause_id == verdict.event_id
    assert record.gates["verdict_ids"] == [verdict.event_id]
    assert command.command_id == rollback_command_id(FLAG, verdict.event_id)
    assert not verdict.passed
    assert verdict.e_value is not None
    assert verdict.threshold is not None
    assert verdict.e_value >= verdict.threshold == 200.0
    assert verdict.p_value == pytest.approx(1 / verdict.e_value)
    assert verdict.v2_events is not None
    assert verdict.v1_events is not None
    assert verdict.v2_events > verdict.v1_events
    assert wire.decode(encode_event(verdict), "health") == verdict
    assert run.state.status == "rolled_back"


def test_without_a_sequential_policy_the_same_windows_wait_for_the_soak() -> None:
    run = _started()
    results = [_tick_with(run, 10, 30) for _ in range(2)]
    assert all(not r.records for r in results)
    assert run.state.status == "ramping"


def test_every_soak_gate_is_a_verdict_event_the_advance_cites() -> None:
    run = _started(PLAN.model_copy(update={"sequential": SequentialPolicy()}))
    result = _tick_until_advance(run)
    [record] = result.records
    verdicts = [s for s in result.snapshots if isinstance(s, GateVerdict)]
    assert [v.event_id for v in verdicts] == record.gates["verdict_ids"]
    gates = {v.gate for v in verdicts}
    assert {"samples", "mismatch_rate", "sequential_error_rate", "sequential_latency"} <= gates
    assert all(v.passed for v in verdicts)
    assert all(v.stage == 0 for v in verdicts)


def test_a_plan_file_turns_the_sequential_gates_on(tmp_path: Path) -> None:
    path = tmp_path / "careful.toml"
    path.write_text(
        "[[stages]]\npercentage = 5\nsoak_s = 60\n[[stages]]\npercentage = 100\nsoak_s = 0\n"
        "[sequential]\nalpha = 0.02\n"
    )
    plan = load_plan(path)
    assert plan.sequential == SequentialPolicy(alpha=0.02)
    assert plan.sequential.threshold == 100.0
    assert DEFAULT_PLAN.sequential is None
    # recorded in the started event and read back the same
    assert SwitchoverPlan.model_validate(plan.model_dump(mode="json")) == plan


def test_the_sequential_test_runs_over_the_whole_ramp_not_one_stage() -> None:
    run = _started(PLAN.model_copy(update={"sequential": SequentialPolicy()}))
    first = _tick_until_advance(run)
    second = _tick_until_advance(run)

    def windows(result: StepResult) -> tuple[datetime, ...]:
        [verdict] = [
            s
            for s in result.snapshots
            if isinstance(s, GateVerdict) and s.gate == "sequential_error_rate"
        ]
        return verdict.windows

    assert run.state.ramp_started_at == run.records[0].at
    # one e-process since the start: the second stage's verdict still holds the first's windows
    assert set(windows(first)) < set(windows(second))
    assert min(windows(second)) == min(windows(first))
