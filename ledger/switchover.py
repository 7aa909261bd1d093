"""The switchover controller: ramp V2 through a plan of stages, each behind go/no-go gates.

The controller's state is never kept in memory alone: it is the fold of its own
``SwitchoverRecorded`` events and of the flag log (``FlagChanged``, ``CommandRejected``), so a
restarted controller resumes the same stage with the same remaining soak. The plan itself is
recorded in the ``started`` event, so the worker and the command line cannot disagree on it.

``step`` decides, from the state, the closed health windows and ``now``, what to record and
which flag commands to send. Records are written *before* their commands: a controller that
dies in between finds the record on restart and re-sends the command under the same id (the
flag log writer ignores a command id it has already decided). Commands carry
``expected_version``, so a ramp decided against a flag that an operator has changed since is
rejected by the writer instead of overwriting the operator.

A flag change the controller did not send (an operator's rollback, someone else's percentage,
the health monitor's automatic rollback) is respected: the controller records ``halted`` (or
``rolled_back``) and does nothing more until an operator resumes or restarts it.

Operators act through the same records: ``start``, ``pause``, ``resume`` and ``promote`` are
pure functions here that the command line publishes, exactly like the controller's own steps.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import Field, JsonValue, model_validator

from ledger import flags
from ledger.errors import ConfigurationError, SwitchoverError
from ledger.events import (
    CommandRejected,
    FlagChanged,
    GateVerdict,
    HealthAssessed,
    RollbackTriggered,
    SwitchoverRecorded,
)
from ledger.frozen import Frozen
from ledger.gates import Check, Figures, Thresholds
from ledger.gates import judge as judge_gates
from ledger.health import ALL_OPERATIONS
from ledger.policy import JudgePolicy, judge_windows
from ledger.sequential import SequentialPolicy, SequentialVerdict, sequential_verdicts

__all__ = [
    "CONTROLLER_ACTOR",
    "DEFAULT_PLAN",
    "DEMO_PLAN",
    "HEALTH_ACTOR",
    "KEEP_WINDOWS",
    "PLANS",
    "ControllerCommand",
    "ControllerState",
    "FlagView",
    "Stage",
    "StepResult",
    "SwitchoverPlan",
    "apply",
    "describe",
    "encode_controller_command",
    "load_plan",
    "pause",
    "plan_named",
    "promote",
    "rebuild",
    "resume",
    "rollback_command_id",
    "rollback_snapshot",
    "sequential_cause_id",
    "sequential_verdict_event",
    "start",
    "step",
    "to_flag_command",
]

#: The actor of everything the controller decides by itself.
CONTROLLER_ACTOR = "switchover-controller"
#: The actor of automatic rollbacks sent by the health windows.
HEALTH_ACTOR = "health-monitor"
#: Health windows older than this are skipped when the log is read again at a start: three
#: times the longest default soak. A longer soak is judged on its last day of windows (its
#: older triggers were acted on by the health monitor when they fired).
KEEP_WINDOWS = timedelta(hours=24)


class Stage(Frozen):
    """One rung of the ramp: the V2 percentage (basis points) and how long it must soak."""

    percentage_bp: int = Field(ge=1, le=10000)
    soak_s: float = Field(ge=0)

    @property
    def soak(self) -> timedelta:
        return timedelta(seconds=self.soak_s)


class SwitchoverPlan(Frozen):
    """Stages and the gates an advance needs over a whole soak."""

    name: str = Field(min_length=1)
    stages: tuple[Stage, ...] = Field(min_length=1)
    #: V2 executions (all operations) needed over a soak before it may advance.
    min_samples: int = Field(default=100, ge=0)
    #: Mismatch rate over a soak above which it is held (the rollback threshold is higher).
    max_mismatch_rate: float = Field(default=0.01, ge=0, le=1)
    #: Hold when the canary judge, over the whole soak, says ``fail``.
    require_judge: bool = True
    judge: JudgePolicy = JudgePolicy()
    #: Always-valid harm tests (``ledger.sequential``) over the stage's windows, looked at after
    #: every window: roll back the moment harm is proven. None (the default): not used.
    sequential: SequentialPolicy | None = None

    def soak_thresholds(self) -> Thresholds:
        """The gates a soak is held to: enough V2 samples, few mismatches, the judge."""
        return Thresholds(
            min_comparisons=None,
            min_samples=self.min_samples,
            max_mismatch_rate=self.max_mismatch_rate,
            max_missing_rate=None,
            max_v2_error_ratio=None,
            max_p99_ratio=None,
            max_dead_letter_rate=None,
            max_rollbacks=None,
            require_judge=self.require_judge,
        )

    #: Re-send a command that the flag log has not answered after this long.
    command_timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _stages_rise(self) -> SwitchoverPlan:
        bps = [stage.percentage_bp for stage in self.stages]
        if any(b <= a for a, b in pairwise(bps)):
            raise ValueError("stages: percentages must strictly increase")
        return self


def _plan(
    name: str, percentages: Sequence[float], soaks: Sequence[float], **gates: Any
) -> SwitchoverPlan:
    soak_list = [*soaks, 0.0][: len(percentages)]
    stages = tuple(
        Stage(percentage_bp=round(p * 100), soak_s=s)
        for p, s in zip(percentages, soak_list, strict=True)
    )
    return SwitchoverPlan(name=name, stages=stages, **gates)


_HOUR = 3600.0
#: 5, 10, 25, 50, 75, 100 % soaking 1 h, 1 h, 2 h, 4 h, 8 h (100 % is the end).
DEFAULT_PLAN = _plan(
    "default", (5, 10, 25, 50, 75, 100), (_HOUR, _HOUR, 2 * _HOUR, 4 * _HOUR, 8 * _HOUR)
)
#: The same stages soaking seconds, for demonstrations and integration tests.
DEMO_PLAN = _plan(
    "demo", (5, 10, 25, 50, 75, 100), (6, 6, 6, 6, 6), min_samples=20, command_timeout_s=5.0
)
PLANS = {plan.name: plan for plan in (DEFAULT_PLAN, DEMO_PLAN)}


def plan_named(name: str) -> SwitchoverPlan:
    try:
        return PLANS[name]
    except KeyError:
        raise ConfigurationError(f"unknown plan {name!r}; known: {', '.join(PLANS)}") from None


def load_plan(source: str | Path) -> SwitchoverPlan:
    """A known plan by name (``default``, ``demo``) or a TOML file::

    name = "careful"
    min_samples = 500
    [[stages]]
    percentage = 1      # percent, two decimals at most
    soak_s = 7200
    """
    if isinstance(source, str) and source in PLANS:
        return PLANS[source]
    path = Path(source)
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc
    data = dict(data.get("plan", data))
    stages = []
    for i, stage in enumerate(data.pop("stages", [])):
        stage = dict(stage)
        if "percentage" in stage:
            stage["percentage_bp"] = round(float(stage.pop("percentage")) * 100)
        stages.append(stage)
        if not isinstance(stage.get("percentage_bp"), int):
            raise ConfigurationError(f"{path}: stages[{i}]: percentage required")
    try:
        return SwitchoverPlan.model_validate({"name": path.stem, **data, "stages": stages})
    except ValueError as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc


# --- state ----------------------------------------------------------------------------------


class FlagView(Frozen):
    """What the controller needs of the flag: its version and the ramp values."""

    version: int = 0
    v2_pool_enabled: bool = False
    v2_rollout_bp: int = 0
    frozen: bool = False


class FlagChangeSeen(Frozen):
    event_id: str
    version: int
    command: str
    command_id: str
    actor: str
    reason: str
    cause_id: str | None
    ramp_changed: bool
    at: datetime


class CommandOutcome(Frozen):
    """How the flag log writer answered one of the switchover's commands."""

    version: int
    at: datetime
    rejection: str | None = None


