"""``migration-ledger flags ...``: send flag commands to the writer, read the flag log.

Every change is a command published on ``ledger.flag-commands``; the command waits for the
flag log writer's answer (matched by command id) and says plainly whether it was accepted
(with the new version) or rejected (with why, and a non-zero exit). ``show`` and ``history``
only read the flag log.
"""

from __future__ import annotations

import getpass
import json
import uuid
from enum import StrEnum
from typing import Annotated, Any

import typer

from ledger import flags
from ledger.cli.options import BootstrapOption, TopicPrefixOption, build_settings, fail
from ledger.errors import LedgerError
from ledger.events import CommandRejected, FlagChanged

__all__ = ["flags_app"]

flags_app: typer.Typer = typer.Typer(
    name="flags",
    help="Change the migration flag through the flag log, and read it.",
    no_args_is_help=True,
)


class FlagName(StrEnum):
    v2_pool_enabled = "v2_pool_enabled"
    v2_rollout_percentage = "v2_rollout_percentage"
    shadow_mode_enabled = "shadow_mode_enabled"
    shadow_sample_percentage = "shadow_sample_percentage"


class OverrideKind(StrEnum):
    session = "session"
    environment = "environment"


ReasonOption = Annotated[
    str, typer.Option("--reason", help="Why (kept in the flag log forever).", show_default=False)
]
ActorOption = Annotated[
    str | None, typer.Option("--actor", help="Who [default: your user name]", show_default=False)
]
ExpectedVersionOption = Annotated[
    int | None,
    typer.Option(
        "--expected-version",
        min=0,
        help="Refuse unless the flag is at this version (optimistic concurrency).",
        show_default=False,
    ),
]
FlagOption = Annotated[
    str | None,
    typer.Option("--flag", help="Migration flag [env MIGRATION_LEDGER_FLAG]", show_default=False),
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the writer's answer.")
]


def _settings(bootstrap: str | None, prefix: str | None, flag: str | None) -> Any:

    return build_settings(bootstrap, prefix, None, **({"flag": flag} if flag else {}))


def _common(
    settings: Any, reason: str, actor: str | None, expected_version: int | None
) -> dict[str, Any]:
    if not reason.strip():
        raise fail("--reason must say why", code=2)
    return {
        "command_id": f"cli-{uuid.uuid4()}",
        "flag": settings.flag,
        "actor": actor or _user(),
        "reason": reason,
        "expected_version": expected_version,
    }


def _build(command: str, common: dict[str, Any], fields: dict[str, Any]) -> Any:

    try:
        return flags.decode_command(json.dumps({"command": command, **common, **fields}))
    except LedgerError as exc:
        raise fail(str(exc), code=2) from None


def _send(settings: Any, command: Any, *, timeout: float) -> None:
    """Publish one command and await its answer; print it; exit 1 on rejection."""
    from ledger.kafka.flag_commands import submit

    try:
        answer = submit(settings, command, timeout=timeout)
    except LedgerError as exc:
        raise fail(str(exc)) from None
    if isinstance(answer, CommandRejected):
        why = answer.detail or answer.rejection
        raise fail(
            f"{answer.command} rejected ({answer.rejection}) at version "
            f"{answer.current_version}: {why}"
        )
    typer.echo(f"{answer.flag} version {answer.version}: {answer.command} accepted")
    typer.echo(_values(answer))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def _values(event: FlagChanged) -> str:

    return flags.FlagValues.of(event).describe()


@flags_app.command("set")
def set_flag(
    name: Annotated[FlagName, typer.Argument(help="Which value to set.")],
    value: Annotated[str, typer.Argument(help="true/false, or a percentage (two decimals).")],
    reason: ReasonOption,
    actor: ActorOption = None,
    expected_version: ExpectedVersionOption = None,
    flag: FlagOption = None,
    timeout: TimeoutOption = 30.0,
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: TopicPrefixOption = None,
) -> None:
    """Set one flag value, e.g. ``flags set v2_rollout_percentage 25 --reason "ramp"``."""

    settings = _settings(bootstrap_servers, topic_prefix, flag)
    try:
        command = flags.setting_command(
            name.value, value, **_common(settings, reason, actor, expected_version)
        )
    except LedgerError as exc:
        raise fail(str(exc), code=2) from None
    _send(settings, command, timeout=timeout)


