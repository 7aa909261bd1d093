"""The migration flag as an event log: commands are decided into events, state is their fold.

Only the flag log writer calls :func:`decide_command`; everybody else sends commands and folds
the events it appended (:func:`apply`, :func:`fold`, :func:`state_at`).

Rules (the whole of them):

* Every command gets exactly one answer: a ``FlagChanged`` or a ``CommandRejected``.
  A command id that was already answered gets ``None`` (the writer must not append twice after
  a crash), which is why the state remembers the ids of rejected commands too.
* Checks in order: ``expected_version`` (``version_conflict``), then *no change*
  (``no_change``: a command that would leave every value as it is is refused, so every version
  of the log is a real change), then *frozen* (``frozen``).
* A frozen flag refuses **ramp** changes: any change that gives V2 more work, i.e. enabling V2,
  raising the rollout percentage, a session or environment override that now says ``v2`` (set
  to v2, or a ``v1`` override cleared), turning shadow mode on, raising the shadow sample.
  Everything that lowers V2's exposure (disable, lower percentage, v1 overrides, rollback),
  ``freeze`` and ``unfreeze`` is always accepted.
* ``rollback`` sets V2 off and 0 % at once and drops every override that says ``v2`` (overrides
  win over "V2 disabled" in the rollout precedence, so without that a rollback would leave
  overridden sessions on the failing pool). ``v1`` overrides and shadow settings are kept.
* Percentages have at most two decimals and are stored as basis points (``12.34`` -> 1234).

``FlagChanged.hash`` is the SHA-256 of :func:`canonical_json` of the event without ``hash``;
versions count from 1 without gaps and the first ``prev_hash`` is :data:`GENESIS_HASH`.
:func:`apply` checks each event's version, link and hash, so a state is never built on a
broken log (``ChainError``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from ledger.errors import ChainError, CommandError
from ledger.events import CommandRejected, Count, FlagChanged, Id, Pool

__all__ = [
    "GENESIS_HASH",
    "AnyCommand",
    "ClearEnvironmentOverride",
    "ClearSessionOverride",
    "Disable",
    "Enable",
    "FlagCommand",
    "FlagState",
    "FlagValues",
    "Freeze",
    "Rejection",
    "Rollback",
    "SetEnvironmentOverride",
    "SetPercentage",
    "SetSessionOverride",
    "SetShadowMode",
    "SetShadowSample",
    "Unfreeze",
    "apply",
    "canonical_json",
    "decide_command",
    "decode_command",
    "encode_command",
    "flag_event_hash",
    "flag_event_id",
    "fold",
    "format_bp",
    "initial_state",
    "parse_percentage",
    "ramp_changes",
    "rejection_event_id",
    "setting_command",
    "state_at",
]

#: ``prev_hash`` of version 1.
GENESIS_HASH = "0" * 64

NonEmpty = Annotated[str, Field(min_length=1, max_length=512)]
BasisPoints = Annotated[int, Field(ge=0, le=10_000)]


class Rejection(StrEnum):
    """Why a command was refused (``CommandRejected.rejection``)."""

    VERSION_CONFLICT = "version_conflict"
    NO_CHANGE = "no_change"
    FROZEN = "frozen"


# --- percentages -----------------------------------------------------------------------------


def parse_percentage(value: Decimal | str | int | float) -> int:
    """A percentage with at most two decimals, 0 to 100, as basis points (``"12.34"`` -> 1234).

    Raises ``CommandError`` saying what is wrong: not a number, too many decimals, out of range.
    """
    if isinstance(value, bool):
        raise CommandError(f"percentage: expected a number, got {value!r}")
    try:
        number = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise CommandError(f"percentage: {value!r} is not a number") from None
    if not number.is_finite():
        raise CommandError(f"percentage: {value!r} is not a finite number")
    if not 0 <= number <= 100:
        raise CommandError(f"percentage: {value!r} is outside 0..100")
    bp = number * 100
    if bp != bp.to_integral_value():
        raise CommandError(f"percentage: {value!r} has more than two decimals")
    return int(bp)


def format_bp(bp: int) -> str:
    """Basis points as a percentage for people: 1234 -> ``"12.34%"``, 500 -> ``"5%"``."""
    whole, cents = divmod(bp, 100)
    return f"{whole}%" if cents == 0 else f"{whole}.{cents:02d}%"


# --- commands --------------------------------------------------------------------------------


class _Command(BaseModel):
    """What every flag command carries: who, why, what caused it, and the version it expects."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    # Ids under the event contract's limits: the FlagChanged copies them (ledger.wire).
    command_id: Id
    flag: NonEmpty
    actor: NonEmpty
    reason: NonEmpty
    cause_id: Id | None = None
    expected_version: Count | None = None


