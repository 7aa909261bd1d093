"""The wire contract: what each topic may hold, and the one strict decoder every door uses.

Every component that takes bytes in (the worker's agents, the sink, ``ingest``, the flag
clients, the flag log writer) and the publisher that puts them out call this module, so what
one door accepts every door accepts, and what one refuses every door refuses with the same
reason. :data:`CONTRACTS` is the table: per logical topic, the event types it holds and the
rule its Kafka key follows.

Decoding is in two steps, both of which must pass:

1. **Strict JSON** (:func:`parse`): UTF-8 text; one JSON object; no duplicate keys (the last
   one would silently win in most parsers, and a hashed event would then mean two things);
   no ``NaN``/``Infinity``; no number outside the double range; no lone surrogate; nesting
   at most :data:`MAX_DEPTH` deep, measured without recursion before any parser recurses.
2. **The model** (``ledger.events``): types, closed fields, ids (no NUL, at most
   :data:`~ledger.events.MAX_ID_BYTES` UTF-8 bytes), integers within int64 where a column is
   ``BIGINT``, doubles given exactly, timestamps to the microsecond, a known
   ``schema_version``.

On a topic holding one event type, ``type`` may be left out (the documented fields are the
contract); on a topic holding several it is required. Nothing accepted is altered: what is
stored is what was sent, and the typed columns mean what the wire means.

Pure: no I/O, no Kafka, no clock.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from ledger.errors import CommandError, EventDecodeError
from ledger.events import (
    EVENT_TYPES,
    SCHEMA_VERSIONS,
    BreakerStateChanged,
    CheckpointPublished,
    CommandRejected,
    ComparisonRecorded,
    DeadLettered,
    Event,
    FlagChanged,
    GateVerdict,
    HealthAssessed,
    OperationRecorded,
    RollbackTriggered,
    RolloutDecided,
    SwitchoverRecorded,
    encode_event,
)
from ledger.flags import AnyCommand
from ledger.flags import decode_command as decode_model
from ledger.settings import TOPICS

__all__ = [
    "ANY",
    "CONTRACTS",
    "INGEST",
    "MAX_DEPTH",
    "REQUIRED",
    "TopicContract",
    "admit",
    "contract_for",
    "decode",
    "decode_command",
    "decode_record",
    "logical_topic",
    "parse",
]

#: JSON nesting allowed (the event object itself is level 1). Far above any real result,
#: far below every parser's recursion limit (Python's json, pydantic's, DuckDB's).
MAX_DEPTH: Final = 64
#: The pseudo topic of ``ingest`` (exported files): every event type, ``type`` needed unless
#: the file says it (an export's file name or ``type`` column).
INGEST: Final = "_ingest"
#: The contract of an unknown topic (tests, ad-hoc writers): every event type, no key rule.
ANY: Final = "*"

_DOUBLE_MAX_INT: Final = int(sys.float_info.max)


@dataclass(frozen=True)
class TopicContract:
    """What one topic may hold."""

    logical: str
    models: tuple[type[Event], ...]
    #: The field the Kafka key must equal (UTF-8), or None for no rule.
    key_field: str | None = None
    #: Why the key rule exists, for the refusal's reason.
    key_why: str = ""

    @property
    def only(self) -> type[Event] | None:
        """The one model of a single-type topic (then ``type`` may be left out)."""
        return self.models[0] if len(self.models) == 1 else None

    def names(self) -> tuple[str, ...]:
        return tuple(_type_name(m) for m in self.models)

    def model_named(self, name: str) -> type[Event] | None:
        for model in self.models:
            if _type_name(model) == name:
                return model
        return None


def _type_name(model: type[Event]) -> str:
    return str(model.model_fields["type"].default)


_ALL: tuple[type[Event], ...] = tuple(EVENT_TYPES.values())

#: The one table: logical topic -> what it may hold. ``flag_commands`` holds commands
#: (``ledger.flags``), decoded by :func:`decode_command` under the same JSON rules.
CONTRACTS: Final[dict[str, TopicContract]] = {
    c.logical: c
    for c in (
        TopicContract(
            "operations",
            (OperationRecorded,),
            key_field="correlation_id",
            key_why="operations must be keyed by correlation id to be paired",
        ),
        TopicContract("comparisons", (ComparisonRecorded,)),
        TopicContract("flag_events", (FlagChanged, CommandRejected)),
        TopicContract("decisions", (RolloutDecided,)),
        TopicContract(
            "health",
            (
                HealthAssessed,
                RollbackTriggered,
                SwitchoverRecorded,
                GateVerdict,
                BreakerStateChanged,
            ),
        ),
        TopicContract("dead_letters", (DeadLettered,)),
        TopicContract("checkpoints", (CheckpointPublished,)),
        TopicContract(INGEST, _ALL),
        TopicContract(ANY, _ALL),
    )
}

#: The topics whose events the ledger stores: every contract but the two pseudo-topics
#: (flag commands are requests, not facts, and have no contract here).
STORED_TOPICS: Final[tuple[str, ...]] = tuple(
    name for name in CONTRACTS if name not in (INGEST, ANY)
)

#: Fields an event may not leave null although its model allows it for old records:
#: replay, explain and audit recompute a decision from its bucket and threshold.
REQUIRED: Final[dict[type[Event], tuple[str, ...]]] = {RolloutDecided: ("bucket", "threshold_bp")}


def _timestamp_fields(model: type[Event]) -> tuple[str, ...]:
    return tuple(
        name
        for name, field in model.model_fields.items()
        if "AwareDatetime" in str(field.annotation)
    )


#: Top-level timestamp fields per model (all of the contract's timestamps are top-level).
_TIMESTAMPS: Final = {model: _timestamp_fields(model) for model in _ALL}
_FRACTION = re.compile(r"\.(\d*)")

_BY_FIXED_NAME = sorted(TOPICS.items(), key=lambda item: -len(item[1]))


def logical_topic(topic: str) -> str:
    """The contract name of a topic: a logical name, a Kafka name (any prefix), ``_ingest``,
    or :data:`ANY` for a topic that is none of the ledger's."""
    if topic in CONTRACTS:
        return topic
    for logical, fixed in _BY_FIXED_NAME:
        if topic.endswith(fixed):  # Kafka name = settings.topic_prefix + fixed name
            return logical
    return ANY