Status = Literal["idle", "ramping", "halted", "rolled_back", "completed"]


class ControllerState(Frozen):
    """The fold of the switchover records and the flag log of one flag."""

    flag: str
    status: Status = "idle"
    plan: SwitchoverPlan | None = None
    stage: int = -1
    paused: bool = False
    #: Records folded so far: numbers the controller's event and command ids.
    records: int = 0
    last_record_at: datetime | None = None
    #: The command that moved the flag to the current stage (None: the flag was already there).
    stage_command_id: str | None = None
    stage_command_sent_at: datetime | None = None
    #: The soak restarted here (held, resumed); else it starts when the stage command applied.
    soak_anchor: datetime | None = None
    #: When this ramp began (started, or resumed after a halt or a rollback): the sequential
    #: tests run over every window since, across stages, so alpha bounds the whole ramp.
    ramp_started_at: datetime | None = None
    #: Flag version the last record was decided against: earlier changes are acknowledged.
    acknowledged_version: int = 0
    flag_state: FlagView = FlagView()
    own_command_ids: frozenset[str] = frozenset()
    outcomes: dict[str, CommandOutcome] = Field(default_factory=dict)
    #: Flag changes newer than ``acknowledged_version`` (whoever sent them).
    recent_changes: tuple[FlagChangeSeen, ...] = ()

    @property
    def pending_command_id(self) -> str | None:
        """The stage command the flag log has not answered yet."""
        if self.stage_command_id is None or self.stage_command_id in self.outcomes:
            return None
        return self.stage_command_id

    @property
    def soak_started_at(self) -> datetime | None:
        """When the current stage's soak began (None while its command is unanswered)."""
        applied: datetime | None = None
        if self.stage_command_id is not None:
            outcome = self.outcomes.get(self.stage_command_id)
            if outcome is None:
                return None
            applied = outcome.at
        candidates = [t for t in (applied, self.soak_anchor) if t is not None]
        return max(candidates) if candidates else None

    @property
    def external_changes(self) -> tuple[FlagChangeSeen, ...]:
        """Ramp changes the switchover did not send and has not acknowledged."""
        # The id prefix also recognises a command whose record never reached the log.
        own_prefix = f"switchover:{self.flag}:"
        return tuple(
            change
            for change in self.recent_changes
            if change.ramp_changed
            and change.command_id not in self.own_command_ids
            and not change.command_id.startswith(own_prefix)
            and change.version > self.acknowledged_version
        )

    @property
    def current_stage(self) -> Stage | None:
        if self.plan is None or not 0 <= self.stage < len(self.plan.stages):
            return None
        return self.plan.stages[self.stage]

    @property
    def display_status(self) -> str:
        if self.status == "ramping" and self.paused:
            return "paused"
        return self.status


