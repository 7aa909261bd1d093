"""The event contract: what producers may send, and what is refused (naming the field)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import EventDecodeError, LedgerError
from ledger.events import (
    EVENT_TYPES,
    CommandRejected,
    DecisionReason,
    FlagChanged,
    OperationRecorded,
    RolloutDecided,
    decode_event,
    decode_event_object,
    encode_event,
)
from tests.unit.flag_factories import decide_all

AT = "2025-03-01T12:00:00.250+02:00"


def operation(**changes: Any) -> dict[str, Any]:
    """A valid OperationRecorded as a producer would send it, with ``changes`` applied."""
    data: dict[str, Any] = {
        "type": "OperationRecorded",
        "event_id": "op-1",
        "correlation_id": "corr-1",
        "session_id": "sess-1",
        "pool": "v1",
        "role": "primary",
        "operation": "execute_program",
        "outcome": "ok",
        "result": {"rows": [1, 2, 3], "ok": True},
        "error": None,
        "started_at": AT,
        "duration_ms": 12.5,
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not _DROP}


_DROP = object()


def refusal(data: dict[str, Any], expected: type | None = None) -> str:
    with pytest.raises(EventDecodeError) as caught:
        decode_event(json.dumps(data), expected=expected)  # type: ignore[arg-type]
    assert isinstance(caught.value, LedgerError)
    assert isinstance(caught.value, ValueError)
    return str(caught.value)


# --- what is accepted -----------------------------------------------------------------------


def test_a_valid_operation_decodes_with_its_offset_kept_as_the_same_instant() -> None:
    event = decode_event(json.dumps(operation()))
    assert isinstance(event, OperationRecorded)
    assert event.started_at == datetime(2025, 3, 1, 10, 0, 0, 250_000, tzinfo=UTC)
    assert event.result == {"rows": [1, 2, 3], "ok": True}


def test_an_error_keeps_whatever_the_pools_native_error_carries() -> None:
    native = {"type": "TimeoutError", "message": "took too long", "retryable": True, "code": 504}
    event = decode_event(
        json.dumps(operation(outcome="error", result=None, error=native, pool="v2"))
    )
    assert isinstance(event, OperationRecorded)
    assert event.error is not None
    assert event.error.model_dump() == native


def test_optional_fields_may_be_left_out_and_anonymous_operations_have_a_null_session() -> None:
    event = decode_event(json.dumps(operation(session_id=None)))
    assert isinstance(event, OperationRecorded)
    assert event.session_id is None
    assert (event.environment, event.args_digest, event.resources) == (None, None, None)


@given(
    st.sampled_from(["v1", "v2"]),
    st.sampled_from(["primary", "shadow"]),
    st.floats(0, 1e9, allow_nan=False),
    st.one_of(st.none(), st.text(st.characters(blacklist_characters="\x00"), max_size=20)),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=10,
    ),
)
def test_operations_round_trip_through_their_wire_form(
    pool: str, role: str, duration: float, session: str | None, result: Any
) -> None:
    event = decode_event(
        json.dumps(
            operation(pool=pool, role=role, duration_ms=duration, session_id=session, result=result)
        )
    )
    assert decode_event(encode_event(event)) == event


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_every_event_type_names_itself_in_its_type_field(name: str) -> None:
    assert EVENT_TYPES[name].model_fields["type"].default == name


def test_flag_events_and_decisions_round_trip_through_the_wire_and_storage_forms() -> None:
    log = decide_all([{"command": "enable"}, {"command": "enable"}])
    decision = RolloutDecided(
        event_id="d",
        flag="f",
        session_id=None,
        correlation_id="c",
        pool="v1",
        reason=DecisionReason.DISABLED,
        bucket=17,
        threshold_bp=0,
        flag_version=0,
        at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    for event in [*log.events, decision]:
        assert decode_event(encode_event(event)) == event
        stored = json.loads(encode_event(event))  # as read back from a JSON column
        assert decode_event_object(stored) == event


# --- what is refused, and how the refusal reads ------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"pool": "v3"}, "pool"),
        ({"pool": "V1"}, "pool"),
        ({"role": "secondary"}, "role"),
        ({"outcome": "maybe"}, "outcome"),
        ({"duration_ms": -0.5}, "duration_ms"),
        ({"duration_ms": "12"}, "duration_ms"),
        ({"duration_ms": None}, "duration_ms"),
        ({"started_at": "2025-03-01T12:00:00"}, "started_at"),
        ({"started_at": "yesterday"}, "started_at"),
        ({"started_at": 1740830400}, "started_at"),
        ({"session_id": 42}, "session_id"),
        ({"correlation_id": ""}, "correlation_id"),
        ({"event_id": 7}, "event_id"),
        ({"resources": {"cpu_ms": -1}}, "resources.cpu_ms"),
        ({"resources": {"gpu": 1}}, "resources.gpu"),
        ({"colour": "red"}, "colour"),
        ({"correlation_id": _DROP}, "correlation_id"),
        ({"started_at": _DROP}, "started_at"),
        ({"duration_ms": _DROP}, "duration_ms"),
        ({"pool": _DROP}, "pool"),
    ],
)
def test_a_malformed_operation_is_refused_naming_the_field(
    changes: dict[str, Any], field: str
) -> None:
    message = refusal(operation(**changes))
    assert f"{field}:" in message


def test_a_naive_timestamp_is_refused_even_when_the_model_is_pinned() -> None:
    message = refusal(operation(started_at="2025-03-01T12:00:00"), expected=OperationRecorded)
    assert message.startswith("started_at:")
    assert "timezone" in message


def test_every_offending_field_is_named_not_only_the_first() -> None:
    message = refusal(operation(pool="v3", duration_ms=-1, role=_DROP))
    for field in ("pool", "duration_ms", "role"):
        assert f"{field}:" in message


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"outcome": "error", "result": None, "error": None}, "error"),
        ({"outcome": "ok", "error": {"type": "E", "message": "m"}}, "error"),
        ({"outcome": "error", "result": 1, "error": {"type": "E", "message": "m"}}, "result"),
        ({"outcome": "error", "result": None, "error": {"message": "m"}}, "error.type"),
    ],
)
def test_outcome_error_and_result_must_agree(changes: dict[str, Any], named: str) -> None:
    assert f"{named}:" in refusal(operation(**changes))


def test_an_unknown_or_missing_event_type_is_refused_naming_type() -> None:
    assert "type" in refusal(operation(type="OperationHappened"))
    assert "type" in refusal(operation(type=_DROP))


def test_bytes_that_are_not_json_are_refused_not_crashed_on() -> None:
    with pytest.raises(EventDecodeError):
        decode_event(b"\x00not json")


def test_a_topic_pinned_model_refuses_another_event_type() -> None:
    data = operation()
    with pytest.raises(EventDecodeError, match="type"):
        decode_event(json.dumps(data), expected=RolloutDecided)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bucket", 10_000),
        ("bucket", -1),
        ("threshold_bp", 10_001),
        ("flag_version", -1),
        ("reason", "BECAUSE"),
        ("pool", "v3"),
    ],
)
def test_a_decision_out_of_range_is_refused_naming_the_field(field: str, value: Any) -> None:
    data = {
        "type": "RolloutDecided",
        "event_id": "d",
        "flag": "f",
        "session_id": "s",
        "correlation_id": "c",
        "pool": "v2",
        "reason": "SPLIT",
        "bucket": 5,
        "threshold_bp": 100,
        "flag_version": 3,
        "at": AT,
        field: value,
    }
    assert f"{field}:" in refusal(data)


def test_flag_events_are_strict_about_types_and_percentages() -> None:
    change = json.loads(encode_event(decide_all([{"command": "enable"}]).changes[0]))
    assert "v2_rollout_bp:" in refusal({**change, "v2_rollout_bp": 10_001})
    assert "v2_pool_enabled:" in refusal({**change, "v2_pool_enabled": "true"})
    assert "session_overrides.s:" in refusal({**change, "session_overrides": {"s": "v9"}})
    assert "version:" in refusal({**change, "version": 0})


def test_a_rejection_without_its_detail_still_decodes_as_an_older_producer_wrote_it() -> None:
    rejection = decide_all([{"command": "enable"}, {"command": "enable"}]).events[1]
    data = json.loads(encode_event(rejection))
    del data["detail"]
    older = decode_event(json.dumps(data))
    assert isinstance(older, CommandRejected)
    assert older.detail == ""


def test_events_are_immutable() -> None:
    event = decode_event(json.dumps(operation()))
    with pytest.raises(ValueError, match="frozen"):
        event.event_id = "other"  # type: ignore[misc]


def test_a_change_keeps_its_instant_whatever_offset_it_was_written_with() -> None:
    change = decide_all([{"command": "enable"}]).changes[0]
    data = json.loads(encode_event(change))
    data["at"] = change.at.astimezone(timezone(timedelta(hours=9))).isoformat()
    again = decode_event(json.dumps(data))
    assert isinstance(again, FlagChanged)
    assert again.at == change.at
