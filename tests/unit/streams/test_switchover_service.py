"""The controller service without Kafka: rebuilt from the log, records before commands."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from ledger.events import GateVerdict, SwitchoverRecorded, decode_event, encode_event
from ledger.policy import HealthPolicy
from ledger.switchover import ControllerCommand, Stage, SwitchoverPlan, start
from streams.switchover import SwitchoverService
from tests.unit.health_factories import T0
from tests.unit.switchover_sim import FLAG, FlagLog, windows_for

PLAN = SwitchoverPlan(
    name="t",
    stages=(Stage(percentage_bp=500, soak_s=4), Stage(percentage_bp=10000, soak_s=0)),
    min_samples=40,
    command_timeout_s=10,
)


@dataclass
class Harness:
    now: float = T0.timestamp()
    log: list[tuple[str, bytes]] = field(default_factory=list)
    flags: FlagLog = field(default_factory=FlagLog)

    def wall(self) -> float:
        return self.now

    async def publish_record(self, key: bytes | None, value: bytes) -> None:
        self.log.append(("record", value))

    async def publish_command(self, command: ControllerCommand) -> None:
        self.log.append(("command", command.model_dump_json().encode()))

    def service(self) -> SwitchoverService:
        return SwitchoverService(
            flag=FLAG,
            publish_record=self.publish_record,
            publish_command=self.publish_command,
            wall=self.wall,
        )


def _started(harness: Harness) -> SwitchoverService:
    service = harness.service()
    service.caught_up = True
    result = start(service.state, PLAN, actor="alice", reason="go", now=T0)
    asyncio.run(service.publish(result))
    for command in result.commands:
        event = harness.flags.send(command, T0)
        assert event is not None
        service.fold_raw(True, encode_event(event))
    return service


def test_nothing_is_decided_before_the_log_has_been_read_to_its_end() -> None:
    harness = Harness()
    service = harness.service()

    assert asyncio.run(service.tick()) is None
    assert harness.log == []


def test_a_record_is_published_before_the_commands_it_announces() -> None:
    harness = Harness()
    _started(harness)

    kinds = [kind for kind, _ in harness.log]
    assert kinds == ["record", "command", "command"]


def test_its_own_record_read_back_from_the_log_is_not_folded_twice() -> None:
    harness = Harness()
    service = _started(harness)
    before = service.state

    for kind, value in harness.log:
        if kind == "record":
            service.fold_raw(False, value)

    assert service.state == before


def test_a_service_restarted_on_the_same_log_reaches_the_same_state_and_advances() -> None:
    harness = Harness()
    first = _started(harness)
    for i in range(3):
        for window in windows_for(
            "healthy", T0 + i * timedelta(seconds=2), timedelta(seconds=2), i, _policy()
        ):
            harness.log.append(("record", encode_event(window)))
            first.fold(window)

    second = harness.service()
    for kind, value in harness.log:
        if kind == "record":
            second.fold_raw(False, value)
    for event in harness.flags.events:
        second.fold_raw(True, encode_event(event))
    second.caught_up = True
    harness.now = (T0 + timedelta(seconds=6)).timestamp()

    assert second.state == first.state
    result = asyncio.run(second.tick())
    assert result is not None
    assert [r.action for r in result.records] == ["advanced"]
    sent = [decode_event(v) for k, v in harness.log if k == "record"]
    records = [e for e in sent if isinstance(e, SwitchoverRecorded)]
    assert records[-1].action == "advanced"
    # the gate verdicts it cites follow the record on the same topic (issue 15)
    verdicts = [e for e in sent[sent.index(records[-1]) :] if isinstance(e, GateVerdict)]
    assert [v.event_id for v in verdicts] == records[-1].gates["verdict_ids"]
    assert all(v.passed for v in verdicts)


def test_an_unanswered_command_is_re_sent_at_most_once_per_timeout() -> None:
    harness = Harness()
    service = harness.service()
    service.caught_up = True
    asyncio.run(service.publish(start(service.state, PLAN, actor="alice", reason="go", now=T0)))
    commands_before = sum(1 for kind, _ in harness.log if kind == "command")

    for seconds in (11, 12, 13, 22):
        harness.now = (T0 + timedelta(seconds=seconds)).timestamp()
        asyncio.run(service.tick())

    resent = sum(1 for kind, _ in harness.log if kind == "command") - commands_before
    assert resent == 2 * 2  # enable + set_percentage, at 11 s and again at 22 s


def _policy() -> HealthPolicy:
    return HealthPolicy()


def test_old_health_windows_are_skipped_unread_but_the_flags_records_never() -> None:
    harness = Harness()
    service = harness.service()
    window = windows_for("healthy", T0, timedelta(seconds=2), 0, _policy())[1]
    record = start(service.state, PLAN, actor="alice", reason="go", now=T0).records[0]
    two_days_ago = int((harness.now - 2 * 86_400) * 1000)

    service.fold_raw(False, encode_event(window), key=b"v2", timestamp_ms=two_days_ago)
    service.fold_raw(False, encode_event(record), key=FLAG.encode(), timestamp_ms=two_days_ago)
    service.fold_raw(False, encode_event(window), key=b"v2", timestamp_ms=int(harness.now * 1000))

    assert service.state.status == "ramping"
    assert service.assessments == [window]
