"""A switchover run in memory: a flag log writer, health windows and a controller in a loop.

The flag log is decided by ``ledger.flags`` itself (expected versions, frozen flags, no-op
commands, a command id decided once), windows are built and judged by the real health and
policy code: only Kafka is left out.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from ledger import flags
from ledger.events import CommandRejected, FlagChanged, HealthAssessed, SwitchoverRecorded
from ledger.policy import HealthPolicy, assess, judged
from ledger.switchover import (
    ControllerCommand,
    ControllerState,
    StepResult,
    SwitchoverPlan,
    apply,
    rebuild,
    step,
    to_flag_command,
)
from tests.unit.health_factories import T0, window_of

FLAG = "v2_migration"
Answer = FlagChanged | CommandRejected | None
Health = Literal["healthy", "v2_errors", "v2_slow", "v2_slower", "v1_spike", "mismatches", "quiet"]


@dataclass
class FlagLog:
    """The flag log writer's decisions (``ledger.flags``), without Kafka."""

    flag: str = FLAG
    events: list[FlagChanged | CommandRejected] = field(default_factory=list)
    state: flags.FlagState = field(default_factory=lambda: flags.initial_state(FLAG))

    @property
    def version(self) -> int:
        return self.state.version

    @property
    def enabled(self) -> bool:
        return self.state.values.v2_pool_enabled

    @property
    def bp(self) -> int:
        return self.state.values.v2_rollout_bp

    def answer(
        self, command: flags.AnyCommand, at: datetime
    ) -> FlagChanged | CommandRejected | None:
        event = flags.decide_command(self.state, command, at=at)
        if event is not None:
            self.events.append(event)
            self.state = flags.apply(self.state, event)
        return event

    def decide(
        self,
        command: str,
        command_id: str,
        *,
        actor: str,
        reason: str,
        at: datetime,
        percentage_bp: int | None = None,
        cause_id: str | None = None,
        expected_version: int | None = None,
    ) -> FlagChanged | CommandRejected | None:
        data: dict[str, object] = {
            "command": command,
            "command_id": command_id,
            "flag": self.flag,
            "actor": actor,
            "reason": reason,
            "cause_id": cause_id,
            "expected_version": expected_version,
        }
        if percentage_bp is not None:
            data["percentage_bp"] = percentage_bp
        return self.answer(flags.decode_command(json.dumps(data)), at)

    def send(
        self, command: ControllerCommand, at: datetime
    ) -> FlagChanged | CommandRejected | None:
        return self.answer(to_flag_command(command), at)


def windows_for(
    health: Health, start: datetime, size: timedelta, seed: int, policy: HealthPolicy
) -> list[HealthAssessed]:
    """V1's and V2's ``"*"`` windows for one period, judged like the health monitor does."""
    if health == "quiet":
        return []
    rng = random.Random(seed)
    base = [rng.lognormvariate(3, 0.3) for _ in range(40)]
    v1_lat = [v * 3 for v in base] if health == "v1_spike" else base
    # A healthy V2 answers like V1 give or take 5%: the judge's false alarms stay out of the
    # controller tests (they are the policy tests' business).
    factor = {"v2_slow": 4.0, "v2_slower": 1.3}.get(health, 1.0)
    v2_lat = [v * factor * rng.uniform(0.95, 1.05) for v in base]
    v1 = window_of(
        "v1",
        count=40,
        errors=20 if health == "v1_spike" else 0,
        latencies=v1_lat,
        operation="*",
        start=start,
        size=size,
    )
    v2 = window_of(
        "v2",
        count=40,
        errors=15 if health == "v2_errors" else 0,
        latencies=v2_lat,
        comparisons=40,
        mismatches=1 if health == "mismatches" else 0,
        operation="*",
        start=start,
        size=size,
    )
    verdict = assess(v1, v2, policy, {}, start + size)
    return [judged(v1, verdict), judged(v2, verdict, v1)]


@dataclass
class Run:
    """One controller, its flag log and its health windows, advanced a window at a time."""

    plan: SwitchoverPlan
    window: timedelta = timedelta(seconds=2)
    policy: HealthPolicy = field(default_factory=HealthPolicy)
    now: datetime = T0
    flags: FlagLog = field(default_factory=FlagLog)
    records: list[SwitchoverRecorded] = field(default_factory=list)
    assessments: list[HealthAssessed] = field(default_factory=list)
    commands: list[ControllerCommand] = field(default_factory=list)
    results: list[StepResult] = field(default_factory=list)
    state: ControllerState = field(default_factory=lambda: ControllerState(flag=FLAG))

    def publish(self, result: StepResult, *, deliver_commands: bool = True) -> None:
        """Records first, then commands (as the stream processor does)."""
        self.results.append(result)
        for record in result.records:
            self.records.append(record)
            self.state = apply(self.state, record)
        for command in result.commands:
            self.commands.append(command)
            if deliver_commands:
                self.deliver(command)

    def deliver(self, command: ControllerCommand) -> None:
        event = self.flags.send(command, self.now)
        if event is not None:
            self.state = apply(self.state, event)

    def by_hand(self, command: str, **kwargs: object) -> None:
        """An operator's flag command, straight to the writer (not through the controller)."""
        event = self.flags.decide(
            command,
            f"hand-{len(self.flags.events)}",
            actor="alice",
            reason="by hand",
            at=self.now,
            **kwargs,  # type: ignore[arg-type]
        )
        if event is not None:
            self.state = apply(self.state, event)

    def tick(self, health: Health = "healthy", *, deliver_commands: bool = True) -> StepResult:
        start = self.now
        self.now += self.window
        self.assessments += windows_for(
            health, start, self.window, len(self.assessments), self.policy
        )
        result = step(self.state, self.assessments, self.now)
        self.publish(result, deliver_commands=deliver_commands)
        return result

    def rebuilt(self) -> ControllerState:
        return rebuild(FLAG, self.records, self.flags.events)
