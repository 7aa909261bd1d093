"""Replay of recorded decisions, and the hash chain's verification."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ledger import flags, rollout
from ledger.errors import ChainError, LedgerError
from ledger.events import CommandRejected, DecisionReason, FlagChanged, RolloutDecided
from ledger.replay import (
    BrokenChainError,
    ChainProblem,
    chain_report,
    replay,
    verify_chain,
)
from ledger.rollout import DecisionContext
from tests.unit.flag_factories import (
    ENVIRONMENTS,
    FLAG,
    SESSIONS,
    T0,
    Log,
    command_lists,
    decide_all,
    logs_with_versions,
)

#: Ids as the contract takes them (ledger.events: no NUL).
IDS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")

contexts = st.builds(
    DecisionContext,
    session_id=st.one_of(st.none(), st.sampled_from(SESSIONS), st.text(IDS, max_size=20)),
    correlation_id=st.text(IDS, min_size=1, max_size=20),
    environment=st.one_of(st.none(), st.sampled_from(ENVIRONMENTS)),
    breaker_open=st.booleans(),
)


def decided_under(log: Log, version: int, context: DecisionContext) -> RolloutDecided:
    state = flags.state_at(log.events, version=version, flag=FLAG)
    return rollout.decide(state, context, at=T0 + timedelta(days=1), event_id="decision-1")


# --- replay ------------------------------------------------------------------------------------


@given(command_lists, contexts, st.data())
def test_a_decision_made_by_decide_replays_as_matching_with_its_version_rule_and_bucket(
    commands: list[dict[str, Any]], context: DecisionContext, data: st.DataObject
) -> None:
    log = decide_all(commands)
    version = data.draw(st.integers(0, len(log.changes)))
    decision = decided_under(log, version, context)
    explanation = replay(log.events, decision)
    assert explanation.matches, explanation.describe()
    assert explanation.problem is None
    assert explanation.flag_version == version
    assert (explanation.pool, explanation.reason) == (decision.pool, decision.reason)
    assert explanation.bucket == decision.bucket == rollout.bucket(FLAG, context.sticky_key)
    assert explanation.threshold_bp == decision.threshold_bp
    assert explanation.differences == ()
    if decision.reason != DecisionReason.CIRCUIT_OPEN:
        assert explanation.rule == decision.reason


@given(command_lists, contexts)
def test_a_circuit_open_decision_replays_with_the_breaker_open_and_names_the_rule_under_it(
    commands: list[dict[str, Any]], context: DecisionContext
) -> None:
    log = decide_all(
        [*commands, {"command": "enable"}, {"command": "set_percentage", "percentage_bp": 10_000}]
    )
    opened = DecisionContext(context.session_id, context.correlation_id, context.environment, True)
    decision = decided_under(log, len(log.changes), opened)
    explanation = replay(log.events, decision)
    assert explanation.matches
    assert explanation.breaker_open == (decision.reason == DecisionReason.CIRCUIT_OPEN)
    if decision.reason == DecisionReason.CIRCUIT_OPEN:
        assert explanation.rule in (
            DecisionReason.SPLIT,
            DecisionReason.SESSION_OVERRIDE,
            DecisionReason.ENVIRONMENT_OVERRIDE,
        )


@given(command_lists, contexts, st.sampled_from(["pool", "reason", "bucket", "threshold_bp"]))
def test_a_decision_that_was_altered_does_not_match_and_names_what_differs(
    commands: list[dict[str, Any]], context: DecisionContext, field: str
) -> None:
    log = decide_all(commands)
    decision = decided_under(log, len(log.changes), context)
    altered_value: Any = {
        "pool": "v1" if decision.pool == "v2" else "v2",
        "reason": DecisionReason.SESSION_OVERRIDE
        if decision.reason != DecisionReason.SESSION_OVERRIDE
        else DecisionReason.SPLIT,
        "bucket": ((decision.bucket or 0) + 1) % 10_000,
        "threshold_bp": ((decision.threshold_bp or 0) + 1) % 10_001,
    }[field]
    altered = decision.model_copy(update={field: altered_value})
    explanation = replay(log.events, altered)
    assert not explanation.matches
    label = "threshold" if field == "threshold_bp" else field
    assert any(d.startswith(f"{label}:") for d in explanation.differences)
    assert "DIFFERS" in explanation.describe()


def test_replay_uses_the_state_of_the_decisions_version_not_the_latest() -> None:
    log = decide_all(
        [
            {"command": "enable"},
            {"command": "set_percentage", "percentage_bp": 10_000},
            {"command": "rollback"},
        ]
    )
    decision = decided_under(log, 2, DecisionContext("alice", "c1"))
    explanation = replay(log.events, decision)
    assert explanation.matches
    assert (explanation.pool, explanation.rule, explanation.threshold_bp) == (
        "v2",
        DecisionReason.SPLIT,
        10_000,
    )
    assert "version 2" in explanation.describe()


def test_replay_ignores_other_flags_and_rejections_in_the_log() -> None:
    ours = decide_all([{"command": "enable"}, {"command": "enable"}])
    theirs = decide_all([{"command": "freeze"}], flag="other")
    decision = decided_under(ours, 1, DecisionContext("bob", "c"))
    assert replay([*theirs.events, *ours.events], decision).matches


def test_a_decision_at_a_version_the_log_does_not_reach_cannot_be_recomputed() -> None:
    log = decide_all([{"command": "enable"}])
    decision = decided_under(log, 1, DecisionContext("a", "c")).model_copy(
        update={"flag_version": 5}
    )
    explanation = replay(log.events, decision)
    assert not explanation.matches
    assert explanation.problem is not None
    assert "ends at version 1" in explanation.problem
    assert "cannot recompute" in explanation.describe()


def test_a_decision_with_an_unknown_hash_version_cannot_be_recomputed() -> None:
    log = decide_all([{"command": "enable"}])
    decision = decided_under(log, 1, DecisionContext("a", "c")).model_copy(
        update={"hash_version": 3}
    )
    explanation = replay(log.events, decision)
    assert not explanation.matches
    assert explanation.problem is not None
    assert "hash version 3" in explanation.problem


def test_a_decision_under_a_broken_log_is_not_trusted() -> None:
    log = decide_all([{"command": "enable"}, {"command": "set_percentage", "percentage_bp": 10}])
    events = list(log.events)
    events[0] = log.changes[0].model_copy(update={"reason": "rewritten"})
    explanation = replay(events, decided_under(log, 2, DecisionContext("a", "c")))
    assert not explanation.matches
    assert explanation.problem is not None
    assert "version 1" in explanation.problem


# --- the chain ---------------------------------------------------------------------------------


@given(command_lists)
def test_a_log_written_by_decide_command_verifies(commands: list[dict[str, Any]]) -> None:
    log = decide_all(commands)
    report = verify_chain(log.events)
    assert report.ok
    assert report.versions == len(log.changes)
    assert report.head_hash == log.final.last_hash
    assert "verified" in report.describe()


def _edit(change: FlagChanged, how: int) -> FlagChanged:
    """One tampering of a field that matters (a different value whatever it was)."""
    edits: list[dict[str, Any]] = [
        {"v2_rollout_bp": (change.v2_rollout_bp + 1) % 10_001},
        {"reason": change.reason + " (edited)"},
        {"actor": "mallory"},
        {"v2_pool_enabled": not change.v2_pool_enabled},
        {"at": change.at + timedelta(seconds=1)},
        {"session_overrides": {**change.session_overrides, "mallory": "v2"}},
    ]
    return change.model_copy(update=edits[how % len(edits)])


def _rehash(change: FlagChanged) -> FlagChanged:
    return change.model_copy(update={"hash": flags.flag_event_hash(change)})


@given(logs_with_versions(3), st.data())
def test_a_changed_field_is_found_at_its_version(log: Log, data: st.DataObject) -> None:
    changes = log.changes
    k = data.draw(st.integers(1, len(changes)))
    tampered = list(changes)
    tampered[k - 1] = _edit(changes[k - 1], data.draw(st.integers(0, 10)))
    report = chain_report(tampered)
    assert (report.first_bad_version, report.problem) == (k, ChainProblem.CHANGED)
    assert report.versions == k - 1


@given(logs_with_versions(3), st.data())
def test_a_changed_field_with_a_recomputed_hash_is_found_at_its_version(
    log: Log, data: st.DataObject
) -> None:
    changes = log.changes
    k = data.draw(st.integers(1, len(changes) - 1))  # the last one has nobody to contradict it
    tampered = list(changes)
    tampered[k - 1] = _rehash(_edit(changes[k - 1], data.draw(st.integers(0, 10))))
    report = chain_report(tampered)
    assert (report.first_bad_version, report.problem) == (k, ChainProblem.CHANGED)


@given(logs_with_versions(3), st.data())
def test_a_dropped_event_is_found_missing_at_its_version(log: Log, data: st.DataObject) -> None:
    changes = log.changes
    k = data.draw(st.integers(1, len(changes) - 1))
    report = chain_report([c for c in changes if c.version != k])
    assert (report.first_bad_version, report.problem) == (k, ChainProblem.MISSING)


@given(logs_with_versions(3), st.data())
def test_two_swapped_events_are_found_reordered_at_the_first_of_them(
    log: Log, data: st.DataObject
) -> None:
    changes = log.changes
    first = data.draw(st.integers(0, len(changes) - 2))
    second = data.draw(st.integers(first + 1, len(changes) - 1))
    swapped = list(changes)
    swapped[first], swapped[second] = swapped[second], swapped[first]
    report = chain_report(swapped)
    assert (report.first_bad_version, report.problem) == (first + 1, ChainProblem.REORDERED)


@given(logs_with_versions(3), st.data())
def test_a_forged_event_inserted_before_a_version_is_found_inserted_at_that_version(
    log: Log, data: st.DataObject
) -> None:
    changes = log.changes
    k = data.draw(st.integers(1, len(changes) - 1))
    linked = data.draw(st.booleans())
    # The forger claims version k; a careful one also links it to k - 1 and hashes it.
    forged = _edit(changes[k - 1], data.draw(st.integers(0, 10))).model_copy(
        update={"event_id": "forged", "command_id": "forged"}
    )
    if not linked:
        forged = forged.model_copy(update={"prev_hash": "e" * 64})
    forged = _rehash(forged)
    tampered = [*changes[: k - 1], forged, *changes[k - 1 :]]
    report = chain_report(tampered)
    assert (report.first_bad_version, report.problem) == (k, ChainProblem.INSERTED)
    assert "forged" in report.detail


@given(logs_with_versions(3), st.data())
def test_a_forged_event_that_renumbers_the_rest_is_found_inserted_at_its_version(
    log: Log, data: st.DataObject
) -> None:
    changes = log.changes
    k = data.draw(st.integers(1, len(changes) - 1))
    forged = _rehash(
        _edit(changes[k - 1], 0).model_copy(update={"event_id": "forged", "command_id": "f"})
    )
    renumbered = [c.model_copy(update={"version": c.version + 1}) for c in changes[k - 1 :]]
    report = chain_report([*changes[: k - 1], forged, *renumbered])
    assert (report.first_bad_version, report.problem) == (k, ChainProblem.INSERTED)


@given(logs_with_versions(2), st.data())
def test_an_event_appended_twice_is_found_inserted(log: Log, data: st.DataObject) -> None:
    changes = log.changes
    k = data.draw(st.integers(1, len(changes)))
    doubled = [*changes[:k], changes[k - 1], *changes[k:]]
    report = chain_report(doubled)
    assert (report.first_bad_version, report.problem) == (k, ChainProblem.INSERTED)
    assert "twice" in report.detail


def test_dropped_last_versions_are_revealed_by_a_later_rejection() -> None:
    log = decide_all([{"command": "enable"}, {"command": "freeze"}, {"command": "enable"}])
    rejection = log.events[-1]
    assert isinstance(rejection, CommandRejected)
    truncated = [log.events[0], rejection]  # version 2 removed from the end
    report = chain_report(truncated)
    assert (report.first_bad_version, report.problem) == (2, ChainProblem.MISSING)
    assert rejection.command_id in report.detail


def test_verify_chain_raises_a_chain_error_naming_the_version() -> None:
    log = decide_all([{"command": "enable"}, {"command": "freeze"}])
    tampered = [log.changes[0], _edit(log.changes[1], 0)]
    with pytest.raises(BrokenChainError, match="version 2 changed") as caught:
        verify_chain(tampered)
    assert isinstance(caught.value, ChainError)
    assert isinstance(caught.value, LedgerError)
    assert caught.value.report.first_bad_version == 2


def test_an_empty_log_verifies_with_the_genesis_hash() -> None:
    report = verify_chain([])
    assert report.ok
    assert (report.versions, report.head_hash) == (0, flags.GENESIS_HASH)


def test_a_log_of_several_flags_needs_the_flag_named() -> None:
    ours = decide_all([{"command": "enable"}])
    theirs = decide_all([{"command": "enable"}, {"command": "freeze"}], flag="other")
    mixed = [*ours.events, *theirs.events]
    with pytest.raises(ValueError, match="several flags"):
        chain_report(mixed)
    assert chain_report(mixed, flag="other").versions == 2
    assert chain_report(mixed, flag=FLAG).versions == 1


@given(logs_with_versions(2), st.data())
def test_the_report_of_a_broken_log_counts_the_sound_versions_before_the_first_bad_one(
    log: Log, data: st.DataObject
) -> None:
    changes = log.changes
    k = data.draw(st.integers(1, len(changes)))
    tampered = list(changes)
    tampered[k - 1] = _edit(changes[k - 1], 1)
    report = chain_report(tampered)
    assume(not report.ok)
    assert report.versions == k - 1
    assert report.head_hash == (changes[k - 2].hash if k > 1 else flags.GENESIS_HASH)
