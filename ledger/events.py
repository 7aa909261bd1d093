"""The event contract: every fact the ledger records, as frozen pydantic models.

Other teams' pools publish ``OperationRecorded`` in any language, so field names here are a
public contract. Each event names its own ``type`` (the discriminator) and ``schema_version``;
one ``TypeAdapter`` built once decodes any of them (``decode_event``). Events are named in the
past tense; they are facts, never requests.

Models are strict about types (no silent ``"1"`` -> ``1``), forbid unknown fields (a typo in a
producer is caught, not stored), and require timezone-aware timestamps.
"""

from __future__ import annotations

import base64
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from ledger.errors import EventDecodeError

__all__ = [
    "AnyEvent",
    "BreakerStateChanged",
    "CheckpointPublished",
    "CommandRejected",
    "ComparisonRecorded",
    "DeadLettered",
    "DecisionReason",
    "Difference",
    "Event",
    "FlagChanged",
    "HealthAssessed",
    "OperationError",
    "OperationRecorded",
    "Pool",
    "Resources",
    "RollbackTriggered",
    "RolloutDecided",
    "SwitchoverRecorded",
    "decode_event",
    "encode_event",
]

Pool: TypeAlias = Literal["v1", "v2"]
Role: TypeAlias = Literal["primary", "shadow"]
Outcome: TypeAlias = Literal["ok", "error"]
NonEmpty = Annotated[str, Field(min_length=1, max_length=512)]

#: An id (event, correlation, session, command ...) is at most this many UTF-8 bytes.
MAX_ID_BYTES = 1024
#: The schema versions of the event contract this build reads (no upcasters yet).
SCHEMA_VERSIONS = frozenset({1})
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Below this magnitude every integer is exactly a double.
_EXACT_DOUBLE = 2**53


def _id_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("an id must not contain NUL")
    too_long = len(value) > MAX_ID_BYTES // 4  # cheap test first: 4 bytes a character at most
    if too_long and len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise ValueError(f"an id is at most {MAX_ID_BYTES} UTF-8 bytes")
    return value


def _exact_double(value: Any) -> Any:
    """An integer given for a double must be one exactly (no silent rounding)."""
    if type(value) is int and not -_EXACT_DOUBLE <= value <= _EXACT_DOUBLE:
        try:
            exact = float(value) == value
        except OverflowError:
            exact = False
        if not exact:
            raise ValueError(f"integer {value} is not exactly representable as a double")
    return value


#: Ids: non-empty, no NUL, at most ``MAX_ID_BYTES`` UTF-8 bytes.
Id = Annotated[str, Field(min_length=1), AfterValidator(_id_text)]
#: A session id may be empty (anonymous callers send ""), otherwise as an id.
SessionId = Annotated[str, AfterValidator(_id_text)]
#: Integers land in BIGINT columns: int64 or refused (never stored as NULL).
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]
#: Basis points (0..10000) and buckets (0..9999).
BasisPoints = Annotated[int, Field(ge=0, le=10_000)]
Bucket = Annotated[int, Field(ge=0, le=9_999)]
#: A finite double; an integer literal only if the double holds it exactly.
Double = Annotated[float, BeforeValidator(_exact_double)]
#: Stored to the microsecond (``ledger.wire`` refuses finer text, which would be cut).
Timestamp = AwareDatetime
#: A duration or CPU time in milliseconds: its microseconds must fit in int64 (health windows
#: add them up as integers), about 292 years.
MAX_MILLIS = (2**63 - 1) // 1000
Millis = Annotated[float, Field(ge=0, le=MAX_MILLIS), BeforeValidator(_exact_double)]
SchemaVersion = Annotated[int, Field(ge=min(SCHEMA_VERSIONS), le=max(SCHEMA_VERSIONS))]


class Record(BaseModel):
    """Base of every value object in the contract: immutable, strict, closed, finite.

    ``allow_inf_nan=False`` reaches into free-form JSON too; NaN is written as the literal
    ``NaN`` (which every decoder refuses) rather than as a silent ``null``.
    """

    model_config = ConfigDict(
        frozen=True,
        strict=True,
        extra="forbid",
        allow_inf_nan=False,
        ser_json_inf_nan="constants",
    )