def _accept_percentage(data: Any, target: str) -> Any:
    """Accept ``percentage`` (a decimal number or text) in place of the basis points field."""
    if isinstance(data, dict) and "percentage" in data:
        data = dict(data)
        given = data.pop("percentage")
        if target in data:
            raise ValueError(f"give either percentage or {target}, not both")
        if not isinstance(given, str | int | float | Decimal) or isinstance(given, bool):
            raise ValueError(f"percentage: expected a number, got {given!r}")
        try:
            data[target] = parse_percentage(given)
        except CommandError as exc:
            raise ValueError(str(exc)) from None
    return data


def _percentage_given(data: Any) -> Any:
    return _accept_percentage(data, "percentage_bp")


def _sample_given(data: Any) -> Any:
    return _accept_percentage(data, "sample_bp")


class Enable(_Command):
    """Turn the V2 pool on (the rollout percentage then decides who goes there)."""

    command: Literal["enable"] = "enable"


class Disable(_Command):
    """Turn the V2 pool off; the percentage is kept for when it is enabled again."""

    command: Literal["disable"] = "disable"


class SetPercentage(_Command):
    """Set the V2 rollout percentage (basis points; ``percentage`` accepted on input)."""

    command: Literal["set_percentage"] = "set_percentage"
    percentage_bp: BasisPoints

    _accept_percentage = model_validator(mode="before")(_percentage_given)


class SetShadowMode(_Command):
    """Turn the shadow execution on V2 on or off."""

    command: Literal["set_shadow_mode"] = "set_shadow_mode"
    enabled: bool


class SetShadowSample(_Command):
    """Set the share of operations shadowed on V2 (``sample_bp``; ``percentage`` accepted)."""

    command: Literal["set_shadow_sample"] = "set_shadow_sample"
    sample_bp: BasisPoints

    _accept_percentage = model_validator(mode="before")(_sample_given)


class SetSessionOverride(_Command):
    """Pin one session to a pool, whatever the percentage says."""

    command: Literal["set_session_override"] = "set_session_override"
    session_id: Id
    pool: Pool


class ClearSessionOverride(_Command):
    command: Literal["clear_session_override"] = "clear_session_override"
    session_id: Id


class SetEnvironmentOverride(_Command):
    """Pin one environment to a pool; wins over session overrides."""

    command: Literal["set_environment_override"] = "set_environment_override"
    environment: NonEmpty
    pool: Pool


class ClearEnvironmentOverride(_Command):
    command: Literal["clear_environment_override"] = "clear_environment_override"
    environment: NonEmpty


class Freeze(_Command):
    """Refuse ramp changes until unfrozen (rollback is still accepted)."""

    command: Literal["freeze"] = "freeze"


class Unfreeze(_Command):
    command: Literal["unfreeze"] = "unfreeze"


class Rollback(_Command):
    """V2 off, 0 %, and no override to V2 left: accepted even when frozen."""

    command: Literal["rollback"] = "rollback"


AnyCommand: TypeAlias = (
    Enable
    | Disable
    | SetPercentage
    | SetShadowMode
    | SetShadowSample
    | SetSessionOverride
    | ClearSessionOverride
    | SetEnvironmentOverride
    | ClearEnvironmentOverride
    | Freeze
    | Unfreeze
    | Rollback
)
FlagCommand = Annotated[AnyCommand, Field(discriminator="command")]

_COMMAND: TypeAdapter[AnyCommand] = TypeAdapter(FlagCommand)


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        # The union tag is noise in a location: "set_percentage.percentage_bp" -> the field.
        loc = [str(p) for p in error["loc"]]
        if loc and loc[0] in _COMMAND_NAMES:
            loc = loc[1:]
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = ["command"]
        message = error["msg"].removeprefix("Value error, ")
        # Model-level checks (``percentage``) already name their field in the message.
        parts.append(f"{'.'.join(loc)}: {message}" if loc else message)
    return "; ".join(parts)


