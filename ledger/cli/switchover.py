"""``migration-ledger switchover status|start|pause|resume|promote`` and ``rollback``.

Each command rebuilds the controller's state from the log (``ledger.health`` and
``ledger.flag-events``, read from the beginning) exactly as the worker does, decides with the
same pure functions (``ledger.switchover``), then publishes the record before its flag
commands and waits for the flag log writer's answer. Heavy imports (kafka, scipy) stay inside
the functions so ``--help`` stays fast.
"""

from __future__ import annotations

import getpass
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from ledger import switchover, wire
from ledger.cli.options import (
    BootstrapOption,
    DuckdbOption,
    TopicPrefixOption,
    build_settings,
    fail,
)
from ledger.errors import EventDecodeError, LedgerError, SwitchoverError
from ledger.events import (
    CommandRejected,
    Event,
    FlagChanged,
    HealthAssessed,
    RollbackTriggered,
    SwitchoverRecorded,
    encode_event,
)
from ledger.health import ALL_OPERATIONS
from ledger.kafka.clients import producer, publish_errors
from ledger.kafka.log import LogReader, Record
from ledger.settings import Settings
from ledger.switchover import (
    KEEP_WINDOWS,
    ControllerCommand,
    ControllerState,
    StepResult,
    describe,
    encode_controller_command,
    rebuild,
)

__all__ = ["app", "rollback"]

app = typer.Typer(
    name="switchover",
    help="Drive the gradual switchover to V2: status, start, pause, resume, promote.",
    no_args_is_help=True,
)

ReasonOption = Annotated[str, typer.Option("--reason", help="Why (kept in the log).")]
ActorOption = Annotated[
    str | None, typer.Option("--actor", help="Who [default: the login name].", show_default=False)
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the flag log writer.")
]


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return getpass.getuser() or "operator"
    except (KeyError, OSError):
        return "operator"


def _now() -> datetime:
    return datetime.now(tz=UTC)


# --- reading and writing the log -------------------------------------------------------------


def read_log(
    settings: Settings,
    logicals: list[str],
    *,
    timeout_s: float = 15.0,
    keep: Callable[[Record], bool] | None = None,
    until: Callable[[list[Event]], bool] | None = None,
) -> list[Event]:
    """Every decodable event of these topics, from offset 0 to the end seen at the start.

    ``keep(record)`` may skip records before they are decoded. With ``until``, reading goes on
    past that end (tailing) until ``until(events)`` holds or ``timeout_s`` passes; the caller
    judges what is still missing.
    """

    def decoded(records: list[Record]) -> list[Event]:
        events = []
        for record in records:
            if keep is not None and not keep(record):
                continue
            try:
                events.append(wire.decode(record.value, record.topic))
            except EventDecodeError:
                continue
        return events

    topics = [settings.topic(logical) for logical in logicals]
    with LogReader(settings, topics, timeout_s=timeout_s) as reader:
        if not reader.partitions():
            return []
        reader.seek_to_beginning()
        if until is None:
            return decoded(reader.read_to_end())
        events: list[Event] = []
        deadline = time.monotonic() + timeout_s
        while not until(events) and time.monotonic() < deadline:
            events.extend(decoded(reader.poll()))
        return events


def rebuild_from_log(
    settings: Settings, *, timeout_s: float = 15.0
) -> tuple[ControllerState, list[HealthAssessed]]:
    """The controller's state and the health windows, as the worker rebuilds them."""

    health = settings.topic("health")
    flag_key = settings.flag.encode()
    horizon_ms = (time.time() - KEEP_WINDOWS.total_seconds()) * 1000

    def keep(record: Record) -> bool:
        # As the worker does: the flag's own records always, health windows of the last day.
        return record.topic != health or record.key == flag_key or record.timestamp_ms >= horizon_ms

    events = read_log(settings, ["health", "flag_events"], timeout_s=timeout_s, keep=keep)
    records = [e for e in events if isinstance(e, SwitchoverRecorded)]
    flag_log = [e for e in events if isinstance(e, FlagChanged | CommandRejected)]
    windows = [e for e in events if isinstance(e, HealthAssessed)]
    seen: set[str] = set()
    unique = []
    for record in records:
        if record.event_id not in seen:  # a record re-read after a crash counts once
            seen.add(record.event_id)
            unique.append(record)
    return rebuild(settings.flag, unique, flag_log), windows


