"""The go-live verdicts of ``ledger.checks``: every line's status, figure and advice."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.checks import (
    BrokerObservation,
    CheckReport,
    Finding,
    FlagLogObservation,
    Status,
    StoreObservation,
    Thresholds,
    TopicDifference,
    TopicsObservation,
    WorkerObservation,
    describe_flag,
    judge_broker,
    judge_flag_log,
    judge_store,
    judge_topics,
    judge_worker,
    skipped,
)
from ledger.events import CommandRejected, FlagChanged
from ledger.flags import (
    AnyCommand,
    Enable,
    Freeze,
    Rollback,
    SetEnvironmentOverride,
    SetPercentage,
    SetSessionOverride,
    SetShadowSample,
    Unfreeze,
    apply,
    decide_command,
    initial_state,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
FLAG = "v2_migration"
TOPICS = ("p.pool.operations", "p.ledger.flag-events", "p.ledger.decisions")


# --- report ------------------------------------------------------------------------------


@given(st.lists(st.sampled_from(list(Status)), max_size=8))
def test_exit_code_is_non_zero_exactly_when_a_line_fails(statuses: list[Status]) -> None:
    result = CheckReport(tuple(Finding(f"c{i}", s, "figure") for i, s in enumerate(statuses)))
    assert (result.exit_code != 0) == (Status.FAIL in statuses)
    assert sum(result.counts().values()) == len(statuses)


def test_report_json_lists_every_line_in_order_with_its_advice() -> None:
    result = CheckReport(
        (Finding("broker", Status.PASS, "up"), Finding("topics", Status.FAIL, "gone", "ensure"))
    )
    as_json = result.to_json()
    assert as_json["ok"] is False
    assert as_json["checks"] == [
        {"check": "broker", "status": "PASS", "figure": "up", "action": ""},
        {"check": "topics", "status": "FAIL", "figure": "gone", "action": "ensure"},
    ]


def test_a_skipped_check_says_which_prerequisite_stopped_it() -> None:
    finding = skipped("flag log", "broker unreachable")
    assert finding.status is Status.SKIP
    assert "broker unreachable" in finding.figure


# --- broker ------------------------------------------------------------------------------


def test_unreachable_broker_fails_with_the_address_the_timeout_and_how_to_start_one() -> None:
    finding = judge_broker(
        BrokerObservation("127.0.0.1:1", error="Connection refused"), timeout_s=3.0
    )
    assert finding.status is Status.FAIL
    assert "127.0.0.1:1" in finding.figure
    assert "3 s" in finding.figure
    assert "Connection refused" in finding.figure
    assert "kafka up" in finding.action


def test_answering_broker_passes_with_its_release_and_api_level() -> None:
    seen = BrokerObservation("h:9092", brokers=1, api_version=(4, 3), release="4.4.0")
    finding = judge_broker(seen, timeout_s=3.0)
    assert finding.status is Status.PASS
    assert "Kafka 4.4.0" in finding.figure
    assert "API level 4.3" in finding.figure


def test_broker_of_unknown_release_shows_the_api_level_alone() -> None:
    finding = judge_broker(
        BrokerObservation("h:9092", brokers=1, api_version=(4, 1)), timeout_s=3.0
    )
    assert finding.status is Status.PASS
    assert "API level 4.1" in finding.figure


def test_broker_older_than_kafka_4_is_a_warning_not_a_failure() -> None:
    finding = judge_broker(
        BrokerObservation("h:9092", brokers=1, api_version=(3, 7)), timeout_s=3.0
    )
    assert finding.status is Status.WARN
    assert "4.x" in finding.action


def test_broker_listing_no_live_broker_fails() -> None:
    finding = judge_broker(BrokerObservation("h:9092", brokers=0), timeout_s=3.0)
    assert finding.status is Status.FAIL


def test_fenced_broker_is_a_warning() -> None:
    seen = BrokerObservation("h:9092", brokers=2, api_version=(4, 3), fenced=1)
    finding = judge_broker(seen, timeout_s=3.0)
    assert finding.status is Status.WARN
    assert "1 fenced" in finding.figure


# --- topics ------------------------------------------------------------------------------


def test_missing_topics_fail_naming_each_and_pointing_at_ensure() -> None:
    seen = TopicsObservation(expected=TOPICS, missing=TOPICS[1:])
    finding = judge_topics(seen)
    assert finding.status is Status.FAIL
    assert "2 of 3 missing" in finding.figure
    for name in TOPICS[1:]:
        assert name in finding.figure
    assert TOPICS[0] not in finding.figure
    assert "topics ensure" in finding.action


def test_all_topics_as_specified_pass() -> None:
    finding = judge_topics(TopicsObservation(expected=TOPICS))
    assert finding.status is Status.PASS
    assert "all 3" in finding.figure


def test_partition_mismatch_fails_because_the_worker_refuses_to_start() -> None:
    difference = TopicDifference(TOPICS[0], "partitions", "4", "1")
    finding = judge_topics(TopicsObservation(expected=TOPICS, differences=(difference,)))
    assert finding.status is Status.FAIL
    assert "partitions is 1, expected 4" in finding.figure


def test_finite_retention_on_the_flag_log_fails_because_the_flag_would_expire() -> None:
    difference = TopicDifference(TOPICS[1], "retention.ms", "-1", "604800000")
    seen = TopicsObservation(expected=TOPICS, differences=(difference,), flag_log=TOPICS[1])
    assert judge_topics(seen).status is Status.FAIL


def test_other_retention_mismatches_only_warn() -> None:
    difference = TopicDifference(TOPICS[2], "retention.ms", "604800000", "86400000")
    seen = TopicsObservation(expected=TOPICS, differences=(difference,), flag_log=TOPICS[1])
    finding = judge_topics(seen)
    assert finding.status is Status.WARN
    assert TOPICS[2] in finding.figure


# --- flag log ----------------------------------------------------------------------------


def decided(*commands: AnyCommand) -> tuple[FlagChanged | CommandRejected, ...]:
    """The real flag log those commands produce, as the flag log writer would append it."""
    state = initial_state(FLAG)
    log: list[FlagChanged | CommandRejected] = []
    for i, command in enumerate(commands):
        event = decide_command(state, command, at=NOW + timedelta(seconds=i))
        assert event is not None
        log.append(event)
        state = apply(state, event)
    return tuple(log)


def command(kind: type[AnyCommand], n: int, actor: str = "alice", **values: object) -> AnyCommand:
    return kind.model_validate(
        {"command_id": f"c{n}", "flag": FLAG, "actor": actor, "reason": "ramp", **values}
    )


def ramp(*percentages: int) -> tuple[FlagChanged | CommandRejected, ...]:
    return decided(
        command(Enable, 0),
        *(command(SetPercentage, i + 1, percentage_bp=bp) for i, bp in enumerate(percentages)),
    )


def flag_log(
    events: Sequence[FlagChanged | CommandRejected],
    *,
    undecodable: int = 0,
    other_flags: int = 0,
    error: str | None = None,
) -> FlagLogObservation:
    return FlagLogObservation(
        FLAG,
        "p.ledger.flag-events",
        events=tuple(events),
        undecodable=undecodable,
        other_flags=other_flags,
        error=error,
    )


def test_verified_chain_passes_and_shows_the_current_state() -> None:
    events = decided(
        command(Enable, 0),
        command(SetPercentage, 1, percentage_bp=500),
        command(SetPercentage, 2, percentage_bp=5000, actor="bob"),
    )
    finding = judge_flag_log(flag_log(events))
    assert finding.status is Status.PASS
    assert "3 change(s), hash chain verified" in finding.figure
    assert "v3, V2 on, rollout 50 %" in finding.figure
    assert "last: set_percentage by bob" in finding.figure


def test_empty_flag_log_warns_with_the_initial_state_of_the_flag() -> None:
    finding = judge_flag_log(flag_log(()))
    assert finding.status is Status.WARN
    assert "initial state, V2 off, rollout 0 %, shadow on (100 %)" in finding.figure
    assert f"{FLAG!r}" in finding.figure


def test_flag_log_holding_only_other_flags_says_so_beside_the_warning() -> None:
    finding = judge_flag_log(flag_log((), other_flags=3))
    assert finding.status is Status.WARN
    assert "3 event(s) of other flags" in finding.figure
    assert "MIGRATION_LEDGER_FLAG" in finding.action


@settings(max_examples=30)
@given(st.integers(min_value=1, max_value=6), st.data())
def test_a_tampered_reason_fails_naming_its_version(length: int, data: st.DataObject) -> None:
    events = list(ramp(*range(100, 100 * length + 1, 100)))
    victim = data.draw(st.integers(min_value=0, max_value=len(events) - 1))
    changed = events[victim]
    assert isinstance(changed, FlagChanged)
    events[victim] = changed.model_copy(update={"reason": "nothing to see here"})
    finding = judge_flag_log(flag_log(events))
    assert finding.status is Status.FAIL
    assert "hash chain broken" in finding.figure
    assert f"version {changed.version}" in finding.figure
    assert "audit.md" in finding.action


@settings(max_examples=30)
@given(st.integers(min_value=2, max_value=6), st.data())
def test_any_missing_version_fails(length: int, data: st.DataObject) -> None:
    events = list(ramp(*range(100, 100 * length + 1, 100)))
    gone = data.draw(st.integers(min_value=0, max_value=len(events) - 2))
    del events[gone]
    finding = judge_flag_log(flag_log(events))
    assert finding.status is Status.FAIL
    assert f"version {gone + 1}" in finding.figure


def test_frozen_flag_warns_that_ramp_commands_will_be_refused() -> None:
    events = decided(command(Enable, 0), command(Freeze, 1))
    finding = judge_flag_log(flag_log(events))
    assert finding.status is Status.WARN
    assert "FROZEN" in finding.figure
    assert "unfreeze" in finding.action


def test_rejected_commands_are_counted_beside_the_state() -> None:
    events = decided(
        command(Enable, 0),
        command(Freeze, 1),
        command(SetPercentage, 2, percentage_bp=1000),  # refused: frozen
        command(Unfreeze, 3),
    )
    assert isinstance(events[2], CommandRejected)
    finding = judge_flag_log(flag_log(events))
    assert finding.status is Status.PASS
    assert "1 command(s) rejected" in finding.figure
    assert "3 change(s)" in finding.figure


def test_records_that_are_not_events_fail_the_flag_log() -> None:
    finding = judge_flag_log(flag_log(ramp(100), undecodable=2))
    assert finding.status is Status.FAIL
    assert "2 record(s)" in finding.figure


def test_unreadable_flag_log_fails() -> None:
    finding = judge_flag_log(flag_log((), error="timed out"))
    assert finding.status is Status.FAIL
    assert "timed out" in finding.figure


def test_flag_description_names_overrides_and_shadow_sample_after_a_rollback() -> None:
    events = decided(
        command(Enable, 0),
        command(SetShadowSample, 1, sample_bp=2550),
        command(SetSessionOverride, 2, session_id="s1", pool="v1"),
        command(SetEnvironmentOverride, 3, environment="staging", pool="v1"),
        command(Rollback, 4),
    )
    last = events[-1]
    assert isinstance(last, FlagChanged)
    text = describe_flag(last)
    assert text.startswith("v5, V2 off, rollout 0 %, shadow on (25.5 %)")
    assert "2 override(s)" in text
    assert "last: rollback by alice" in text


# --- worker ------------------------------------------------------------------------------

THRESHOLDS = Thresholds(worker_lag=100, sink_age_s=60, sink_lag=100)


def test_silent_worker_fails_with_the_url_and_the_reason() -> None:
    seen = WorkerObservation("http://127.0.0.1:6066", error="Connection refused")
    finding = judge_worker(seen, THRESHOLDS)
    assert finding.status is Status.FAIL
    assert "http://127.0.0.1:6066" in finding.figure
    assert "Connection refused" in finding.figure


def test_worker_answering_an_http_error_fails() -> None:
    finding = judge_worker(WorkerObservation("http://w", status_code=503), THRESHOLDS)
    assert finding.status is Status.FAIL
    assert "HTTP 503" in finding.figure


def test_live_worker_with_small_lag_passes_and_shows_its_figures() -> None:
    metrics = {
        "ledger_consumer_lag": 12.0,
        "ledger_pending_pairs": 3.0,
        "ledger_dead_letters_total": 5.0,
    }
    seen = WorkerObservation("http://w", status_code=200, app="ml", metrics=metrics)
    finding = judge_worker(seen, THRESHOLDS)
    assert finding.status is Status.PASS
    assert finding.figure == "http://w alive (ml), lag 12, 3 pending pair(s), 5 dead letter(s)"


def test_worker_that_rolled_back_by_itself_warns_and_points_at_the_investigation() -> None:
    metrics = {"ledger_consumer_lag": 0.0, "ledger_health_rollbacks_total": 2.0}
    finding = judge_worker(
        WorkerObservation("http://w", status_code=200, metrics=metrics), THRESHOLDS
    )
    assert finding.status is Status.WARN
    assert "2 automatic rollback(s)" in finding.figure
    assert "automatic-rollback-investigation.md" in finding.action


@given(st.integers(min_value=0, max_value=1000))
def test_worker_lag_warns_exactly_above_the_threshold(lag: int) -> None:
    seen = WorkerObservation(
        "http://w", status_code=200, metrics={"ledger_consumer_lag": float(lag)}
    )
    status = judge_worker(seen, THRESHOLDS).status
    assert status is (Status.WARN if lag > THRESHOLDS.worker_lag else Status.PASS)


def test_live_worker_without_a_lag_figure_warns() -> None:
    finding = judge_worker(WorkerObservation("http://w", status_code=200), THRESHOLDS)
    assert finding.status is Status.WARN
    assert "no lag figure" in finding.figure


# --- sink --------------------------------------------------------------------------------


def test_absent_ledger_warns_and_says_to_start_the_sink() -> None:
    finding = judge_store(StoreObservation("/data/ledger", exists=False), THRESHOLDS, now=NOW)
    assert finding.status is Status.WARN
    assert "/data/ledger" in finding.figure
    assert "migration-ledger sink" in finding.action


def test_unreadable_ledger_fails() -> None:
    seen = StoreObservation("/data/ledger", exists=True, error="Permission denied")
    assert judge_store(seen, THRESHOLDS, now=NOW).status is Status.FAIL


def test_ledger_without_a_store_reader_warns_it_cannot_say_more() -> None:
    seen = StoreObservation("/data/ledger", exists=True, reader_available=False)
    finding = judge_store(seen, THRESHOLDS, now=NOW)
    assert finding.status is Status.WARN
    assert "no store reader" in finding.figure


def test_recent_commit_with_small_lag_passes() -> None:
    seen = StoreObservation(
        "/l", exists=True, last_commit_at=NOW - timedelta(seconds=5), lag=7, rows=1000
    )
    finding = judge_store(seen, THRESHOLDS, now=NOW)
    assert finding.status is Status.PASS
    assert finding.figure == "/l, 1000 row(s), last commit 5 s ago, lag 7"


@given(st.integers(min_value=0, max_value=600))
def test_sink_commit_age_warns_exactly_beyond_the_threshold(age: int) -> None:
    seen = StoreObservation("/l", exists=True, last_commit_at=NOW - timedelta(seconds=age))
    status = judge_store(seen, THRESHOLDS, now=NOW).status
    assert status is (Status.WARN if age > THRESHOLDS.sink_age_s else Status.PASS)


def test_sink_lag_above_the_threshold_warns() -> None:
    seen = StoreObservation("/l", exists=True, last_commit_at=NOW, lag=101)
    finding = judge_store(seen, THRESHOLDS, now=NOW)
    assert finding.status is Status.WARN
    assert "falling behind" in finding.action


def test_ledger_that_never_committed_warns() -> None:
    seen = StoreObservation("/l", exists=True)
    assert judge_store(seen, THRESHOLDS, now=NOW).status is Status.WARN


@pytest.mark.parametrize(("seconds", "text"), [(5, "5 s"), (600, "10 min"), (3 * 3600, "3.0 h")])
def test_commit_age_reads_in_sensible_units(seconds: int, text: str) -> None:
    seen = StoreObservation("/l", exists=True, last_commit_at=NOW - timedelta(seconds=seconds))
    lenient = Thresholds(sink_age_s=10 * 3600)
    assert f"last commit {text} ago" in judge_store(seen, lenient, now=NOW).figure