_COMMAND_NAMES = frozenset(
    model.model_fields["command"].default
    for model in (
        Enable,
        Disable,
        SetPercentage,
        SetShadowMode,
        SetShadowSample,
        SetSessionOverride,
        ClearSessionOverride,
        SetEnvironmentOverride,
        ClearEnvironmentOverride,
        Freeze,
        Unfreeze,
        Rollback,
    )
)


def decode_command(data: bytes | str) -> AnyCommand:
    """One command from its JSON form; ``CommandError`` names every offending field."""
    try:
        return _COMMAND.validate_json(data)
    except ValidationError as exc:
        raise CommandError(_describe(exc)) from exc


def encode_command(command: AnyCommand) -> bytes:
    """The wire form of a command: compact JSON, every field present."""
    return command.model_dump_json().encode()


_BOOLEANS = {"true": True, "on": True, "yes": True, "false": False, "off": False, "no": False}


def setting_command(
    name: str,
    value: str,
    *,
    command_id: str,
    flag: str,
    actor: str,
    reason: str,
    cause_id: str | None = None,
    expected_version: int | None = None,
) -> AnyCommand:
    """The command that sets one named flag value from its text (the ``flags set`` CLI).

    Names: ``v2_pool_enabled`` (true/false), ``v2_rollout_percentage`` (0..100, two decimals),
    ``shadow_mode_enabled`` (true/false), ``shadow_sample_percentage`` (0..100).
    Raises ``CommandError`` for an unknown name or a value that does not fit.
    """
    common: dict[str, Any] = {
        "command_id": command_id,
        "flag": flag,
        "actor": actor,
        "reason": reason,
        "cause_id": cause_id,
        "expected_version": expected_version,
    }
    try:
        if name in ("v2_pool_enabled", "shadow_mode_enabled"):
            on = _BOOLEANS.get(value.strip().lower())
            if on is None:
                raise CommandError(f"{name}: expected true or false, got {value!r}")
            if name == "shadow_mode_enabled":
                return SetShadowMode(enabled=on, **common)
            return Enable(**common) if on else Disable(**common)
        if name == "v2_rollout_percentage":
            return SetPercentage(percentage_bp=parse_percentage(value), **common)
        if name == "shadow_sample_percentage":
            return SetShadowSample(sample_bp=parse_percentage(value), **common)
    except ValidationError as exc:
        raise CommandError(_describe(exc)) from exc
    raise CommandError(
        f"unknown flag value {name!r}: expected v2_pool_enabled, v2_rollout_percentage, "
        "shadow_mode_enabled or shadow_sample_percentage"
    )


# --- state -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlagValues:
    """Every value of the flag; a ``FlagChanged`` carries all of them (a full snapshot).

    The override mappings are never mutated (treat them as read-only).
    """

    v2_pool_enabled: bool = False
    v2_rollout_bp: int = 0
    shadow_mode_enabled: bool = True
    shadow_sample_bp: int = 10_000
    session_overrides: Mapping[str, Pool] = field(default_factory=dict)
    environment_overrides: Mapping[str, Pool] = field(default_factory=dict)
    frozen: bool = False

    @classmethod
    def of(cls, event: FlagChanged) -> FlagValues:
        return cls(
            v2_pool_enabled=event.v2_pool_enabled,
            v2_rollout_bp=event.v2_rollout_bp,
            shadow_mode_enabled=event.shadow_mode_enabled,
            shadow_sample_bp=event.shadow_sample_bp,
            session_overrides=dict(event.session_overrides),
            environment_overrides=dict(event.environment_overrides),
            frozen=event.frozen,
        )

    def describe(self) -> str:
        """One line for people: ``V2 on, 12.34%, shadow on (100%), 2 overrides, frozen``."""
        parts = [
            f"V2 {'on' if self.v2_pool_enabled else 'off'}",
            format_bp(self.v2_rollout_bp),
            f"shadow {'on' if self.shadow_mode_enabled else 'off'}"
            f" ({format_bp(self.shadow_sample_bp)})",
        ]
        overrides = len(self.session_overrides) + len(self.environment_overrides)
        if overrides:
            parts.append(f"{overrides} override{'s' if overrides != 1 else ''}")
        if self.frozen:
            parts.append("frozen")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class FlagState:
    """The flag after folding its log: values, position in the chain, and answered commands.

    ``decided`` holds the id of every command answered (accepted or rejected), so that a
    command seen again after a crash is recognised and not decided twice.
    """

    flag: str
    version: int = 0
    last_hash: str = GENESIS_HASH
    values: FlagValues = field(default_factory=FlagValues)
    decided: frozenset[str] = frozenset()
    #: When the current version was written (None before version 1).
    changed_at: datetime | None = None

    # Shortcuts: callers read ``state.v2_rollout_bp`` rather than ``state.values....``.
    @property
    def v2_pool_enabled(self) -> bool:
        return self.values.v2_pool_enabled

    @property
    def v2_rollout_bp(self) -> int:
        return self.values.v2_rollout_bp

    @property
    def shadow_mode_enabled(self) -> bool:
        return self.values.shadow_mode_enabled

    @property
    def shadow_sample_bp(self) -> int:
        return self.values.shadow_sample_bp

    @property
    def session_overrides(self) -> Mapping[str, Pool]:
        return self.values.session_overrides

    @property
    def environment_overrides(self) -> Mapping[str, Pool]:
        return self.values.environment_overrides

    @property
    def frozen(self) -> bool:
        return self.values.frozen