def publish(settings: Settings, result: StepResult, *, timeout_s: float = 15.0) -> None:
    """Records and snapshots first (flushed), then the flag commands."""
    key = settings.flag.encode()
    with publish_errors("publish to Kafka"):
        sender = producer(settings, acks="all", request_timeout_ms=int(timeout_s * 1000))
        try:
            for event in (*result.records, *result.snapshots):
                sender.send(settings.topic("health"), key=key, value=encode_event(event))
            sender.flush(timeout=timeout_s)
            for command in result.commands:
                sender.send(
                    settings.topic("flag_commands"),
                    key=key,
                    value=encode_controller_command(command),
                )
            sender.flush(timeout=timeout_s)
        finally:
            sender.close(timeout=timeout_s)


def await_answers(
    settings: Settings, command_ids: list[str], *, timeout_s: float
) -> dict[str, Event]:
    """The flag log writer's answer (FlagChanged or CommandRejected) to each command id.

    One consumer reads the log once and then tails it, rather than re-reading it all.
    """

    answers: dict[str, Event] = {}
    looked_at = 0

    def answered(events: list[Event]) -> bool:
        nonlocal looked_at
        for event in events[looked_at:]:
            if isinstance(event, FlagChanged | CommandRejected) and event.command_id in command_ids:
                answers[event.command_id] = event
        looked_at = len(events)
        return len(answers) == len(command_ids)

    read_log(settings, ["flag_events"], timeout_s=timeout_s, until=answered)
    return answers


def _report_answers(
    settings: Settings, commands: list[ControllerCommand], timeout_s: float
) -> None:

    if not commands:
        return
    ids = [c.command_id for c in commands]
    answers = await_answers(settings, ids, timeout_s=timeout_s)
    for command in commands:
        answer = answers.get(command.command_id)
        if answer is None:
            raise fail(
                f"no answer from the flag log writer to {command.command} within {timeout_s:g} s "
                "(is `migration-ledger worker` running?)",
                code=2,
            )
        if isinstance(answer, CommandRejected):
            raise fail(f"{command.command} rejected: {answer.rejection} ({answer.reason})")
        if isinstance(answer, FlagChanged):
            typer.echo(
                f"{command.command}: flag version {answer.version}, V2 "
                f"{'on' if answer.v2_pool_enabled else 'off'} at {answer.v2_rollout_bp / 100:g} %"
            )


def _settings(
    bootstrap_servers: str | None, topic_prefix: str | None, duckdb: Path | None
) -> Settings:

    return build_settings(bootstrap_servers, topic_prefix, duckdb)


# --- commands ----------------------------------------------------------------------------------