class Event(Record):
    """Base of every event: a unique id makes every consumer idempotent."""

    event_id: Id
    schema_version: SchemaVersion = 1


class OperationError(BaseModel):
    """A pool's native error. ``type`` and ``message`` are required; the rest is kept as-is."""

    model_config = ConfigDict(
        frozen=True, strict=True, extra="allow", allow_inf_nan=False, ser_json_inf_nan="constants"
    )

    type: NonEmpty
    message: str


class Resources(Record):
    cpu_ms: Millis | None = None
    memory_bytes: Count | None = None
    worker_id: str | None = None


class OperationRecorded(Event):
    """One execution of one logical operation on one pool (V1 and V2 share ``correlation_id``)."""

    type: Literal["OperationRecorded"] = "OperationRecorded"
    correlation_id: Id
    session_id: SessionId | None
    pool: Pool
    role: Role
    operation: NonEmpty
    outcome: Outcome
    result: JsonValue = None
    error: OperationError | None = None
    started_at: Timestamp
    duration_ms: Millis
    environment: str | None = None
    args_digest: str | None = None
    resources: Resources | None = None

    @model_validator(mode="after")
    def _outcome_matches_payload(self) -> OperationRecorded:
        if self.outcome == "ok" and self.error is not None:
            raise ValueError("error: must be null when outcome is 'ok'")
        if self.outcome == "error" and self.error is None:
            raise ValueError("error: required when outcome is 'error'")
        if self.outcome == "error" and self.result is not None:
            raise ValueError("result: must be null when outcome is 'error'")
        return self


#: ``error.type`` of a shadow the runner decided not to run (breaker open, queue full...).
SHADOW_SKIPPED = "shadow_skipped"
#: ``error.source`` of every error the shadow runner itself records (skips and timeouts).
RUNNER_SOURCE = "shadow_runner"


def is_skipped_shadow(event: OperationRecorded) -> bool:
    """True for the record of a shadow the runner did not run: not an execution of its pool.

    Pairing classifies its pair ``shadow_missing`` at once (no wait for the timeout), and the
    health windows do not count it: a breaker open for a minute is not thousands of V2 errors.
    """
    error = event.error
    return (
        event.role == "shadow"
        and error is not None
        and error.type == SHADOW_SKIPPED
        and (error.model_extra or {}).get("source") == RUNNER_SOURCE
    )


class DecisionReason(StrEnum):
    """Why a request went where it went, in the spirit of OpenFeature's reason codes."""

    ENVIRONMENT_OVERRIDE = "ENVIRONMENT_OVERRIDE"
    SESSION_OVERRIDE = "SESSION_OVERRIDE"
    DISABLED = "DISABLED"
    SPLIT = "SPLIT"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"


class RolloutDecided(Event):
    """Where one request was routed, with everything needed to recompute it later."""

    type: Literal["RolloutDecided"] = "RolloutDecided"
    flag: NonEmpty
    session_id: SessionId | None
    correlation_id: Id
    environment: str | None = None
    pool: Pool
    reason: DecisionReason
    bucket: Bucket | None = None
    threshold_bp: BasisPoints | None = None
    flag_version: Count
    hash_version: Int64 = 1
    at: Timestamp
    #: The ``hash`` of the ``FlagChanged`` whose state was used (None: no flag event yet, or
    #: a decision recorded before decisions pointed at their evidence).
    flag_event_hash: str | None = None


class FlagChanged(Event):
    """One accepted change to the migration flag; the log of these *is* the flag.

    ``version`` counts every change of one flag from 1 without gaps; ``hash`` is the SHA-256 of
    the canonical JSON of this event without ``hash`` and includes ``prev_hash``, so a changed,
    missing, reordered or inserted event breaks the chain at its own version.
    """

    type: Literal["FlagChanged"] = "FlagChanged"
    flag: NonEmpty
    version: Annotated[int, Field(ge=1, le=INT64_MAX)]
    command: NonEmpty
    command_id: Id
    v2_pool_enabled: bool
    v2_rollout_bp: BasisPoints
    shadow_mode_enabled: bool
    shadow_sample_bp: BasisPoints
    session_overrides: dict[SessionId, Pool]
    environment_overrides: dict[str, Pool]
    frozen: bool
    actor: NonEmpty
    reason: NonEmpty
    cause_id: Id | None = None
    at: Timestamp
    prev_hash: str
    hash: str