def initial_state(flag: str) -> FlagState:
    """The flag before its first event: V2 off, 0 %, shadow on at 100 %, no override."""
    return FlagState(flag=flag)


# --- hashing ---------------------------------------------------------------------------------


def _utc_text(at: datetime) -> str:
    """Timestamps in the canonical form: UTC, microseconds, ``Z`` (one text per instant)."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _json_default(value: Any) -> Any:
    """What ``json`` cannot write by itself: timestamps (in the canonical form)."""
    if isinstance(value, datetime):
        return _utc_text(value)
    raise TypeError(f"{type(value).__name__} has no canonical JSON form")


def canonical_json(event: BaseModel, *, exclude: frozenset[str] = frozenset({"hash"})) -> bytes:
    """The bytes that are hashed: every field but ``exclude``, keys sorted, no spaces, UTF-8,
    timestamps as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC.

    Any language can rebuild it: take the event's JSON, drop ``hash``, rewrite ``at`` in that
    form, serialise with sorted keys and ``,``/``:`` separators, non-ASCII left as UTF-8.
    """
    text = json.dumps(
        event.model_dump(exclude=set(exclude)),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=_json_default,
    )
    return text.encode()


def flag_event_hash(event: FlagChanged) -> str:
    """SHA-256 hex of the event's canonical JSON without ``hash`` (``prev_hash`` included)."""
    return hashlib.sha256(canonical_json(event)).hexdigest()


def flag_event_id(flag: str, version: int) -> str:
    """The id of version ``version`` of ``flag``'s log: the same whoever writes it."""
    return f"flag:{flag}:v{version}"


def rejection_event_id(flag: str, command_id: str) -> str:
    """The id of the rejection of one command: one command, one answer."""
    return f"flag:{flag}:rejected:{command_id}"


# --- deciding --------------------------------------------------------------------------------


def _without_v2(overrides: Mapping[str, Pool]) -> dict[str, Pool]:
    return {key: pool for key, pool in overrides.items() if pool != "v2"}


def _values_after(values: FlagValues, command: AnyCommand) -> FlagValues:
    """The values a command asks for (the same values when it changes nothing)."""
    match command:
        case Enable():
            return replace(values, v2_pool_enabled=True)
        case Disable():
            return replace(values, v2_pool_enabled=False)
        case SetPercentage(percentage_bp=bp):
            return replace(values, v2_rollout_bp=bp)
        case SetShadowMode(enabled=enabled):
            return replace(values, shadow_mode_enabled=enabled)
        case SetShadowSample(sample_bp=bp):
            return replace(values, shadow_sample_bp=bp)
        case SetSessionOverride(session_id=key, pool=pool):
            return replace(values, session_overrides={**values.session_overrides, key: pool})
        case ClearSessionOverride(session_id=key):
            sessions = {k: p for k, p in values.session_overrides.items() if k != key}
            return replace(values, session_overrides=sessions)
        case SetEnvironmentOverride(environment=key, pool=pool):
            environments = {**values.environment_overrides, key: pool}
            return replace(values, environment_overrides=environments)
        case ClearEnvironmentOverride(environment=key):
            environments = {k: p for k, p in values.environment_overrides.items() if k != key}
            return replace(values, environment_overrides=environments)
        case Freeze():
            return replace(values, frozen=True)
        case Unfreeze():
            return replace(values, frozen=False)
        case Rollback():
            return replace(
                values,
                v2_pool_enabled=False,
                v2_rollout_bp=0,
                session_overrides=_without_v2(values.session_overrides),
                environment_overrides=_without_v2(values.environment_overrides),
            )
    raise CommandError(f"unknown command {command!r}")  # pragma: no cover - exhaustive above