def contract_for(topic: str) -> TopicContract:
    """The contract of a topic (logical or Kafka name); unknown topics get :data:`ANY`'s."""
    return CONTRACTS.get(logical_topic(topic), CONTRACTS[ANY])


def _contract_of_model(model: type[Event]) -> TopicContract:
    """The topic holding only ``model``, or ``ANY`` (with ``model`` pinned by the caller)."""
    for contract in CONTRACTS.values():
        if contract.only is model:
            return contract
    return CONTRACTS[ANY]


# --- strict JSON -----------------------------------------------------------------------------

# A JSON string (escapes included), unrolled so the regex engine never backtracks.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _Mark:
    """What a parse hook returns instead of a value it refuses; found later with its path."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Duplicated(dict[str, Any]):
    """An object that repeated a key (``reason`` names it)."""

    reason = ""


def _depth_ok(text: str) -> str | None:
    """None if nesting is within :data:`MAX_DEPTH`, else why. Never recurses."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return None  # cannot be deeper than the number of openers
    depth = 0
    for match in _BRACKETS.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
        else:
            depth -= 1
    return None


def _path(parts: list[str | int]) -> str:
    return ".".join(str(p) for p in parts) or "<event>"


def _find(root: Any, check: Callable[[Any], str | None]) -> tuple[str, str] | None:
    """The first (path, reason) where ``check`` complains, depth first, without recursion."""
    stack: list[tuple[Any, list[str | int]]] = [(root, [])]
    while stack:
        value, where = stack.pop()
        problem = check(value)
        if problem is not None:
            return _path(where), problem
        if isinstance(value, dict):
            for key in reversed(list(value)):
                key_problem = check(key) if isinstance(key, str) else None
                if key_problem is not None:
                    return _path([*where, key]), f"key: {key_problem}"
                stack.append((value[key], [*where, key]))
        elif isinstance(value, list):
            for index in range(len(value) - 1, -1, -1):
                stack.append((value[index], [*where, index]))
    return None