def _stage_commands(state: ControllerState, command_id: str | None) -> frozenset[str]:
    if command_id is None:
        return state.own_command_ids
    return state.own_command_ids | {command_id, f"{command_id}:enable"}


def _apply_record(state: ControllerState, record: SwitchoverRecorded) -> ControllerState:
    update: dict[str, Any] = {
        "records": state.records + 1,
        "last_record_at": record.at,
        "own_command_ids": _stage_commands(state, record.command_id),
    }
    if record.flag_version is not None and record.flag_version > state.acknowledged_version:
        update["acknowledged_version"] = record.flag_version
        update["recent_changes"] = tuple(
            c for c in state.recent_changes if c.version > record.flag_version
        )
    action = record.action
    if action == "started":
        plan_data = record.gates.get("plan")
        plan = SwitchoverPlan.model_validate(plan_data) if plan_data is not None else state.plan
        update |= {
            "status": "ramping",
            "plan": plan,
            "stage": record.stage,
            "paused": False,
            "stage_command_id": record.command_id,
            "stage_command_sent_at": record.at,
            "soak_anchor": None if record.command_id else record.at,
            "ramp_started_at": record.at,
        }
    elif action in ("advanced", "promoted"):
        update |= {
            "stage": record.stage,
            "stage_command_id": record.command_id,
            "stage_command_sent_at": record.at,
            "soak_anchor": None if record.command_id else record.at,
        }
    elif action == "held":
        update["soak_anchor"] = record.at
    elif action == "paused":
        update["paused"] = True
    elif action == "resumed":
        update |= {"paused": False, "soak_anchor": record.at}
        if state.status in ("halted", "rolled_back"):
            update["ramp_started_at"] = record.at
        if state.status in ("halted", "rolled_back", "ramping"):
            update |= {
                "status": "ramping",
                "stage": record.stage,
                "stage_command_id": record.command_id,
                "stage_command_sent_at": record.at if record.command_id else None,
            }
    elif action == "completed":
        update |= {"status": "completed", "stage": record.stage, "paused": False}
    elif action == "rolled_back":
        update |= {"status": "rolled_back", "paused": False}
    elif action == "halted":
        update |= {"status": "halted", "paused": False}
    return state.model_copy(update=update)


def _ramp_changed(before: FlagView, event: FlagChanged) -> bool:
    return event.command == "rollback" or (
        before.v2_pool_enabled != event.v2_pool_enabled
        or before.v2_rollout_bp != event.v2_rollout_bp
        or before.frozen != event.frozen
    )


def _apply_flag(state: ControllerState, event: FlagChanged | CommandRejected) -> ControllerState:
    if isinstance(event, CommandRejected):
        if event.command_id in state.outcomes:
            return state
        outcome = CommandOutcome(
            version=event.current_version, at=event.at, rejection=event.rejection
        )
        return state.model_copy(update={"outcomes": {**state.outcomes, event.command_id: outcome}})
    if event.version <= state.flag_state.version:
        return state  # already folded (a re-read of the flag log)
    before = state.flag_state
    view = FlagView(
        version=event.version,
        v2_pool_enabled=event.v2_pool_enabled,
        v2_rollout_bp=event.v2_rollout_bp,
        frozen=event.frozen,
    )
    update: dict[str, Any] = {"flag_state": view}
    outcomes = state.outcomes
    if event.command_id not in outcomes:
        outcomes = {
            **outcomes,
            event.command_id: CommandOutcome(version=event.version, at=event.at),
        }
        update["outcomes"] = outcomes
    if event.version > state.acknowledged_version:
        seen = FlagChangeSeen(
            event_id=event.event_id,
            version=event.version,
            command=event.command,
            command_id=event.command_id,
            actor=event.actor,
            reason=event.reason,
            cause_id=event.cause_id,
            ramp_changed=_ramp_changed(before, event),
            at=event.at,
        )
        update["recent_changes"] = (*state.recent_changes, seen)
    return state.model_copy(update=update)


def apply(
    state: ControllerState, event: SwitchoverRecorded | FlagChanged | CommandRejected
) -> ControllerState:
    """Fold one event (the switchover's own records or the flag log) into the state."""
    if event.flag != state.flag:
        return state
    if isinstance(event, SwitchoverRecorded):
        return _apply_record(state, event)
    return _apply_flag(state, event)


def rebuild(
    flag: str,
    records: Iterable[SwitchoverRecorded],
    flag_events: Iterable[FlagChanged | CommandRejected],
) -> ControllerState:
    """The controller's state from the log: its records, then the flag log, each in order.

    The state does not depend on how the two logs interleave, so folding them one after the
    other gives the state a live controller reached seeing them mixed.
    """
    state = ControllerState(flag=flag)
    for record in records:
        state = apply(state, record)
    for event in flag_events:
        state = apply(state, event)
    return state