@flags_app.command("override")
def override(
    kind: Annotated[OverrideKind, typer.Argument(help="session or environment")],
    key: Annotated[str, typer.Argument(help="The session id or environment name.")],
    pool: Annotated[str, typer.Argument(help="v1, v2, or clear")],
    reason: ReasonOption,
    actor: ActorOption = None,
    expected_version: ExpectedVersionOption = None,
    flag: FlagOption = None,
    timeout: TimeoutOption = 30.0,
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: TopicPrefixOption = None,
) -> None:
    """Pin one session or environment to a pool, or clear its pin."""
    if pool not in ("v1", "v2", "clear"):
        raise fail(f"pool must be v1, v2 or clear, not {pool!r}", code=2)
    field = "session_id" if kind is OverrideKind.session else "environment"
    if pool == "clear":
        command, fields = f"clear_{kind.value}_override", {field: key}
    else:
        command, fields = f"set_{kind.value}_override", {field: key, "pool": pool}
    settings = _settings(bootstrap_servers, topic_prefix, flag)
    common = _common(settings, reason, actor, expected_version)
    _send(settings, _build(command, common, fields), timeout=timeout)


def _plain(command: str, doc: str) -> None:
    def run(
        reason: ReasonOption,
        actor: ActorOption = None,
        expected_version: ExpectedVersionOption = None,
        flag: FlagOption = None,
        timeout: TimeoutOption = 30.0,
        bootstrap_servers: BootstrapOption = None,
        topic_prefix: TopicPrefixOption = None,
    ) -> None:
        settings = _settings(bootstrap_servers, topic_prefix, flag)
        common = _common(settings, reason, actor, expected_version)
        _send(settings, _build(command, common, {}), timeout=timeout)

    run.__doc__ = doc
    flags_app.command(command)(run)


_plain("freeze", "Freeze the flag: ramp changes are refused until unfreeze (rollback still works).")
_plain("unfreeze", "Lift a freeze.")


@flags_app.command("show")
def show(
    flag: FlagOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: TopicPrefixOption = None,
) -> None:
    """The flag's current state, folded from its log (the hash chain is checked)."""
    from ledger.kafka.flag_commands import read_log

    settings = _settings(bootstrap_servers, topic_prefix, flag)
    try:
        state = flags.fold(read_log(settings, flag=settings.flag), settings.flag)
    except LedgerError as exc:  # a broken hash chain included
        raise fail(str(exc)) from None
    values = state.values
    if as_json:
        document = {
            "flag": state.flag,
            "version": state.version,
            "hash": state.last_hash,
            "changed_at": None if state.changed_at is None else state.changed_at.isoformat(),
            "v2_pool_enabled": values.v2_pool_enabled,
            "v2_rollout_bp": values.v2_rollout_bp,
            "shadow_mode_enabled": values.shadow_mode_enabled,
            "shadow_sample_bp": values.shadow_sample_bp,
            "session_overrides": dict(values.session_overrides),
            "environment_overrides": dict(values.environment_overrides),
            "frozen": values.frozen,
        }
        typer.echo(json.dumps(document))
        return
    since = "" if state.changed_at is None else f" since {state.changed_at.isoformat()}"
    typer.echo(f"{state.flag} version {state.version}{since}: {values.describe()}")
    for session, pool in sorted(values.session_overrides.items()):
        typer.echo(f"  session {session} -> {pool}")
    for environment, pool in sorted(values.environment_overrides.items()):
        typer.echo(f"  environment {environment} -> {pool}")


@flags_app.command("history")
def history(
    flag: FlagOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Most recent N entries.")] = 50,
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: TopicPrefixOption = None,
) -> None:
    """The flag log, newest last: every change and every rejected command."""
    from rich.console import Console
    from rich.table import Table

    from ledger.kafka.flag_commands import read_log

    settings = _settings(bootstrap_servers, topic_prefix, flag)
    try:
        events = read_log(settings, flag=settings.flag)
    except LedgerError as exc:
        raise fail(str(exc)) from None
    table = Table(title=f"{settings.flag}: {len(events)} entries")
    for column in ("version", "at", "command", "actor", "reason", "result"):
        table.add_column(column)
    for event in events[-limit:]:
        if isinstance(event, FlagChanged):
            version, result = str(event.version), _values(event)
        else:
            version = f"({event.current_version})"
            result = f"REJECTED {event.rejection}: {event.detail}"
        table.add_row(
            version,
            event.at.isoformat(timespec="seconds"),
            event.command,
            event.actor,
            event.reason,
            result,
        )
    Console().print(table)