def _marked(value: Any) -> str | None:
    if isinstance(value, _Mark | _Duplicated):
        return value.reason
    return None


def _lone_surrogate(value: Any) -> str | None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "holds a lone surrogate (not Unicode text)"
    return None


class _Refusal(Exception):
    """Raised by the fast path's hooks: parse again slowly to say where and why."""


def _fast_constant(literal: str) -> Any:
    raise _Refusal


def _fast_double(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise _Refusal
    return value


def _fast_integer(literal: str) -> int:
    if len(literal) <= 18:
        return int(literal)
    raise _Refusal  # maybe beyond the double range: the slow path decides


def _fast_pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(items)
    if len(found) != len(items):
        raise _Refusal
    return found


#: Built once (hooks without state): the common case of a good event pays no closure.
_FAST = json.JSONDecoder(
    object_pairs_hook=_fast_pairs,
    parse_constant=_fast_constant,
    parse_float=_fast_double,
    parse_int=_fast_integer,
)


def parse(data: bytes | str) -> Any:
    """Strict JSON: the document, or ``EventDecodeError`` naming where and why."""
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventDecodeError(f"not UTF-8 text: {exc}") from exc
    else:
        text = data
    too_deep = _depth_ok(text)
    if too_deep is not None:
        raise EventDecodeError(f"<event>: {too_deep}")
    try:
        document = _FAST.decode(text)
    except _Refusal:
        return _parse_slowly(text)
    except (ValueError, RecursionError) as exc:
        raise EventDecodeError(f"not JSON: {exc}") from exc
    if _SURROGATE_ESCAPE.search(text):
        found = _find(document, _lone_surrogate)
        if found is not None:
            raise EventDecodeError(f"{found[0]}: {found[1]}")
    return document


def _parse_slowly(text: str) -> Any:
    """The parse that marks what it refuses, to name the path (only for suspect input)."""
    marks = 0

    def constant(literal: str) -> Any:
        nonlocal marks
        marks += 1
        return _Mark(f"{literal} is not a JSON number")

    def double(literal: str) -> Any:
        value = float(literal)
        if math.isinf(value):
            nonlocal marks
            marks += 1
            return _Mark(f"{literal} is outside the double range")
        return value

    def integer(literal: str) -> Any:
        if len(literal) <= 18:
            return int(literal)
        if len(literal.lstrip("-")) <= 309:
            value = int(literal)
            if -_DOUBLE_MAX_INT <= value <= _DOUBLE_MAX_INT:
                return value
        nonlocal marks
        marks += 1
        shown = literal if len(literal) <= 40 else f"{literal[:20]}...({len(literal)} digits)"
        return _Mark(f"{shown} is outside the double range")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        found = dict(items)
        if len(found) == len(items):
            return found
        nonlocal marks
        marks += 1
        seen: set[str] = set()
        repeated = next(k for k, _ in items if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        duplicated = _Duplicated(found)
        duplicated.reason = f"duplicate key {repeated!r}"
        return duplicated

    try:
        document = json.loads(
            text,
            object_pairs_hook=pairs,
            parse_constant=constant,
            parse_float=double,
            parse_int=integer,
        )
    except (ValueError, RecursionError) as exc:
        raise EventDecodeError(f"not JSON: {exc}") from exc
    if marks:
        found = _find(document, _marked)
        if found is not None:
            raise EventDecodeError(f"{found[0]}: {found[1]}")
    if _SURROGATE_ESCAPE.search(text):
        found = _find(document, _lone_surrogate)
        if found is not None:
            raise EventDecodeError(f"{found[0]}: {found[1]}")
    return document


# --- events ----------------------------------------------------------------------------------


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "<event>"
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def _refuse(what: str, detail: str) -> EventDecodeError:
    return EventDecodeError(f"not a valid {what}: {detail}")


def decode(
    data: bytes | str | None,
    topic: str = ANY,
    *,
    type_hint: str | None = None,
    expected: type[Event] | None = None,
) -> Event:
    """Decode one event for ``topic`` (logical or Kafka name) strictly, or raise
    ``EventDecodeError`` whose message names the offending field.

    ``type_hint``: the type a file says its lines are (an export), used when ``type`` is
    left out. ``expected`` pins the model (it must be one the topic holds).
    """
    if data is None or len(data) == 0:
        raise EventDecodeError("empty message value")
    contract = contract_for(topic)
    if expected is not None and contract.logical == ANY:
        contract = _contract_of_model(expected)
    what = _what(contract)
    try:
        document = parse(data)
    except EventDecodeError as exc:
        raise _refuse(what, str(exc)) from exc
    if not isinstance(document, dict):
        raise _refuse(what, "<event>: must be a JSON object")
    model = _pick(contract, document, type_hint, what)
    if expected is not None and model is not expected:
        raise _refuse(what, f"type: expected {_type_name(expected)}, not {_type_name(model)}")
    version = document.get("schema_version", 1)
    if type(version) is int and version not in SCHEMA_VERSIONS:
        known = ", ".join(str(v) for v in sorted(SCHEMA_VERSIONS))
        raise _refuse(
            model.__name__, f"schema_version: unknown version {version} (this build reads {known})"
        )
    try:
        event = model.model_validate_json(data)
    except ValidationError as exc:
        raise _refuse(model.__name__, _describe(exc)) from exc
    for name in _TIMESTAMPS[model]:
        text = document.get(name)
        if isinstance(text, str):
            fraction = _FRACTION.search(text)
            if fraction is not None and len(fraction.group(1)) > 6:
                raise _refuse(model.__name__, f"{name}: at most 6 fractional digits (microseconds)")
    for name in REQUIRED.get(model, ()):
        if getattr(event, name) is None:
            raise _refuse(model.__name__, f"{name}: required (replay and audit recompute it)")
    return event


def _what(contract: TopicContract) -> str:
    if contract.only is not None:
        return contract.only.__name__
    if contract.logical in (ANY, INGEST):
        return "event"
    return f"{contract.logical} event"


def _pick(
    contract: TopicContract, document: dict[str, Any], hint: str | None, what: str
) -> type[Event]:
    if "type" not in document:
        if contract.only is not None:
            return contract.only
        if hint is not None:
            hinted = contract.model_named(hint)
            if hinted is not None:
                return hinted
        raise _refuse(what, f"type: required here (one of {', '.join(contract.names())})")
    name = document["type"]
    model = contract.model_named(name) if isinstance(name, str) else None
    if model is None:
        holds = ", ".join(contract.names())
        raise _refuse(what, f"type: {contract.logical} holds {holds}, not {name!r}")
    return model


def decode_record(
    topic: str, key: bytes | None, value: bytes | None, *, type_hint: str | None = None
) -> Event:
    """One Kafka record: :func:`decode`, then the topic's key rule."""
    contract = contract_for(topic)
    event = decode(value, contract.logical, type_hint=type_hint)
    if contract.key_field is not None:
        wanted = str(getattr(event, contract.key_field))
        if key != wanted.encode():
            shown = None if key is None else key.decode(errors="replace")
            raise EventDecodeError(
                f"key {shown!r} is not the {contract.key_field} {wanted!r}: {contract.key_why}"
            )
    return event


def admit(event: Event, topic: str) -> bytes:
    """The wire form of ``event`` if ``topic``'s decoders will take it back unchanged;
    otherwise ``EventDecodeError`` (the publisher refuses at publish what the sink would)."""
    try:
        data = encode_event(event)
    except PydanticSerializationError as exc:
        raise EventDecodeError(f"cannot be encoded: {exc}") from exc
    decoded = decode(data, topic)
    if decoded != event:
        raise EventDecodeError(
            f"{type(event).__name__} {event.event_id!r} would not decode as itself "
            "(a value JSON cannot carry exactly)"
        )
    return data


def decode_command(data: bytes | str | None) -> AnyCommand:
    """One flag command under the same JSON rules (``CommandError`` names the field)."""
    if data is None or len(data) == 0:
        raise CommandError("empty message value")
    try:
        parse(data)
    except EventDecodeError as exc:
        raise CommandError(str(exc)) from exc
    return decode_model(data)