class CommandRejected(Event):
    """A flag command that was decided and refused; nothing is dropped silently.

    ``rejection`` is one of ``version_conflict``, ``no_change``, ``frozen``
    (``ledger.flags.Rejection``); ``reason`` is the command's own reason, copied;
    ``current_version`` is the flag's version when it was refused.
    """

    type: Literal["CommandRejected"] = "CommandRejected"
    flag: NonEmpty
    command: NonEmpty
    command_id: Id
    current_version: Count
    actor: NonEmpty
    reason: str
    cause_id: Id | None = None
    rejection: NonEmpty
    #: What exactly was refused and why, for people (the ``rejection`` code is for machines).
    detail: str = ""
    at: Timestamp


class Difference(Record):
    """One difference between the V1 and V2 result at one path (values truncated)."""

    path: str
    kind: str
    v1: JsonValue = None
    v2: JsonValue = None


class ComparisonRecorded(Event):
    """The classified comparison of one correlation id's V1 and V2 executions.

    ``event_id`` is derived from ``correlation_id`` so a re-emission after a crash is
    recognisably the same comparison. ``difference_count`` counts every difference found,
    ``differences`` keeps the first few (``differences_truncated`` when some were left out).
    ``primary_pool`` is the pool whose answer went to the caller.
    """

    type: Literal["ComparisonRecorded"] = "ComparisonRecorded"
    comparison_id: Id
    correlation_id: Id
    session_id: SessionId | None = None
    operation: str | None = None
    environment: str | None = None
    category: NonEmpty
    differences: tuple[Difference, ...] = ()
    differences_truncated: bool = False
    difference_count: Count = 0
    fingerprint: NonEmpty
    rules_version: NonEmpty
    primary_pool: Pool | None = None
    v1_event_id: Id | None = None
    v2_event_id: Id | None = None
    v1_duration_ms: Double | None = None
    v2_duration_ms: Double | None = None
    latency_ratio: Double | None = None
    v1_error_type: str | None = None
    v2_error_type: str | None = None
    late: bool = False
    at: Timestamp


class HealthAssessed(Event):
    """One closed health window for one pool and operation (or ``"*"`` for all).

    Built by ``ledger.health`` (figures) and judged by ``ledger.policy`` (``verdict``: ``ok``,
    ``warn``, ``rollback`` or ``insufficient_data``; ``unjudged`` before that). V2's window is
    judged against V1's window of the same operation, named in ``compared_with``. The latency
    sketch (DDSketch bins) and the bounded latency sample are kept so that gates can be re-run
    over recorded history, with other thresholds, long after the events themselves are gone.
    """

    type: Literal["HealthAssessed"] = "HealthAssessed"
    pool: Pool
    operation: str
    window_start: Timestamp
    window_end: Timestamp
    count: Count
    error_count: Count
    errors_by_type: dict[str, Count] = Field(default_factory=dict)
    p50_ms: Double | None = None
    p95_ms: Double | None = None
    p99_ms: Double | None = None
    mean_ms: Double | None = None
    comparisons: Count = 0
    mismatches: Count = 0
    missing: Count = 0
    cpu_ms_mean: Double | None = None
    memory_bytes_max: Int64 | None = None
    worker_failures: Count = 0
    verdict: str = "unjudged"
    triggers: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    #: Triggers and warnings announced now (the others are within their alert cooldown).
    alerts: tuple[str, ...] = ()
    compared_with: str | None = None
    judge_verdict: str | None = None
    judge_score: Double | None = None
    #: Metric name -> Kayenta-style classification (``pass``, ``high``, ``low``, ``nodata``).
    judge: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, Double] = Field(default_factory=dict)
    latency_sample_ms: tuple[Double, ...] = ()
    latency_sketch: dict[str, JsonValue] | None = None
    at: Timestamp