# --- decisions ------------------------------------------------------------------------------


class ControllerCommand(Frozen):
    """A flag command the switchover wants the flag log writer to decide.

    Mirrors ``ledger.flags``' command models (``to_flag_command`` builds the real one).
    """

    command: Literal["enable", "set_percentage", "rollback"]
    command_id: str
    flag: str
    actor: str
    reason: str
    percentage_bp: int | None = None
    cause_id: str | None = None
    expected_version: int | None = None


def to_flag_command(command: ControllerCommand) -> Any:
    """The ``ledger.flags`` command model the flag log writer decides."""
    data: dict[str, Any] = {
        "command": command.command,
        "command_id": command.command_id,
        "flag": command.flag,
        "actor": command.actor,
        "reason": command.reason,
        "cause_id": command.cause_id,
        "expected_version": command.expected_version,
    }
    if command.command == "set_percentage":
        data["percentage_bp"] = command.percentage_bp
    return flags.decode_command(json.dumps(data).encode())


def encode_controller_command(command: ControllerCommand) -> bytes:
    """The wire form of a controller command, as the flag log writer reads commands."""
    encoded: bytes = flags.encode_command(to_flag_command(command))
    return encoded


class StepResult(NamedTuple):
    """What to publish, in this order: records, then snapshots (the evidence: rollback
    snapshots and gate verdicts), then commands."""

    records: list[SwitchoverRecorded]
    commands: list[ControllerCommand]
    snapshots: list[RollbackTriggered | GateVerdict]


def _nothing() -> StepResult:
    return StepResult([], [], [])


def rollback_command_id(flag: str, cause_id: str) -> str:
    """The id of the rollback a health window causes: the same whoever sends it, so the flag
    log writer decides it once even when the health monitor and the controller both do."""
    return f"rollback:{flag}:{cause_id}"


def _digest(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:24]


def _record(
    state: ControllerState,
    action: str,
    *,
    stage: int,
    percentage_bp: int,
    actor: str,
    reason: str,
    at: datetime,
    command_id: str | None = None,
    cause_id: str | None = None,
    gates: dict[str, JsonValue] | None = None,
) -> SwitchoverRecorded:
    plan = state.plan
    soak = plan.stages[stage].soak_s if plan is not None and 0 <= stage < len(plan.stages) else None
    return SwitchoverRecorded(
        event_id="switchover-"
        + _digest(state.flag, state.records, action, stage, at.isoformat(), actor),
        flag=state.flag,
        action=action,
        stage=stage,
        percentage_bp=percentage_bp,
        actor=actor,
        reason=reason,
        cause_id=cause_id,
        gates=gates or {},
        plan=plan.name if plan is not None else None,
        soak_s=soak,
        flag_version=state.flag_state.version,
        command_id=command_id,
        at=at,
    )


def _command_id(state: ControllerState, action: str, stage: int) -> str:
    """Derived from the record count: a controller that re-decides after a crash re-sends the
    same id, which the flag log writer has already decided."""
    return f"switchover:{state.flag}:{state.records}:{action}:{stage}"


def _ramp_commands(
    state: ControllerState, command_id: str, percentage_bp: int, actor: str, reason: str
) -> list[ControllerCommand]:
    commands: list[ControllerCommand] = []
    version = state.flag_state.version
    if not state.flag_state.v2_pool_enabled:
        commands.append(
            ControllerCommand(
                command="enable",
                command_id=f"{command_id}:enable",
                flag=state.flag,
                actor=actor,
                reason=reason,
                expected_version=version,
            )
        )
        version += 1
    commands.append(
        ControllerCommand(
            command="set_percentage",
            command_id=command_id,
            flag=state.flag,
            actor=actor,
            reason=reason,
            percentage_bp=percentage_bp,
            expected_version=version,
        )
    )
    return commands


def _v2_windows_since(
    assessments: Iterable[HealthAssessed], since: datetime
) -> list[HealthAssessed]:
    return [a for a in assessments if a.pool == "v2" and a.window_end > since]


def _first_trigger(assessments: Iterable[HealthAssessed], since: datetime) -> HealthAssessed | None:
    fired = [a for a in _v2_windows_since(assessments, since) if a.triggers]
    return min(fired, key=lambda a: (a.window_end, a.event_id)) if fired else None


def rollback_snapshot(
    flag: str,
    cause: HealthAssessed,
    *,
    command_id: str,
    actor: str,
    at: datetime,
) -> RollbackTriggered:
    """The evidence kept beside an automatic rollback: the window that fired and its figures."""
    metrics: dict[str, float | None] = dict(cause.metrics)
    for name in ("p50_ms", "p95_ms", "p99_ms", "mean_ms"):
        metrics.setdefault(f"v2.{name}", getattr(cause, name))
    return RollbackTriggered(
        event_id=f"rollback-{_digest(command_id)}",
        flag=flag,
        command_id=command_id,
        actor=actor,
        reason="; ".join(cause.alerts) or ", ".join(cause.triggers),
        cause_id=cause.event_id,
        triggers=cause.triggers,
        operation=cause.operation,
        window_start=cause.window_start,
        window_end=cause.window_end,
        metrics=metrics,
        baseline_id=cause.compared_with,
        at=at,
    )


