"""ledger.wire: the one strict decoder per topic, with the regressions of issue 12's findings."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from ledger import rollout, wire
from ledger.errors import CommandError, EventDecodeError
from ledger.events import (
    MAX_ID_BYTES,
    FlagChanged,
    OperationRecorded,
    RolloutDecided,
    encode_event,
)
from ledger.replay import replay
from ledger.rollout import DecisionContext, decide
from ledger.wire import MAX_DEPTH
from tests.unit.flag_factories import decide_all

AT = "2026-03-01T10:00:00Z"


def operation_doc(**changes: Any) -> dict[str, Any]:
    """Exactly the fields the event contract lists for an OperationRecorded (no ``type``)."""
    doc: dict[str, Any] = {
        "event_id": "op-1",
        "correlation_id": "c-1",
        "session_id": "s-1",
        "pool": "v1",
        "role": "primary",
        "operation": "quote",
        "outcome": "ok",
        "result": {"price": 1.5, "items": [{"sku": "a", "qty": 2}]},
        "started_at": AT,
        "duration_ms": 3.25,
    }
    doc.update(changes)
    return doc


def raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def refusal(data: bytes, topic: str = "operations") -> str:
    with pytest.raises(EventDecodeError) as caught:
        wire.decode(data, topic)
    return str(caught.value)


# --- what each topic may hold -------------------------------------------------------------------


def test_an_operation_without_type_is_accepted_on_the_operations_topic() -> None:
    event = wire.decode(raw(operation_doc()), "operations")
    assert isinstance(event, OperationRecorded)
    assert event.type == "OperationRecorded"


def test_kafka_names_with_any_prefix_map_to_their_contract() -> None:
    assert wire.logical_topic("run7.pool.operations") == "operations"
    assert wire.logical_topic("ledger.flag-events") == "flag_events"
    assert wire.logical_topic("_ingest") == wire.INGEST
    assert wire.logical_topic("scratch") == wire.ANY


def test_a_topic_holding_several_types_requires_type() -> None:
    change = json.loads(encode_event(_flag_change()))
    del change["type"]
    assert "type: required" in refusal(json.dumps(change).encode(), "flag_events")


def test_an_event_of_another_topic_is_refused_naming_the_type() -> None:
    reason = refusal(raw(operation_doc(type="ComparisonRecorded")))
    assert "type: operations holds OperationRecorded, not 'ComparisonRecorded'" in reason


def test_the_operations_key_rule_names_the_key() -> None:
    with pytest.raises(EventDecodeError, match="'session-7' is not the correlation_id 'c-1'"):
        wire.decode_record("pool.operations", b"session-7", raw(operation_doc()))
    assert wire.decode_record("pool.operations", b"c-1", raw(operation_doc())).event_id == "op-1"


def test_ingest_takes_a_typeless_line_under_its_files_type() -> None:
    line = raw(operation_doc())
    assert "type: required" in refusal(line, wire.INGEST)
    event = wire.decode(line, wire.INGEST, type_hint="OperationRecorded")
    assert isinstance(event, OperationRecorded)


# --- strict JSON (issue 12, found 2-4) ----------------------------------------------------------


def test_duplicate_keys_are_refused_and_the_last_one_never_wins() -> None:
    text = raw(operation_doc()).replace(b'"pool": "v1"', b'"pool": "v1", "pool": "v2"')
    assert "duplicate key 'pool'" in refusal(text)


def test_a_flag_change_carrying_v2_rollout_bp_twice_is_refused() -> None:
    text = encode_event(_flag_change()).replace(
        b'"v2_rollout_bp":100', b'"v2_rollout_bp":100,"v2_rollout_bp":10000'
    )
    assert b"10000" in text
    assert "duplicate key 'v2_rollout_bp'" in refusal(text, "flag_events")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
@pytest.mark.parametrize("where", ["result", "resources"])
def test_nan_infinity_and_numbers_beyond_double_are_refused(literal: str, where: str) -> None:
    placeholder = '"__N__"'
    doc = operation_doc(
        result={"x": "__N__"} if where == "result" else None,
        resources={"cpu_ms": "__N__"} if where == "resources" else None,
    )
    text = json.dumps(doc).replace(placeholder, literal).encode()
    reason = refusal(text)
    assert ("result.x" if where == "result" else "resources.cpu_ms") in reason


def test_integers_beyond_int64_are_refused_not_stored_as_null() -> None:
    reason = refusal(raw(operation_doc(resources={"memory_bytes": 2**70})))
    assert "resources.memory_bytes" in reason
    assert "schema_version" in refusal(raw(operation_doc(schema_version=2**70)))


def test_an_unknown_schema_version_is_refused() -> None:
    assert "schema_version: unknown version 99" in refusal(raw(operation_doc(schema_version=99)))


def test_a_5_mb_session_id_is_refused_and_1_kib_is_the_limit() -> None:
    assert "session_id" in refusal(raw(operation_doc(session_id="s" * 5_000_000)))
    assert "session_id" in refusal(raw(operation_doc(session_id="é" * (MAX_ID_BYTES // 2 + 1))))
    assert wire.decode(raw(operation_doc(session_id="s" * MAX_ID_BYTES)), "operations")


def test_nul_in_an_id_is_refused() -> None:
    assert "correlation_id: an id must not contain NUL" in refusal(
        raw(operation_doc(correlation_id="c\x001"))
    )


def test_a_lone_surrogate_is_refused_naming_its_path() -> None:
    text = raw(operation_doc(result={"name": "__S__"})).replace(b"__S__", b"\\ud800")
    assert "result.name: holds a lone surrogate" in refusal(text)
    paired = raw(operation_doc(result={"name": "__S__"})).replace(b"__S__", b"\\ud83d\\ude00")
    assert wire.decode(paired, "operations").result == {"name": "\U0001f600"}  # type: ignore[union-attr]


def test_nesting_deeper_than_the_limit_is_refused_without_recursion() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    text = json.dumps(operation_doc(result="__D__")).replace('"__D__"', deep).encode()
    assert f"nested deeper than {MAX_DEPTH}" in refusal(text)
    ok = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    assert wire.decode(
        json.dumps(operation_doc(result="__D__")).replace('"__D__"', ok), "operations"
    )


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    doc = operation_doc(result={"text": "[" * 500})
    assert wire.decode(raw(doc), "operations").result == {"text": "[" * 500}  # type: ignore[union-attr]


def test_a_double_given_as_an_integer_must_be_exact() -> None:
    assert "duration_ms" in refusal(raw(operation_doc(duration_ms=2**53 + 1)))
    assert wire.decode(raw(operation_doc(duration_ms=2**53)), "operations")


def test_timestamps_finer_than_microseconds_are_refused() -> None:
    assert "started_at" in refusal(raw(operation_doc(started_at="2026-03-01T10:00:00.1234567Z")))


def test_flag_commands_get_the_same_json_rules() -> None:
    command = b'{"command": "enable", "actor": "a", "reason": "r", "reason": "x"}'
    with pytest.raises(CommandError, match="duplicate key 'reason'"):
        wire.decode_command(command)


# --- the publisher's door -----------------------------------------------------------------------


def test_admit_refuses_what_the_sink_would_refuse() -> None:
    event = OperationRecorded.model_validate(
        {**operation_doc(result={"n": 10**400}), "started_at": datetime(2026, 3, 1, tzinfo=UTC)}
    )
    with pytest.raises(EventDecodeError, match="outside the double range"):
        wire.admit(event, "pool.operations")
    fine = event.model_copy(update={"result": {"n": 1}})
    assert wire.decode(wire.admit(fine, "pool.operations"), "operations") == fine


# --- decisions: bucket and threshold (found 6), bucket formula (found 7) ------------------------


def _flag_change() -> FlagChanged:
    log = decide_all([{"command": "enable"}, {"command": "set_percentage", "percentage_bp": 100}])
    change = log.changes[1]
    assert isinstance(change, FlagChanged)
    return change


def test_a_decision_without_bucket_or_threshold_is_refused_at_the_door() -> None:
    doc = {
        "event_id": "d",
        "flag": "f",
        "session_id": "s",
        "correlation_id": "c",
        "pool": "v1",
        "reason": "SPLIT",
        "flag_version": 0,
        "at": AT,
    }
    assert "bucket: required" in refusal(raw(doc), "decisions")
    assert "threshold_bp: required" in refusal(raw({**doc, "bucket": 1}), "decisions")


def test_a_stored_decision_without_bucket_does_not_match_in_replay() -> None:
    from ledger import flags

    state = flags.initial_state("f")
    made = decide(
        state, DecisionContext("s", "c"), at=datetime(2026, 3, 1, tzinfo=UTC), event_id="d"
    )
    assert replay([], made).matches
    stripped = made.model_copy(update={"bucket": None})
    explanation = replay([], stripped)
    assert not explanation.matches
    assert any("bucket: recorded nothing" in d for d in explanation.differences)


def test_an_empty_session_id_is_bucketed_as_itself_as_the_readme_says() -> None:
    from ledger import flags

    state = flags.initial_state("f")
    made = decide(
        state, DecisionContext("", "c-9"), at=datetime(2026, 3, 1, tzinfo=UTC), event_id="d"
    )
    assert made.bucket == rollout.bucket("f", "")
    assert made.bucket != rollout.bucket("f", "c-9")
    from pathlib import Path

    readme = (Path(__file__).parents[3] / "README.md").read_text()
    assert "key = session_id if session_id is not None else correlation_id" in readme


def test_version_2_buckets_cannot_be_confused_by_a_colon() -> None:
    assert rollout.bucket("a:b", "c") != rollout.bucket("a", "b:c")


def test_old_decisions_replay_bit_for_bit_under_hash_version_1() -> None:
    from ledger import flags

    state = flags.initial_state("f")
    old = decide(
        state,
        DecisionContext("s-1", "c"),
        at=datetime(2026, 3, 1, tzinfo=UTC),
        event_id="d",
        hash_version=1,
    )
    assert old.bucket == rollout.bucket("f", "s-1", 1)
    assert isinstance(old, RolloutDecided)
    assert replay([], old).matches


def test_a_duration_whose_microseconds_overflow_is_refused() -> None:
    # Found by bench/fuzz_contract.py: the largest double crashed the health agent.
    assert "duration_ms" in refusal(raw(operation_doc(duration_ms=1.7976931348623157e308)))
    assert "resources.cpu_ms" in refusal(raw(operation_doc(resources={"cpu_ms": 1e300})))


def test_a_latency_ratio_that_overflows_is_left_out_not_fatal() -> None:
    from ledger.comparison import compare_operations, load_rules

    v1 = wire.decode(raw(operation_doc(duration_ms=1e-300)), "operations")
    v2 = wire.decode(raw(operation_doc(event_id="op-2", pool="v2", duration_ms=1e12)), "operations")
    assert isinstance(v1, OperationRecorded)
    assert isinstance(v2, OperationRecorded)
    comparison = compare_operations(v1, v2, load_rules(), at=datetime(2026, 3, 1, tzinfo=UTC))
    assert comparison.latency_ratio is None