class RollbackTriggered(Event):
    """Why a rollback command was sent: the cause and the figures at that moment.

    ``cause_id`` is the ``HealthAssessed`` that fired (null for a rollback by hand);
    ``command_id`` is the rollback command sent to the flag log writer, so the audit joins the
    evidence, the command and the resulting ``FlagChanged``.
    """

    type: Literal["RollbackTriggered"] = "RollbackTriggered"
    flag: NonEmpty
    command_id: Id
    actor: NonEmpty
    reason: str
    cause_id: Id | None = None
    triggers: tuple[str, ...] = ()
    operation: str | None = None
    window_start: Timestamp | None = None
    window_end: Timestamp | None = None
    #: ``v1.<figure>`` and ``v2.<figure>`` of the windows that were compared.
    metrics: dict[str, Double | None] = Field(default_factory=dict)
    baseline_id: Id | None = None
    at: Timestamp


class SwitchoverRecorded(Event):
    """A step of the switchover controller or an operator's instruction to it.

    ``action`` is one of ``started``, ``advanced``, ``held``, ``completed``, ``paused``,
    ``resumed``, ``promoted``, ``rolled_back``, ``halted``. ``stage`` indexes the plan (-1 before
    the first stage); ``gates`` holds the figures that allowed (or held) an advance;
    ``flag_version`` is the flag log version the step was decided against and ``command_id``
    the flag command it sent, if any.
    """

    type: Literal["SwitchoverRecorded"] = "SwitchoverRecorded"
    flag: NonEmpty
    action: NonEmpty
    stage: Annotated[int, Field(ge=-1, le=INT64_MAX)]
    percentage_bp: BasisPoints
    actor: NonEmpty
    reason: str
    cause_id: Id | None = None
    gates: dict[str, JsonValue] = Field(default_factory=dict)
    plan: str | None = None
    soak_s: Double | None = Field(default=None, ge=0)
    flag_version: Count | None = None
    command_id: Id | None = None
    at: Timestamp


class GateVerdict(Event):
    """One gate's verdict with the statistics that made it: the evidence a switchover step or
    a rollback cites (its ``cause_id``, or ``gates.verdict_ids``). Topic ``health``, key: flag.

    ``test`` names the method (``threshold``: a figure held to a limit; ``mixture_sprt``: the
    sequential test of ``ledger.sequential``); the statistics it has are set, the rest null.
    """

    type: Literal["GateVerdict"] = "GateVerdict"
    flag: NonEmpty
    gate: NonEmpty
    passed: bool
    test: NonEmpty
    #: The effect measured (a rate, a ratio, an odds ratio: ``details.estimate_kind`` says).
    estimate: Double | None = None
    interval_low: Double | None = None
    interval_high: Double | None = None
    p_value: Double | None = None
    e_value: Double | None = None
    #: The limit the figure or the e-value was held to.
    threshold: Double | None = None
    v1_n: Count | None = None
    v1_events: Count | None = None
    v2_n: Count | None = None
    v2_events: Count | None = None
    #: Start of every window the verdict used.
    windows: tuple[Timestamp, ...] = ()
    stage: Annotated[int, Field(ge=-1, le=INT64_MAX)] | None = None
    #: The figure and threshold as the checklist prints them, and anything else of the test.
    details: dict[str, JsonValue] = Field(default_factory=dict)
    at: Timestamp


class BreakerStateChanged(Event):
    """The V2 circuit breaker moved between closed, open and half_open."""

    type: Literal["BreakerStateChanged"] = "BreakerStateChanged"
    breaker: NonEmpty
    previous: Literal["closed", "open", "half_open"]
    current: Literal["closed", "open", "half_open"]
    reason: str
    consecutive_failures: Count = 0
    half_open_successes: Count = 0
    #: While open: when the breaker lets trial requests through again.
    retry_at: Timestamp | None = None
    at: Timestamp