def _roll_back(state: ControllerState, cause: HealthAssessed, now: datetime) -> StepResult:
    command_id = rollback_command_id(state.flag, cause.event_id)
    reason = f"health triggers {', '.join(cause.triggers)} on {cause.operation}"
    gates: dict[str, JsonValue] = {
        "triggers": list(cause.triggers),
        "window_start": cause.window_start.isoformat(),
        "window_end": cause.window_end.isoformat(),
        "metrics": {k: v for k, v in cause.metrics.items()},
    }
    snapshot = rollback_snapshot(
        state.flag, cause, command_id=command_id, actor=CONTROLLER_ACTOR, at=now
    )
    return _rollback_step(state, command_id, cause.event_id, reason, gates, now, [snapshot])


def _rollback_step(
    state: ControllerState,
    command_id: str,
    cause_id: str,
    reason: str,
    gates: dict[str, JsonValue],
    now: datetime,
    evidence: list[RollbackTriggered | GateVerdict],
) -> StepResult:
    """The controller's rollback: its record, its command, and the evidence it cites."""
    record = _record(
        state,
        "rolled_back",
        stage=state.stage,
        percentage_bp=0,
        actor=CONTROLLER_ACTOR,
        reason=reason,
        at=now,
        command_id=command_id,
        cause_id=cause_id,
        gates=gates,
    )
    command = ControllerCommand(
        command="rollback",
        command_id=command_id,
        flag=state.flag,
        actor=CONTROLLER_ACTOR,
        reason=reason,
        cause_id=cause_id,
    )
    return StepResult([record], [command], evidence)


def _sequential(
    policy: SequentialPolicy,
    assessments: Sequence[HealthAssessed],
    since: datetime,
    now: datetime,
) -> tuple[SequentialVerdict, ...]:
    """The sequential verdicts over the closed ``"*"`` windows since ``since`` (the ramp's
    start: one e-process across stages, valid as the split changes, so alpha bounds the ramp)."""
    inside = [
        a
        for a in assessments
        if a.operation == ALL_OPERATIONS and a.window_start >= since and a.window_end <= now
    ]
    return sequential_verdicts(inside, policy)


def sequential_cause_id(flag: str, verdict: SequentialVerdict) -> str:
    """The id of the evidence of a proven harm: derived from the flag, the metric and the
    windows used, so a controller re-deciding after a restart names the same cause."""
    windows = ",".join(w.isoformat() for w in verdict.windows)
    return f"verdict-{_digest(flag, verdict.gate, windows, verdict.proven_at)}"


def _roll_back_proven(
    state: ControllerState, harmed: Sequence[SequentialVerdict], now: datetime
) -> StepResult:
    """Harm proven by a sequential test: roll back, the verdict recorded as the cause."""
    first = min(harmed, key=lambda v: (v.proven_at or now, v.metric))
    cause_id = sequential_cause_id(state.flag, first)
    evidence = [
        sequential_verdict_event(
            state.flag, v, sequential_cause_id(state.flag, v), state.stage, now
        )
        for v in harmed
    ]
    command_id = rollback_command_id(state.flag, cause_id)
    reason = (
        f"sequential test proved harm on {first.metric}: e-value {first.e_value:.3g} "
        f">= {first.threshold:g} (alpha {first.alpha:g})"
    )
    gates: dict[str, JsonValue] = {
        "verdict_ids": [v.event_id for v in evidence],
        "sequential": [v.to_dict() for v in harmed],
    }
    return _rollback_step(state, command_id, cause_id, reason, gates, now, list(evidence))


def sequential_verdict_event(
    flag: str, verdict: SequentialVerdict, event_id: str, stage: int | None, at: datetime
) -> GateVerdict:
    """A sequential verdict as evidence; its always-valid p-value is min(1, 1 / e-value)."""
    details: dict[str, JsonValue] = {
        k: v for k, v in verdict.to_dict().items() if k in ("estimate_kind", "proven_at", "alpha")
    }
    details["description"] = verdict.to_dict()["test"]
    return GateVerdict(
        event_id=event_id,
        flag=flag,
        gate=verdict.gate,
        passed=not verdict.harm,
        test="mixture_sprt",
        estimate=verdict.odds_ratio,
        p_value=min(1.0, 1.0 / verdict.e_value) if verdict.e_value > 0 else 1.0,
        e_value=verdict.e_value,
        threshold=verdict.threshold,
        v1_n=verdict.v1_n,
        v1_events=verdict.v1_events,
        v2_n=verdict.v2_n,
        v2_events=verdict.v2_events,
        windows=verdict.windows,
        stage=stage,
        details=details,
        at=at,
    )


def _check_verdict(
    flag: str, check: Check, event_id: str, stage: int, windows: Sequence[datetime], at: datetime
) -> GateVerdict:
    return GateVerdict(
        event_id=event_id,
        flag=flag,
        gate=check.gate,
        passed=check.passed,
        test="mann_whitney_judge" if check.gate == "judge" else "threshold",
        windows=tuple(windows),
        stage=stage,
        details={"name": check.name, "figure": check.figure, "threshold": check.threshold},
        at=at,
    )