def _newly_v2(before: Mapping[str, Pool], after: Mapping[str, Pool]) -> list[str]:
    """Keys whose override now says v2 or whose v1 override is gone (both can add V2 work)."""
    added = [key for key, pool in after.items() if pool == "v2" and before.get(key) != "v2"]
    released = [key for key, pool in before.items() if pool == "v1" and key not in after]
    return sorted(added + released)


def ramp_changes(before: FlagValues, after: FlagValues) -> list[str]:
    """What in ``before`` -> ``after`` gives V2 more work (what a frozen flag refuses)."""
    found: list[str] = []
    if after.v2_pool_enabled and not before.v2_pool_enabled:
        found.append("enables V2")
    if after.v2_rollout_bp > before.v2_rollout_bp:
        found.append(
            f"raises the rollout from {format_bp(before.v2_rollout_bp)}"
            f" to {format_bp(after.v2_rollout_bp)}"
        )
    if after.shadow_mode_enabled and not before.shadow_mode_enabled:
        found.append("turns shadow mode on")
    if after.shadow_sample_bp > before.shadow_sample_bp:
        found.append(
            f"raises the shadow sample from {format_bp(before.shadow_sample_bp)}"
            f" to {format_bp(after.shadow_sample_bp)}"
        )
    sessions = _newly_v2(before.session_overrides, after.session_overrides)
    if sessions:
        found.append(f"can send session(s) {', '.join(sessions)} to V2")
    environments = _newly_v2(before.environment_overrides, after.environment_overrides)
    if environments:
        found.append(f"can send environment(s) {', '.join(environments)} to V2")
    return found


def _rejected(
    state: FlagState,
    command: AnyCommand,
    rejection: Rejection,
    detail: str,
    *,
    at: datetime,
    event_id: str | None,
) -> CommandRejected:
    return CommandRejected(
        event_id=event_id or rejection_event_id(state.flag, command.command_id),
        flag=state.flag,
        command=command.command,
        command_id=command.command_id,
        current_version=state.version,
        actor=command.actor,
        reason=command.reason,
        cause_id=command.cause_id,
        rejection=rejection.value,
        detail=detail,
        at=at,
    )


def decide_command(
    state: FlagState, command: AnyCommand, *, at: datetime, event_id: str | None = None
) -> FlagChanged | CommandRejected | None:
    """The answer to one command: ``FlagChanged``, ``CommandRejected``, or ``None`` when this
    command id was already answered (append nothing).

    ``at`` is the decision time (timezone-aware); ``event_id`` defaults to
    :func:`flag_event_id` / :func:`rejection_event_id`, both deterministic.
    """
    if command.flag != state.flag:
        raise CommandError(f"command for flag {command.flag!r} decided against {state.flag!r}")
    if command.command_id in state.decided:
        return None
    if command.expected_version is not None and command.expected_version != state.version:
        wanted = command.expected_version
        detail = f"expected version {wanted}, the flag is at version {state.version}"
        return _rejected(
            state, command, Rejection.VERSION_CONFLICT, detail, at=at, event_id=event_id
        )
    after = _values_after(state.values, command)
    if after == state.values:
        return _rejected(
            state,
            command,
            Rejection.NO_CHANGE,
            f"{command.command} changes nothing: the flag already is {state.values.describe()}",
            at=at,
            event_id=event_id,
        )
    if state.values.frozen:
        ramp = ramp_changes(state.values, after)
        if ramp:
            return _rejected(
                state,
                command,
                Rejection.FROZEN,
                f"the flag is frozen and {command.command} {'; '.join(ramp)}"
                " (rollback and unfreeze are accepted)",
                at=at,
                event_id=event_id,
            )
    version = state.version + 1
    fields: dict[str, Any] = {
        "event_id": event_id or flag_event_id(state.flag, version),
        "flag": state.flag,
        "version": version,
        "command": command.command,
        "command_id": command.command_id,
        "v2_pool_enabled": after.v2_pool_enabled,
        "v2_rollout_bp": after.v2_rollout_bp,
        "shadow_mode_enabled": after.shadow_mode_enabled,
        "shadow_sample_bp": after.shadow_sample_bp,
        "session_overrides": dict(after.session_overrides),
        "environment_overrides": dict(after.environment_overrides),
        "frozen": after.frozen,
        "actor": command.actor,
        "reason": command.reason,
        "cause_id": command.cause_id,
        "at": at,
        "prev_hash": state.last_hash,
        "hash": "",
    }
    unsealed = FlagChanged(**fields)
    return unsealed.model_copy(update={"hash": flag_event_hash(unsealed)})


