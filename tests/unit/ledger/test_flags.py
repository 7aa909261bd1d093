"""The flag as an event log: deciding commands, folding events, state at a version or a time."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import flags
from ledger.errors import ChainError, CommandError, LedgerError
from ledger.events import CommandRejected, FlagChanged, decode_event, encode_event
from ledger.flags import GENESIS_HASH, FlagValues, Rejection
from tests.unit.flag_factories import (
    FLAG,
    T0,
    command,
    command_fields,
    command_lists,
    decide_all,
)

# --- deciding ---------------------------------------------------------------------------------


@given(command_lists)
def test_every_command_gets_exactly_one_answer_and_versions_have_no_gaps(
    commands: list[dict[str, Any]],
) -> None:
    log = decide_all(commands)
    assert len(log.events) == len(commands)
    assert [e.command_id for e in log.events] == [f"cmd-{i}" for i in range(len(commands))]
    assert [c.version for c in log.changes] == list(range(1, len(log.changes) + 1))


@given(command_lists)
def test_each_change_links_to_the_hash_of_the_one_before_from_the_genesis_hash(
    commands: list[dict[str, Any]],
) -> None:
    previous = GENESIS_HASH
    for change in decide_all(commands).changes:
        assert change.prev_hash == previous
        assert change.hash == flags.flag_event_hash(change)
        previous = change.hash


@given(command_lists, command_fields)
def test_a_command_already_answered_is_not_answered_again_even_after_a_restart(
    commands: list[dict[str, Any]], last: dict[str, Any]
) -> None:
    log = decide_all([*commands, last])
    restarted = flags.fold(log.events, FLAG)  # the writer rebuilt from the log after a crash
    for index, fields in enumerate([*commands, last]):
        again = command(index, fields)
        assert flags.decide_command(log.final, again, at=T0) is None
        assert flags.decide_command(restarted, again, at=T0) is None


@given(command_lists)
def test_the_same_commands_at_the_same_times_give_the_same_log(
    commands: list[dict[str, Any]],
) -> None:
    first, second = decide_all(commands), decide_all(commands)
    assert [encode_event(e) for e in first.events] == [encode_event(e) for e in second.events]


def test_event_ids_come_from_flag_and_version_or_from_the_command_id() -> None:
    log = decide_all([{"command": "enable"}, {"command": "enable"}])
    change, rejection = log.events
    assert change.event_id == flags.flag_event_id(FLAG, 1)
    assert rejection.event_id == flags.rejection_event_id(FLAG, "cmd-1")


def test_an_event_id_given_by_the_writer_is_used_as_is() -> None:
    answer = flags.decide_command(
        flags.initial_state(FLAG), command(0, {"command": "enable"}), at=T0, event_id="mine"
    )
    assert answer is not None
    assert answer.event_id == "mine"


@given(command_lists, command_fields, st.integers(0, 40))
def test_a_command_expecting_another_version_is_rejected_as_a_version_conflict(
    commands: list[dict[str, Any]], last: dict[str, Any], expected: int
) -> None:
    state = decide_all(commands).final
    if expected == state.version:
        expected += 1
    answer = flags.decide_command(
        state, command(999, last, expected_version=expected), at=T0 + timedelta(hours=1)
    )
    assert isinstance(answer, CommandRejected)
    assert answer.rejection == Rejection.VERSION_CONFLICT
    assert answer.current_version == state.version
    assert f"expected version {expected}" in answer.detail


@given(command_lists, command_fields)
def test_a_command_expecting_the_current_version_is_decided_on_its_merits(
    commands: list[dict[str, Any]], last: dict[str, Any]
) -> None:
    state = decide_all(commands).final
    unversioned = flags.decide_command(state, command(999, last), at=T0)
    versioned = flags.decide_command(
        state, command(999, last, expected_version=state.version), at=T0
    )
    assert unversioned is not None
    assert versioned is not None
    assert type(versioned) is type(unversioned)
    assert getattr(versioned, "rejection", None) == getattr(unversioned, "rejection", None)


@given(command_lists, command_fields)
def test_a_command_that_changes_nothing_is_rejected_as_no_change_and_adds_no_version(
    commands: list[dict[str, Any]], last: dict[str, Any]
) -> None:
    state = decide_all(commands).final
    answer = flags.decide_command(state, command(999, last), at=T0)
    assert answer is not None
    if isinstance(answer, FlagChanged):
        assert FlagValues.of(answer) != state.values
        assert answer.version == state.version + 1
    elif answer.rejection == Rejection.NO_CHANGE:
        assert "changes nothing" in answer.detail
        assert flags.apply(state, answer).values == state.values


def test_a_rejection_carries_the_command_its_reason_cause_and_a_detail_for_people() -> None:
    log = decide_all([{"command": "freeze"}])
    answer = flags.decide_command(
        log.final, command(7, {"command": "enable"}, cause_id="health-9"), at=T0
    )
    assert isinstance(answer, CommandRejected)
    assert (answer.command, answer.command_id, answer.actor) == ("enable", "cmd-7", "alice")
    assert (answer.reason, answer.cause_id, answer.rejection) == ("step 7", "health-9", "frozen")
    assert "enables V2" in answer.detail
    assert "rollback" in answer.detail


def test_a_command_for_another_flag_cannot_be_decided_against_this_one() -> None:
    with pytest.raises(CommandError, match="other"):
        flags.decide_command(
            flags.initial_state(FLAG), command(0, {"command": "enable"}, flag="other"), at=T0
        )


# --- frozen, rollback -------------------------------------------------------------------------


def _ramps(before: FlagValues, after: FlagValues) -> bool:
    """The documented meaning of a ramp change, written out plainly."""

    def v2_keys(overrides: Any) -> set[str]:
        return {k for k, p in overrides.items() if p == "v2"}

    def v1_keys(overrides: Any) -> set[str]:
        return {k for k, p in overrides.items() if p == "v1"}

    return (
        (after.v2_pool_enabled and not before.v2_pool_enabled)
        or after.v2_rollout_bp > before.v2_rollout_bp
        or (after.shadow_mode_enabled and not before.shadow_mode_enabled)
        or after.shadow_sample_bp > before.shadow_sample_bp
        or bool(v2_keys(after.session_overrides) - v2_keys(before.session_overrides))
        or bool(v2_keys(after.environment_overrides) - v2_keys(before.environment_overrides))
        or bool(v1_keys(before.session_overrides) - set(after.session_overrides))
        or bool(v1_keys(before.environment_overrides) - set(after.environment_overrides))
    )


@given(command_lists, command_fields)
def test_frozen_flag_refuses_ramp_changes_and_accepts_every_other_change(
    commands: list[dict[str, Any]], last: dict[str, Any]
) -> None:
    frozen = decide_all([*commands, {"command": "unfreeze"}, {"command": "freeze"}]).final
    assert frozen.frozen
    thawed = flags.apply(
        frozen,
        flags.decide_command(frozen, command(900, {"command": "unfreeze"}), at=T0),  # type: ignore[arg-type]
    )
    # What the command does to an unfrozen flag with the same values is what it asks for.
    wanted = flags.decide_command(thawed, command(999, last), at=T0)
    answer = flags.decide_command(frozen, command(999, last), at=T0)
    assert answer is not None
    if isinstance(wanted, CommandRejected) or last["command"] in ("freeze", "unfreeze"):
        return
    asked = FlagValues.of(wanted).__class__(**{**_as_dict(FlagValues.of(wanted)), "frozen": True})
    if _ramps(frozen.values, asked):
        assert isinstance(answer, CommandRejected)
        assert answer.rejection == Rejection.FROZEN
    else:
        assert isinstance(answer, FlagChanged)
        assert answer.frozen


def _as_dict(values: FlagValues) -> dict[str, Any]:
    return {name: getattr(values, name) for name in FlagValues.__slots__}


@given(command_lists)
def test_rollback_is_accepted_even_when_frozen_and_leaves_v2_off_at_zero_without_v2_overrides(
    commands: list[dict[str, Any]],
) -> None:
    log = decide_all([*commands, {"command": "freeze"}, {"command": "rollback"}])
    after = log.final.values
    assert not after.v2_pool_enabled
    assert after.v2_rollout_bp == 0
    assert "v2" not in after.session_overrides.values()
    assert "v2" not in after.environment_overrides.values()
    assert after.frozen
    rollback = log.events[-1]
    if isinstance(rollback, CommandRejected):
        assert rollback.rejection == Rejection.NO_CHANGE  # it was rolled back already


@given(command_lists)
def test_rollback_keeps_v1_overrides_and_the_shadow_settings(
    commands: list[dict[str, Any]],
) -> None:
    log = decide_all(commands)
    before = log.final.values
    after = decide_all([*commands, {"command": "rollback"}]).final.values
    assert {k: p for k, p in before.session_overrides.items() if p == "v1"} == dict(
        after.session_overrides
    )
    assert {k: p for k, p in before.environment_overrides.items() if p == "v1"} == dict(
        after.environment_overrides
    )
    assert (after.shadow_mode_enabled, after.shadow_sample_bp) == (
        before.shadow_mode_enabled,
        before.shadow_sample_bp,
    )


def test_frozen_flag_accepts_lowering_the_percentage_and_unfreeze() -> None:
    log = decide_all(
        [
            {"command": "enable"},
            {"command": "set_percentage", "percentage_bp": 5000},
            {"command": "freeze"},
            {"command": "set_percentage", "percentage_bp": 2500},
            {"command": "set_percentage", "percentage_bp": 3000},
            {"command": "unfreeze"},
            {"command": "set_percentage", "percentage_bp": 3000},
        ]
    )
    kinds = [getattr(e, "rejection", "changed") for e in log.events]
    assert kinds == ["changed", "changed", "changed", "changed", "frozen", "changed", "changed"]
    assert log.final.v2_rollout_bp == 3000


def test_frozen_flag_refuses_clearing_a_v1_override_because_it_can_send_the_session_to_v2() -> None:
    log = decide_all(
        [
            {"command": "set_session_override", "session_id": "alice", "pool": "v1"},
            {"command": "freeze"},
            {"command": "clear_session_override", "session_id": "alice"},
            {"command": "set_session_override", "session_id": "bob", "pool": "v1"},
        ]
    )
    assert isinstance(log.events[2], CommandRejected)
    assert "alice" in log.events[2].detail
    assert isinstance(log.events[3], FlagChanged)


# --- folding ----------------------------------------------------------------------------------


@given(command_lists)
def test_folding_step_by_step_equals_one_fold_of_the_whole_log(
    commands: list[dict[str, Any]],
) -> None:
    log = decide_all(commands)
    assert flags.fold(log.events, FLAG) == log.final


@given(command_lists)
def test_the_state_remembers_every_answered_command_id_including_rejections(
    commands: list[dict[str, Any]],
) -> None:
    log = decide_all(commands)
    assert log.final.decided == {f"cmd-{i}" for i in range(len(commands))}


@given(command_lists)
def test_each_change_is_a_full_snapshot_of_the_values(commands: list[dict[str, Any]]) -> None:
    log = decide_all(commands)
    for event, state in zip(log.events, log.states, strict=True):
        if isinstance(event, FlagChanged):
            assert FlagValues.of(event) == state.values
            assert (state.version, state.last_hash, state.changed_at) == (
                event.version,
                event.hash,
                event.at,
            )


def test_folding_skips_other_flags_events() -> None:
    ours = decide_all([{"command": "enable"}])
    theirs = decide_all([{"command": "enable"}, {"command": "freeze"}], flag="other")
    mixed = [theirs.events[0], *ours.events, theirs.events[1]]
    assert flags.fold(mixed, FLAG) == ours.final


def test_apply_refuses_an_event_that_does_not_follow_the_chain() -> None:
    log = decide_all([{"command": "enable"}, {"command": "set_percentage", "percentage_bp": 100}])
    first, second = log.changes
    start = flags.initial_state(FLAG)
    with pytest.raises(ChainError, match="version 2 cannot follow version 0"):
        flags.apply(start, second)
    with pytest.raises(ChainError, match="prev_hash"):
        flags.apply(start, first.model_copy(update={"prev_hash": "f" * 64}))
    with pytest.raises(ChainError, match="hash does not match"):
        flags.apply(start, first.model_copy(update={"v2_rollout_bp": 9}))
    with pytest.raises(ChainError, match="other"):
        flags.apply(flags.initial_state("other"), first)
    with pytest.raises(ChainError):
        flags.fold([second], FLAG)


def test_a_rejection_changes_nothing_but_the_answered_ids() -> None:
    log = decide_all([{"command": "enable"}, {"command": "enable"}])
    before, after = log.states
    assert isinstance(log.events[1], CommandRejected)
    assert after.values == before.values
    assert after.version == before.version
    assert after.decided == before.decided | {"cmd-1"}
    assert flags.apply(after, log.events[1]) is after


# --- state at a version or a time ------------------------------------------------------------


@given(command_lists, st.data())
def test_state_at_a_version_is_the_state_right_after_that_version(
    commands: list[dict[str, Any]], data: st.DataObject
) -> None:
    log = decide_all(commands)
    version = data.draw(st.integers(0, len(log.changes)))
    state = flags.state_at(log.events, version=version, flag=FLAG)
    assert state.version == version
    expected = (
        flags.initial_state(FLAG).values
        if version == 0
        else FlagValues.of(log.changes[version - 1])
    )
    assert state.values == expected


@given(command_lists, st.data())
def test_state_at_a_time_is_the_state_in_force_then(
    commands: list[dict[str, Any]], data: st.DataObject
) -> None:
    log = decide_all(commands)  # event i is at T0 + i seconds
    seconds = data.draw(st.floats(-5, len(commands) + 5, allow_nan=False))
    at = T0 + timedelta(seconds=seconds)
    state = flags.state_at(log.events, at=at, flag=FLAG)
    in_force = [s for e, s in zip(log.events, log.states, strict=True) if e.at <= at]
    assert state == (in_force[-1] if in_force else flags.initial_state(FLAG))


def test_state_at_a_time_in_another_timezone_is_the_same_instant() -> None:
    log = decide_all([{"command": "enable"}, {"command": "freeze"}])
    paris = timezone(timedelta(hours=2))
    at = (T0 + timedelta(seconds=0.5)).astimezone(paris)
    assert flags.state_at(log.events, at=at).version == 1


def test_state_at_follows_log_order_when_the_writers_clock_stepped_back() -> None:
    times = [T0, T0 + timedelta(seconds=10), T0 + timedelta(seconds=5)]
    log = decide_all(
        [{"command": "enable"}, {"command": "freeze"}, {"command": "unfreeze"}],
        clock=lambda i: times[i],
    )
    # At +7 s version 2 (written at +10 s) was not in force yet, so version 3 was not either.
    assert flags.state_at(log.events, at=T0 + timedelta(seconds=7)).version == 1


def test_state_at_refuses_a_version_beyond_the_log_both_version_and_time_and_naive_times() -> None:
    log = decide_all([{"command": "enable"}])
    with pytest.raises(ValueError, match="ends at version 1"):
        flags.state_at(log.events, version=2)
    with pytest.raises(ValueError, match="not both"):
        flags.state_at(log.events, version=1, at=T0)
    with pytest.raises(ValueError, match="timezone"):
        flags.state_at(log.events, at=T0.replace(tzinfo=None))
    with pytest.raises(ValueError, match="flag="):
        flags.state_at([])
    assert flags.state_at([], flag=FLAG) == flags.initial_state(FLAG)


def test_the_initial_state_has_the_documented_defaults() -> None:
    state = flags.initial_state(FLAG)
    assert (state.version, state.last_hash, state.decided) == (0, GENESIS_HASH, frozenset())
    assert not state.v2_pool_enabled
    assert state.v2_rollout_bp == 0
    assert state.shadow_mode_enabled
    assert state.shadow_sample_bp == 10_000
    assert not state.session_overrides
    assert not state.environment_overrides
    assert not state.frozen


# --- hashing ----------------------------------------------------------------------------------


def test_canonical_json_has_sorted_keys_no_spaces_utc_timestamps_and_no_hash() -> None:
    change = decide_all([{"command": "enable"}]).changes[0]
    text = flags.canonical_json(change).decode()
    data = json.loads(text)
    assert "hash" not in data
    assert list(data) == sorted(data)
    assert ", " not in text
    assert ": " not in text
    assert data["at"] == "2025-03-01T12:00:00.000000Z"
    assert data["prev_hash"] == GENESIS_HASH
    assert change.hash == hashlib.sha256(text.encode()).hexdigest()


def test_the_hash_does_not_depend_on_the_timezone_the_time_was_written_in() -> None:
    change = decide_all([{"command": "enable"}]).changes[0]
    elsewhere = change.model_copy(
        update={"at": change.at.astimezone(timezone(timedelta(hours=-5)))}
    )
    assert flags.flag_event_hash(elsewhere) == change.hash


@given(command_lists)
def test_changes_survive_the_wire_with_their_hash_intact(commands: list[dict[str, Any]]) -> None:
    for change in decide_all(commands).changes:
        again = decode_event(encode_event(change), expected=FlagChanged)
        assert isinstance(again, FlagChanged)
        assert flags.flag_event_hash(again) == change.hash


# --- commands and percentages ----------------------------------------------------------------


@given(command_fields)
def test_commands_round_trip_through_their_wire_form(fields: dict[str, Any]) -> None:
    original = command(1, fields, cause_id="c", expected_version=3)
    assert flags.decode_command(flags.encode_command(original)) == original


@given(st.integers(0, 10_000))
def test_a_percentage_with_two_decimals_is_stored_as_basis_points(bp: int) -> None:
    text = f"{Decimal(bp) / 100:.2f}"
    assert flags.parse_percentage(text) == bp
    assert flags.parse_percentage(Decimal(text)) == bp
    assert flags.parse_percentage(flags.format_bp(bp).rstrip("%")) == bp


@pytest.mark.parametrize(
    ("given_value", "complaint"),
    [
        ("12.345", "more than two decimals"),
        (Decimal("0.001"), "more than two decimals"),
        ("100.01", "outside 0..100"),
        (-1, "outside 0..100"),
        ("ten", "not a number"),
        ("NaN", "finite"),
        (True, "expected a number"),
    ],
)
def test_a_percentage_that_does_not_fit_is_refused_with_the_reason(
    given_value: Any, complaint: str
) -> None:
    with pytest.raises(CommandError, match=complaint):
        flags.parse_percentage(given_value)


def test_a_command_may_give_the_percentage_itself_instead_of_basis_points() -> None:
    base = {"command_id": "c", "flag": FLAG, "actor": "a", "reason": "r"}
    ramp = flags.decode_command(
        json.dumps({**base, "command": "set_percentage", "percentage": "12.34"})
    )
    sample = flags.decode_command(
        json.dumps({**base, "command": "set_shadow_sample", "percentage": 5})
    )
    assert isinstance(ramp, flags.SetPercentage)
    assert ramp.percentage_bp == 1234
    assert isinstance(sample, flags.SetShadowSample)
    assert sample.sample_bp == 500


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"command": "set_percentage", "percentage": 12.345}, "more than two decimals"),
        ({"command": "set_percentage", "percentage_bp": 10_001}, "percentage_bp"),
        ({"command": "set_percentage", "percentage_bp": "12"}, "percentage_bp"),
        ({"command": "set_percentage", "percentage": 1, "percentage_bp": 100}, "not both"),
        ({"command": "set_session_override", "session_id": "s", "pool": "v3"}, "pool"),
        ({"command": "launch"}, "command"),
        ({"command": "enable", "expected_version": -1}, "expected_version"),
        ({"command": "enable", "colour": "red"}, "colour"),
    ],
)
def test_a_malformed_command_is_refused_naming_the_field(
    fields: dict[str, Any], named: str
) -> None:
    data = {"command_id": "c", "flag": FLAG, "actor": "a", "reason": "r", **fields}
    with pytest.raises(CommandError, match=named) as caught:
        flags.decode_command(json.dumps(data))
    assert isinstance(caught.value, LedgerError)


def test_a_command_without_its_common_fields_names_each_missing_one() -> None:
    with pytest.raises(CommandError) as caught:
        flags.decode_command(b'{"command": "enable"}')
    for name in ("command_id", "flag", "actor", "reason"):
        assert f"{name}: Field required" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("v2_pool_enabled", "true", {"command": "enable"}),
        ("v2_pool_enabled", "off", {"command": "disable"}),
        ("v2_rollout_percentage", "12.5", {"command": "set_percentage", "percentage_bp": 1250}),
        ("shadow_mode_enabled", "false", {"command": "set_shadow_mode", "enabled": False}),
        ("shadow_sample_percentage", "10", {"command": "set_shadow_sample", "sample_bp": 1000}),
    ],
)
def test_a_named_setting_becomes_its_command(
    name: str, value: str, expected: dict[str, Any]
) -> None:
    made = flags.setting_command(
        name, value, command_id="c", flag=FLAG, actor="a", reason="r", expected_version=2
    )
    assert made.model_dump(include=set(expected)) == expected
    assert made.expected_version == 2


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("v2_rollout_percentage", "1.234", "more than two decimals"),
        ("v2_pool_enabled", "maybe", "true or false"),
        ("v3_pool_enabled", "true", "unknown flag value"),
    ],
)
def test_a_named_setting_that_does_not_fit_is_refused(
    name: str, value: str, complaint: str
) -> None:
    with pytest.raises(CommandError, match=complaint):
        flags.setting_command(name, value, command_id="c", flag=FLAG, actor="a", reason="r")


@settings(max_examples=50)
@given(command_lists)
def test_describe_says_on_or_off_and_the_percentage(commands: list[dict[str, Any]]) -> None:
    values = decide_all(commands).final.values
    line = values.describe()
    assert line.startswith("V2 on" if values.v2_pool_enabled else "V2 off")
    assert flags.format_bp(values.v2_rollout_bp) in line