def _soak_evidence(
    state: ControllerState,
    plan: SwitchoverPlan,
    assessments: Sequence[HealthAssessed],
    since: datetime,
    now: datetime,
) -> tuple[dict[str, JsonValue], list[str], list[GateVerdict]]:
    """The soak's gates, failed gates and one ``GateVerdict`` per gate judged (ids derived
    from the flag, stage, gate and soak, so a re-decided step names the same evidence)."""
    gates, failed, checks, verdicts = _soak_judgement(
        plan, assessments, since, now, state.ramp_started_at
    )
    windows = sorted(
        {
            a.window_start
            for a in assessments
            if a.pool == "v2"
            and a.operation == ALL_OPERATIONS
            and a.window_start >= since
            and a.window_end <= now
        }
    )

    def verdict_id(gate: str) -> str:
        return "verdict-" + _digest(
            state.flag, state.stage, gate, since.isoformat(), now.isoformat()
        )

    evidence = [
        _check_verdict(state.flag, c, verdict_id(c.gate), state.stage, windows, now) for c in checks
    ]
    evidence += [
        sequential_verdict_event(state.flag, v, verdict_id(v.gate), state.stage, now)
        for v in verdicts
    ]
    gates["verdict_ids"] = [v.event_id for v in evidence]
    return gates, failed, evidence


def _soak_gates(
    plan: SwitchoverPlan,
    assessments: Sequence[HealthAssessed],
    since: datetime,
    now: datetime,
    ramp_since: datetime | None = None,
) -> tuple[dict[str, JsonValue], list[str]]:
    """The figures over the soak's closed windows and the gates they fail (empty: go)."""
    gates, failed, _, _ = _soak_judgement(plan, assessments, since, now, ramp_since)
    return gates, failed


def _soak_judgement(
    plan: SwitchoverPlan,
    assessments: Sequence[HealthAssessed],
    since: datetime,
    now: datetime,
    ramp_since: datetime | None = None,
) -> tuple[dict[str, JsonValue], list[str], list[Check], tuple[SequentialVerdict, ...]]:
    inside = [
        a
        for a in assessments
        if a.operation == ALL_OPERATIONS and a.window_start >= since and a.window_end <= now
    ]
    v2 = [a for a in inside if a.pool == "v2"]
    v1 = [a for a in inside if a.pool == "v1"]
    samples = sum(a.count for a in v2)
    comparisons = sum(a.comparisons for a in v2)
    mismatches = sum(a.mismatches for a in v2)
    mismatch_rate = mismatches / comparisons if comparisons else 0.0
    judgement = judge_windows(v1, v2, plan.judge)
    gates: dict[str, JsonValue] = {
        "soak_started_at": since.isoformat(),
        "soak_s": (now - since).total_seconds(),
        "windows": len(v2),
        "samples": samples,
        "min_samples": plan.min_samples,
        "errors": sum(a.error_count for a in v2),
        "comparisons": comparisons,
        "mismatches": mismatches,
        "mismatch_rate": mismatch_rate,
        "max_mismatch_rate": plan.max_mismatch_rate,
        "rollback_triggers": 0,
        "judge_verdict": judgement.verdict,
        "judge_score": judgement.score,
        "judge": {m.name: m.classification.value for m in judgement.metrics},
    }
    # The one go/no-go evaluation (ledger.gates), on the figures the health windows hold.
    figures = Figures(
        comparisons=comparisons,
        mismatches=mismatches,
        v2_operations=samples,
        judge_verdict=judgement.verdict,
        judge_detail=f"{judgement.verdict} (score {judgement.score})",
    )
    checks = judge_gates(figures, plan.soak_thresholds())
    failed = [check.gate for check in checks if not check.passed]
    verdicts: tuple[SequentialVerdict, ...] = ()
    if plan.sequential is not None:
        verdicts = _sequential(plan.sequential, assessments, ramp_since or since, now)
        gates["sequential"] = [v.to_dict() for v in verdicts]
        failed += [v.gate for v in verdicts if v.harm]
    return gates, failed, checks, verdicts