@app.command("status")
def status(
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: TopicPrefixOption = None,
    duckdb: DuckdbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Where the switchover stands: stage, soak elapsed and remaining, gate figures so far."""

    settings = _settings(bootstrap_servers, topic_prefix, duckdb)
    try:
        state, windows = rebuild_from_log(settings)
    except LedgerError as exc:
        raise fail(str(exc)) from None
    info = describe(state, windows, _now())
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    _print_status(info)


def _print_status(info: dict[str, Any]) -> None:
    # Deferred: rich loads only when something is printed.
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"switchover of {info['flag']}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    stage = info["stage"]
    shown_stage = f"{stage + 1} of {info['stages']}" if stage >= 0 else "-"
    rows = [
        ("status", info["status"]),
        ("plan", info["plan"] or "-"),
        ("stage", shown_stage),
        (
            "stage percentage",
            f"{info['stage_percentage']:g} %" if info["stage_percentage"] else "-",
        ),
        (
            "flag",
            f"v{info['flag_version']}: V2 {'on' if info['v2_pool_enabled'] else 'off'} "
            f"at {info['flag_percentage']:g} %",
        ),
        ("pending command", info["pending_command"] or "-"),
    ]
    if "soak_elapsed_s" in info:
        rows.append(
            ("soak", f"{info['soak_elapsed_s']:.0f} s done, {info['soak_remaining_s']:.0f} s left")
        )
        gates = info["gates"]
        rows.append(("samples", f"{gates['samples']} (need {gates['min_samples']})"))
        rows.append(
            ("mismatch rate", f"{gates['mismatch_rate']:.4f} (max {gates['max_mismatch_rate']:g})")
        )
        rows.append(("judge", f"{gates['judge_verdict']} (score {gates['judge_score']:.0f})"))
        rows.append(("failing gates", ", ".join(info["failing_gates"]) or "none"))
    for change in info["external_changes"]:
        rows.append(
            ("changed by hand", f"{change['command']} by {change['actor']} (v{change['version']})")
        )
    for name, value in rows:
        table.add_row(name, str(value))
    Console().print(table)


def _instruct(
    verb: str,
    decide: Any,
    bootstrap_servers: str | None,
    topic_prefix: str | None,
    duckdb: Path | None,
    timeout: float,
) -> None:

    settings = _settings(bootstrap_servers, topic_prefix, duckdb)
    try:
        state, windows = rebuild_from_log(settings)
        result = decide(state, windows)
        publish(settings, result)
    except SwitchoverError as exc:
        raise fail(f"cannot {verb}: {exc}") from None
    except LedgerError as exc:
        raise fail(str(exc)) from None
    for record in result.records:
        typer.echo(f"{record.action}: stage {record.stage + 1} ({record.percentage_bp / 100:g} %)")
    _report_answers(settings, result.commands, timeout)


@app.command("start")
def start(
    reason: ReasonOption,
    plan: Annotated[
        str, typer.Option("--plan", help="default, demo, or a TOML plan file.")
    ] = "default",
    actor: ActorOption = None,
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: TopicPrefixOption = None,
    duckdb: DuckdbOption = None,
    timeout: TimeoutOption = 15.0,
) -> None:
    """Start ramping V2 at the plan's first stage (the plan is recorded with the start)."""

    try:
        chosen = switchover.load_plan(plan)
    except LedgerError as exc:
        raise fail(str(exc)) from None
    who = _actor(actor)
    _instruct(
        "start",
        lambda state, _w: switchover.start(state, chosen, actor=who, reason=reason, now=_now()),
        bootstrap_servers,
        topic_prefix,
        duckdb,
        timeout,
    )


@app.command("pause")
def pause(
    reason: ReasonOption,
    actor: ActorOption = None,
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: TopicPrefixOption = None,
    duckdb: DuckdbOption = None,
) -> None:
    """Stop advancing; the flag stays where it is and health rollbacks still happen."""

    who = _actor(actor)
    _instruct(
        "pause",
        lambda state, _w: switchover.pause(state, actor=who, reason=reason, now=_now()),
        bootstrap_servers,
        topic_prefix,
        duckdb,
        0.1,
    )


@app.command("resume")
def resume(
    reason: ReasonOption,
    actor: ActorOption = None,
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: TopicPrefixOption = None,
    duckdb: DuckdbOption = None,
    timeout: TimeoutOption = 15.0,
) -> None:
    """Continue after a pause, a halt or a rollback (the soak starts again)."""

    who = _actor(actor)
    _instruct(
        "resume",
        lambda state, _w: switchover.resume(state, actor=who, reason=reason, now=_now()),
        bootstrap_servers,
        topic_prefix,
        duckdb,
        timeout,
    )


@app.command("promote")
def promote(
    reason: ReasonOption,
    actor: ActorOption = None,
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: TopicPrefixOption = None,
    duckdb: DuckdbOption = None,
    timeout: TimeoutOption = 15.0,
) -> None:
    """Advance one stage now, without waiting for the soak (its figures are recorded)."""

    who = _actor(actor)
    _instruct(
        "promote",
        lambda state, windows: switchover.promote(
            state, windows, actor=who, reason=reason, now=_now()
        ),
        bootstrap_servers,
        topic_prefix,
        duckdb,
        timeout,
    )


def rollback(
    reason: ReasonOption,
    actor: ActorOption = None,
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: TopicPrefixOption = None,
    duckdb: DuckdbOption = None,
    timeout: TimeoutOption = 15.0,
) -> None:
    """Roll V2 back now (off and 0 % at once), keeping the latest health figures as evidence."""

    settings = _settings(bootstrap_servers, topic_prefix, duckdb)
    who = _actor(actor)
    now = _now()
    command_id = f"rollback:{settings.flag}:manual:{uuid.uuid4().hex}"
    try:
        windows = [
            e
            for e in read_log(settings, ["health"])
            if isinstance(e, HealthAssessed) and e.pool == "v2" and e.operation == ALL_OPERATIONS
        ]
    except LedgerError:
        windows = []  # the evidence is a courtesy: never delay a rollback by hand for it
    latest = max(windows, key=lambda w: w.window_end) if windows else None
    snapshot = RollbackTriggered(
        event_id=f"rollback-{uuid.uuid4().hex}",
        flag=settings.flag,
        command_id=command_id,
        actor=who,
        reason=reason,
        cause_id=None,
        triggers=latest.triggers if latest else (),
        operation=latest.operation if latest else None,
        window_start=latest.window_start if latest else None,
        window_end=latest.window_end if latest else None,
        metrics=dict(latest.metrics) if latest else {},
        baseline_id=latest.event_id if latest else None,
        at=now,
    )
    command = ControllerCommand(
        command="rollback", command_id=command_id, flag=settings.flag, actor=who, reason=reason
    )
    try:
        publish(settings, StepResult([], [command], [snapshot]))
    except LedgerError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"rollback sent ({command_id})")
    _report_answers(settings, [command], timeout)