# --- folding ---------------------------------------------------------------------------------


def _check_link(flag: str, version: int, last_hash: str, event: FlagChanged) -> None:
    """Refuse to fold an event that does not follow the chain (``ChainError`` names it)."""
    if event.flag != flag:
        raise ChainError(f"an event of flag {event.flag!r} cannot be folded into {flag!r}")
    if event.version != version + 1:
        raise ChainError(
            f"version {event.version} cannot follow version {version} of {flag!r}"
            f" (expected {version + 1})"
        )
    if event.prev_hash != last_hash:
        raise ChainError(f"version {event.version}'s prev_hash is not version {version}'s hash")
    if flag_event_hash(event) != event.hash:
        raise ChainError(f"version {event.version}'s hash does not match its content")


def apply(state: FlagState, event: FlagChanged | CommandRejected) -> FlagState:
    """The state after one event of the log (``ChainError`` if it does not follow)."""
    if isinstance(event, CommandRejected):
        if event.flag != state.flag:
            raise ChainError(
                f"an event of flag {event.flag!r} cannot be folded into {state.flag!r}"
            )
        if event.command_id in state.decided:
            return state
        return replace(state, decided=state.decided | {event.command_id})
    _check_link(state.flag, state.version, state.last_hash, event)
    return FlagState(
        flag=state.flag,
        version=event.version,
        last_hash=event.hash,
        values=FlagValues.of(event),
        decided=state.decided | {event.command_id},
        changed_at=event.at,
    )


def fold(events: Iterable[FlagChanged | CommandRejected], flag: str) -> FlagState:
    """The state after every event of ``flag`` in ``events`` (other flags' are skipped).

    The same as applying them one by one, in one pass (the set of answered ids is built once).
    """
    state = initial_state(flag)
    decided: set[str] = set()
    last: FlagChanged | None = None
    for event in events:
        if event.flag != flag:
            continue
        decided.add(event.command_id)
        if isinstance(event, FlagChanged):
            _check_link(flag, state.version if last is None else last.version, _head(last), event)
            last = event
    if last is None:
        return replace(state, decided=frozenset(decided))
    return FlagState(
        flag=flag,
        version=last.version,
        last_hash=last.hash,
        values=FlagValues.of(last),
        decided=frozenset(decided),
        changed_at=last.at,
    )


def _head(last: FlagChanged | None) -> str:
    return GENESIS_HASH if last is None else last.hash


def state_at(
    events: Iterable[FlagChanged | CommandRejected],
    *,
    version: int | None = None,
    at: datetime | None = None,
    flag: str | None = None,
) -> FlagState:
    """The state at one point of the log: after ``version``, or in force at time ``at``.

    With neither, the latest state. ``at`` takes the longest prefix of the log (in log order)
    whose events are all at or before ``at``: the log's order is the truth even if the
    writer's clock once stepped back. ``version=0`` or an ``at`` before the first event give
    the initial state. ``flag`` defaults to the first event's flag (needed for an empty log).
    Raises ``ValueError`` if both are given or ``version`` is beyond the log.
    """
    if version is not None and at is not None:
        raise ValueError("state_at: give version or at, not both")
    if at is not None and at.tzinfo is None:
        raise ValueError("state_at: at must be timezone-aware")
    items = list(events)
    if flag is None:
        if not items:
            raise ValueError("state_at: an empty log needs flag=")
        flag = items[0].flag
    prefix: list[FlagChanged | CommandRejected] = []
    reached = 0
    for event in items:
        if event.flag != flag:
            continue
        if at is not None and event.at > at:
            break
        if version is not None and isinstance(event, FlagChanged) and event.version > version:
            break
        prefix.append(event)
        if isinstance(event, FlagChanged):
            reached = event.version
    if version is not None and reached < version:
        raise ValueError(f"state_at: {flag!r}'s log ends at version {reached}, not {version}")
    return fold(prefix, flag)