def step(
    state: ControllerState, assessments: Sequence[HealthAssessed], now: datetime
) -> StepResult:
    """What the controller does now, given the closed health windows it has seen.

    ``assessments`` may hold any windows (older ones are ignored); only windows of the
    current stage count. Roll back on any V2 trigger since the stage began; advance when the
    soak has elapsed and its gates pass; hold (restart the soak) when a gate other than the
    sample count fails; wait while there are too few samples or the flag log has not answered.
    """
    if state.status != "ramping" or state.plan is None:
        return _nothing()
    plan = state.plan
    external = state.external_changes
    if external:
        return _respect(state, external, now)
    pending = state.pending_command_id
    outcome = state.outcomes.get(state.stage_command_id or "")
    if outcome is not None and outcome.rejection is not None and not _flag_at_stage(state):
        reason = f"command {state.stage_command_id} rejected: {outcome.rejection}"
        return StepResult([_halt(state, reason, now)], [], [])
    if state.paused:
        return _nothing()
    since = state.soak_started_at or state.last_record_at or now
    cause = _first_trigger(assessments, since)
    if cause is not None:
        return _roll_back(state, cause, now)
    if plan.sequential is not None and pending is None:
        ramp_since = state.ramp_started_at or since
        harmed = [v for v in _sequential(plan.sequential, assessments, ramp_since, now) if v.harm]
        if harmed:
            return _roll_back_proven(state, harmed, now)
    if pending is not None:
        sent = state.stage_command_sent_at or now
        if now - sent >= timedelta(seconds=plan.command_timeout_s):
            return StepResult([], _resend(state), [])
        return _nothing()
    stage = state.current_stage
    soak_start = state.soak_started_at
    if stage is None or soak_start is None:
        return _nothing()
    last = len(plan.stages) - 1
    if state.stage >= last:
        record = _record(
            state,
            "completed",
            stage=state.stage,
            percentage_bp=stage.percentage_bp,
            actor=CONTROLLER_ACTOR,
            reason="the last stage is reached",
            at=now,
        )
        return StepResult([record], [], [])
    if now - soak_start < stage.soak:
        return _nothing()
    gates, failed, evidence = _soak_evidence(state, plan, assessments, soak_start, now)
    if failed == ["samples"]:
        return _nothing()  # keep soaking until enough traffic has been seen
    if failed:
        gates["failed"] = list(failed)
        record = _record(
            state,
            "held",
            stage=state.stage,
            percentage_bp=stage.percentage_bp,
            actor=CONTROLLER_ACTOR,
            reason=f"gates failed over the soak: {', '.join(failed)}; soaking again",
            at=now,
            gates=gates,
        )
        return StepResult([record], [], list(evidence))
    advanced = _advance(
        state, "advanced", CONTROLLER_ACTOR, "gates passed for the whole soak", now, gates
    )
    return advanced._replace(snapshots=list(evidence))


def _flag_at_stage(state: ControllerState) -> bool:
    stage = state.current_stage
    return (
        stage is not None
        and state.flag_state.v2_pool_enabled
        and state.flag_state.v2_rollout_bp == stage.percentage_bp
    )


def _advance(
    state: ControllerState,
    action: str,
    actor: str,
    reason: str,
    now: datetime,
    gates: dict[str, JsonValue],
) -> StepResult:
    assert state.plan is not None
    target = state.stage + 1
    bp = state.plan.stages[target].percentage_bp
    command_id = _command_id(state, action, target)
    record = _record(
        state,
        action,
        stage=target,
        percentage_bp=bp,
        actor=actor,
        reason=reason,
        at=now,
        command_id=command_id,
        gates=gates,
    )
    return StepResult([record], _ramp_commands(state, command_id, bp, actor, reason), [])


def _resend(state: ControllerState) -> list[ControllerCommand]:
    """The unanswered stage command again, under its own id (decided at most once)."""
    stage = state.current_stage
    if stage is None or state.stage_command_id is None:
        return []
    reason = "re-sent: no answer from the flag log"
    commands = _ramp_commands(
        state, state.stage_command_id, stage.percentage_bp, CONTROLLER_ACTOR, reason
    )
    # The flag may have been enabled by the first attempt: then only the percentage is left.
    return [c for c in commands if c.command_id not in state.outcomes]


def _halt(state: ControllerState, reason: str, now: datetime) -> SwitchoverRecorded:
    return _record(
        state,
        "halted",
        stage=state.stage,
        percentage_bp=state.flag_state.v2_rollout_bp,
        actor=CONTROLLER_ACTOR,
        reason=reason,
        at=now,
    )


def _respect(
    state: ControllerState, changes: tuple[FlagChangeSeen, ...], now: datetime
) -> StepResult:
    """Someone else changed the ramp: record it and stop, never overwrite it."""
    rollback = next((c for c in changes if c.command == "rollback"), None)
    change = rollback or changes[0]
    who = f"{change.command} by {change.actor} (flag version {change.version}): {change.reason}"
    if rollback is not None:
        record = _record(
            state,
            "rolled_back",
            stage=state.stage,
            percentage_bp=state.flag_state.v2_rollout_bp,
            actor=CONTROLLER_ACTOR,
            reason=f"rolled back outside the controller: {who}",
            at=now,
            cause_id=rollback.cause_id or rollback.event_id,
        )
    else:
        record = _halt(state, f"halted: flag changed by hand: {who}", now)
    return StepResult([record], [], [])


# --- operators ------------------------------------------------------------------------------


def start(
    state: ControllerState, plan: SwitchoverPlan, *, actor: str, reason: str, now: datetime
) -> StepResult:
    """Begin a ramp at the plan's first stage (the plan is recorded with it)."""
    if state.status == "ramping":
        raise SwitchoverError(
            f"a switchover of {state.flag} is already ramping (stage {state.stage})"
        )
    first = plan.stages[0]
    planned = state.model_copy(update={"plan": plan})
    command_id = _command_id(state, "started", 0)
    gates: dict[str, JsonValue] = {"plan": plan.model_dump(mode="json")}
    record = _record(
        planned,
        "started",
        stage=0,
        percentage_bp=first.percentage_bp,
        actor=actor,
        reason=reason,
        at=now,
        command_id=command_id,
        gates=gates,
    )
    return StepResult(
        [record], _ramp_commands(state, command_id, first.percentage_bp, actor, reason), []
    )


