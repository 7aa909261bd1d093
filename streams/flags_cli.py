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
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any

import typer

from ledger.errors import LedgerError
from ledger.events import CommandRejected, FlagChanged

__all__ = ["flags_app", "parse_percentage_bp", "parse_switch"]

flags_app = typer.Typer(
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


TRUE = {"true", "on", "yes", "1", "enabled"}
FALSE = {"false", "off", "no", "0", "disabled"}


def parse_switch(text: str) -> bool:
    """``true``/``false`` (also on/off, yes/no, 1/0)."""
    word = text.strip().lower()
    if word in TRUE:
        return True
    if word in FALSE:
        return False
    raise ValueError(f"{text!r} is not true or false")


def parse_percentage_bp(text: str) -> int:
    """A percentage with at most two decimals, as basis points (``"12.5"`` -> 1250)."""
    try:
        value = Decimal(text.strip().rstrip("%"))
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a percentage") from None
    if not value.is_finite() or not Decimal(0) <= value <= Decimal(100):
        raise ValueError(f"{text!r} is not a percentage between 0 and 100")
    basis_points = value * 100
    if basis_points != basis_points.to_integral_value():
        raise ValueError(f"{text!r} has more than two decimals")
    return int(basis_points)


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


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=code)


def _settings(bootstrap: str | None, prefix: str | None, flag: str | None) -> Any:
    from ledger.cli import build_settings

    return build_settings(bootstrap, prefix, None, **({"flag": flag} if flag else {}))


def _send(
    settings: Any,
    command: str,
    fields: dict[str, Any],
    *,
    reason: str,
    actor: str | None,
    expected_version: int | None,
    timeout: float,
) -> None:
    """Build, publish and await one command; print the answer; exit 1 on rejection."""
    from ledger import flags
    from streams.flag_client import submit

    if not reason.strip():
        raise _fail("--reason must say why")
    data = {
        "command": command,
        "command_id": f"cli-{uuid.uuid4()}",
        "flag": settings.flag,
        "actor": actor or _user(),
        "reason": reason,
        "expected_version": expected_version,
        **fields,
    }
    try:
        model = flags.decode_command(json.dumps(data).encode())
        answer = submit(settings, model, timeout=timeout)
    except LedgerError as exc:
        raise _fail(str(exc)) from None
    if isinstance(answer, CommandRejected):
        raise _fail(
            f"{answer.command} rejected at version {answer.current_version}: {answer.rejection}"
        )
    typer.echo(f"{answer.flag} version {answer.version}: {answer.command} accepted")
    typer.echo(_values(answer))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def _values(event: FlagChanged) -> str:
    def pct(bp: int) -> str:
        return f"{bp / 100:.2f}%"

    parts = [
        f"v2_pool_enabled={str(event.v2_pool_enabled).lower()}",
        f"v2_rollout_percentage={pct(event.v2_rollout_bp)}",
        f"shadow_mode_enabled={str(event.shadow_mode_enabled).lower()}",
        f"shadow_sample_percentage={pct(event.shadow_sample_bp)}",
        f"frozen={str(event.frozen).lower()}",
    ]
    if event.session_overrides:
        parts.append(f"session_overrides={len(event.session_overrides)}")
    if event.environment_overrides:
        parts.append(f"environment_overrides={event.environment_overrides}")
    return "  ".join(parts)


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
    try:
        if name is FlagName.v2_pool_enabled:
            command, fields = ("enable" if parse_switch(value) else "disable"), {}
        elif name is FlagName.shadow_mode_enabled:
            command, fields = "set_shadow_mode", {"enabled": parse_switch(value)}
        elif name is FlagName.v2_rollout_percentage:
            command, fields = "set_percentage", {"percentage_bp": parse_percentage_bp(value)}
        else:
            command, fields = "set_shadow_sample", {"sample_bp": parse_percentage_bp(value)}
    except ValueError as exc:
        raise _fail(f"{name.value}: {exc}", code=2) from None
    settings = _settings(bootstrap_servers, topic_prefix, flag)
    _send(
        settings,
        command,
        fields,
        reason=reason,
        actor=actor,
        expected_version=expected_version,
        timeout=timeout,
    )


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
        raise _fail(f"pool must be v1, v2 or clear, not {pool!r}", code=2)
    field = "session_id" if kind is OverrideKind.session else "environment"
    if pool == "clear":
        command, fields = f"clear_{kind.value}_override", {field: key}
    else:
        command, fields = f"set_{kind.value}_override", {field: key, "pool": pool}
    _send(
        _settings(bootstrap_servers, topic_prefix, flag),
        command,
        fields,
        reason=reason,
        actor=actor,
        expected_version=expected_version,
        timeout=timeout,
    )


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
        _send(
            _settings(bootstrap_servers, topic_prefix, flag),
            command,
            {},
            reason=reason,
            actor=actor,
            expected_version=expected_version,
            timeout=timeout,
        )

    run.__doc__ = doc
    flags_app.command(command)(run)


_plain("freeze", "Freeze the flag: ramp changes are refused until unfreeze (rollback still works).")
_plain("unfreeze", "Lift a freeze.")
_plain("rollback", "Roll back at once: V2 off and 0% in one change.")


@flags_app.command("show")
def show(
    flag: FlagOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: TopicPrefixOption = None,
) -> None:
    """The flag's current state, folded from its log (the hash chain is checked)."""
    from ledger import flags
    from streams.flag_client import read_log

    settings = _settings(bootstrap_servers, topic_prefix, flag)
    try:
        events = read_log(settings, flag=settings.flag)
        flags.fold(events, settings.flag)  # raises ChainError on a broken log
    except LedgerError as exc:
        raise _fail(str(exc)) from None
    changes = [e for e in events if isinstance(e, FlagChanged)]
    if not changes:
        if as_json:
            typer.echo(json.dumps({"flag": settings.flag, "version": 0}))
        else:
            typer.echo(f"{settings.flag}: no change recorded yet (version 0, defaults apply)")
        return
    last = changes[-1]
    if as_json:
        typer.echo(last.model_dump_json(exclude={"type", "schema_version"}))
        return
    typer.echo(f"{last.flag} version {last.version} (last: {last.command} by {last.actor})")
    typer.echo(_values(last))
    for session, pool in sorted(last.session_overrides.items()):
        typer.echo(f"  session {session} -> {pool}")
    for environment, pool in sorted(last.environment_overrides.items()):
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

    from streams.flag_client import read_log

    settings = _settings(bootstrap_servers, topic_prefix, flag)
    try:
        events = read_log(settings, flag=settings.flag)
    except LedgerError as exc:
        raise _fail(str(exc)) from None
    table = Table(title=f"{settings.flag}: {len(events)} entries")
    for column in ("version", "at", "command", "actor", "reason", "result"):
        table.add_column(column)
    for event in events[-limit:]:
        if isinstance(event, FlagChanged):
            version, result = str(event.version), _values(event)
        else:
            version, result = f"({event.current_version})", f"REJECTED: {event.rejection}"
        table.add_row(
            version,
            event.at.isoformat(timespec="seconds"),
            event.command,
            event.actor,
            event.reason,
            result,
        )
    Console().print(table)


# Imported last on purpose, as in streams.worker_cli: ledger.cli registers this module.
from ledger.cli import BootstrapOption, TopicPrefixOption  # noqa: E402