class CheckpointPublished(Event):
    """A tree head of the flag log, published by its writer after each append.

    ``note`` is the checkpoint as a C2SP signed note (``ledger.checkpoint``): origin, tree size,
    base64 root hash, then the signature lines when the writer has a key (``signed``). The tree
    covers every flag event of the log up to ``last_offset``; ``at`` is the time of the newest
    of them, so the same tree head is the same event (its id is origin, size and root).
    """

    type: Literal["CheckpointPublished"] = "CheckpointPublished"
    origin: NonEmpty
    tree_size: Count
    root_hash: NonEmpty
    note: NonEmpty
    signed: bool
    key_name: str | None = None
    last_offset: Count | None = None
    at: Timestamp


class DeadLettered(Event):
    """Input that could not be parsed or validated, kept with its reason and origin."""

    type: Literal["DeadLettered"] = "DeadLettered"
    source_topic: str
    source_partition: Int64 | None = None
    source_offset: Int64 | None = None
    reason: str
    original_key: str | None = None
    original_b64: str
    at: Timestamp


#: Longest dead-letter reason kept; a longer one is cut (its start says what went wrong).
MAX_DEAD_LETTER_REASON = 2_000


def dead_letter(
    raw: bytes | None,
    *,
    reason: str,
    topic: str,
    partition: int | None,
    offset: int | None,
    key: bytes | None,
    at: datetime,
) -> DeadLettered:
    """The dead letter of one unusable record; its id is its position, so a retry matches.

    Every door that refuses a record (worker agents, sink, ingest) builds it here, so the
    same record is the same dead letter whoever refused it.
    """
    if len(reason) > MAX_DEAD_LETTER_REASON:
        reason = reason[: MAX_DEAD_LETTER_REASON - 1] + "…"
    return DeadLettered(
        event_id=f"dead-letter:{topic}:{partition}:{offset}",
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        reason=reason,
        original_key=None if key is None else key.decode("utf-8", errors="replace"),
        original_b64=base64.b64encode(raw or b"").decode("ascii"),
        at=at,
    )


AnyEvent = Annotated[
    OperationRecorded
    | RolloutDecided
    | FlagChanged
    | CommandRejected
    | ComparisonRecorded
    | HealthAssessed
    | RollbackTriggered
    | SwitchoverRecorded
    | GateVerdict
    | BreakerStateChanged
    | CheckpointPublished
    | DeadLettered,
    Field(discriminator="type"),
]

EVENT_TYPES: dict[str, type[Event]] = {
    model.model_fields["type"].default: model
    for model in (
        OperationRecorded,
        RolloutDecided,
        FlagChanged,
        CommandRejected,
        ComparisonRecorded,
        HealthAssessed,
        RollbackTriggered,
        SwitchoverRecorded,
        GateVerdict,
        BreakerStateChanged,
        CheckpointPublished,
        DeadLettered,
    )
}

_ANY_EVENT: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "<event>"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def decode_event(data: bytes | str, expected: type[Event] | None = None) -> Event:
    """Decode one JSON event; ``expected`` pins the type (a topic's own model).

    Raises ``EventDecodeError`` naming every offending field.
    """
    try:
        if expected is None:
            return _ANY_EVENT.validate_json(data)
        return expected.model_validate_json(data)
    except ValidationError as exc:
        raise EventDecodeError(_describe(exc)) from exc


def decode_event_object(data: dict[str, Any], expected: type[Event] | None = None) -> Event:
    """Decode an event from a JSON-shaped dict (as read back from storage)."""
    try:
        if expected is None:
            return _ANY_EVENT.validate_python(data, strict=False)
        return expected.model_validate(data, strict=False)
    except ValidationError as exc:
        raise EventDecodeError(_describe(exc)) from exc


def encode_event(event: Event) -> bytes:
    """The wire form: compact JSON, every field present."""
    return event.model_dump_json().encode()


def utc_iso(at: datetime) -> str:
    """RFC 3339 text for a timestamp, as it appears on the wire."""
    return at.isoformat()