def _ramping(state: ControllerState, verb: str) -> SwitchoverPlan:
    if state.status != "ramping" or state.plan is None:
        raise SwitchoverError(f"cannot {verb}: the switchover of {state.flag} is {state.status}")
    return state.plan


def pause(state: ControllerState, *, actor: str, reason: str, now: datetime) -> StepResult:
    """Stop advancing (the flag stays where it is; health rollbacks still happen)."""
    _ramping(state, "pause")
    if state.paused:
        raise SwitchoverError("already paused")
    stage = state.current_stage
    record = _record(
        state,
        "paused",
        stage=state.stage,
        percentage_bp=stage.percentage_bp if stage else 0,
        actor=actor,
        reason=reason,
        at=now,
    )
    return StepResult([record], [], [])


def resume(state: ControllerState, *, actor: str, reason: str, now: datetime) -> StepResult:
    """Continue after a pause, a halt or a rollback; the soak starts again now.

    After a halt or a rollback the ramp continues from where the flag is now: at the highest
    stage not above the flag's percentage (the flag is left as the operator set it), or at
    the first stage again when V2 is off or below it.
    """
    plan = state.plan
    if plan is None or state.status in ("idle", "completed"):
        raise SwitchoverError(f"cannot resume: the switchover of {state.flag} is {state.status}")
    if state.status == "ramping" and not state.paused:
        raise SwitchoverError("not paused")
    if state.status == "ramping":
        stage = state.current_stage
        record = _record(
            state,
            "resumed",
            stage=state.stage,
            percentage_bp=stage.percentage_bp if stage else 0,
            actor=actor,
            reason=reason,
            at=now,
            command_id=state.stage_command_id,
        )
        return StepResult([record], [], [])
    flag = state.flag_state
    reached = [
        i
        for i, s in enumerate(plan.stages)
        if flag.v2_pool_enabled and s.percentage_bp <= flag.v2_rollout_bp
    ]
    if reached:
        index = reached[-1]
        record = _record(
            state,
            "resumed",
            stage=index,
            percentage_bp=flag.v2_rollout_bp,
            actor=actor,
            reason=reason,
            at=now,
        )
        return StepResult([record], [], [])
    command_id = _command_id(state, "resumed", 0)
    bp = plan.stages[0].percentage_bp
    record = _record(
        state,
        "resumed",
        stage=0,
        percentage_bp=bp,
        actor=actor,
        reason=reason,
        at=now,
        command_id=command_id,
    )
    return StepResult([record], _ramp_commands(state, command_id, bp, actor, reason), [])


def promote(
    state: ControllerState,
    assessments: Sequence[HealthAssessed],
    *,
    actor: str,
    reason: str,
    now: datetime,
) -> StepResult:
    """Advance one stage now, without waiting for the soak (its figures are still recorded)."""
    plan = _ramping(state, "promote")
    if state.pending_command_id is not None:
        raise SwitchoverError("the current stage's command has not been answered yet")
    if state.stage >= len(plan.stages) - 1:
        raise SwitchoverError("already at the last stage")
    since = state.soak_started_at or state.last_record_at or now
    gates, failed, evidence = _soak_evidence(state, plan, assessments, since, now)
    gates["manual"] = True
    gates["failed"] = list(failed)
    return _advance(state, "promoted", actor, reason, now, gates)._replace(snapshots=list(evidence))


def describe(
    state: ControllerState, assessments: Sequence[HealthAssessed], now: datetime
) -> dict[str, Any]:
    """The status an operator sees: stage, soak elapsed and remaining, figures so far."""
    stage = state.current_stage
    soak_start = state.soak_started_at
    info: dict[str, Any] = {
        "flag": state.flag,
        "status": state.display_status,
        "plan": state.plan.name if state.plan else None,
        "stage": state.stage,
        "stages": len(state.plan.stages) if state.plan else 0,
        "stage_percentage": stage.percentage_bp / 100 if stage else None,
        "flag_version": state.flag_state.version,
        "flag_percentage": state.flag_state.v2_rollout_bp / 100,
        "v2_pool_enabled": state.flag_state.v2_pool_enabled,
        "pending_command": state.pending_command_id,
        "soak_started_at": soak_start.isoformat() if soak_start else None,
        "external_changes": [c.model_dump(mode="json") for c in state.external_changes],
    }
    if stage is not None and soak_start is not None and state.plan is not None:
        elapsed = (now - soak_start).total_seconds()
        info["soak_elapsed_s"] = elapsed
        info["soak_remaining_s"] = max(stage.soak_s - elapsed, 0.0)
        gates, failed = _soak_gates(state.plan, assessments, soak_start, now, state.ramp_started_at)
        info["gates"] = gates
        info["failing_gates"] = failed
    return info
