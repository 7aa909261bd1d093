"""The flag client: folds the flag log, decides locally, samples shadows, honours local forcing."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from producer_fakes import ListSink

from ledger import flags
from ledger.errors import ConfigurationError
from ledger.events import CommandRejected, DecisionReason, FlagChanged
from ledger.settings import Settings
from producers.flag_client import FlagClient, forced_pools
from producers.openfeature_provider import MigrationFlagProvider

#: Ids as the contract takes them (ledger.events: no NUL).
IDS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
FLAG = "v2_migration"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def changes(*commands: dict[str, Any]) -> list[FlagChanged | CommandRejected]:
    """The events the flag log writer would append for these commands (answers included)."""
    state = flags.initial_state(FLAG)
    out: list[FlagChanged | CommandRejected] = []
    for index, fields in enumerate(commands):
        data = {"command_id": f"cmd-{index}", "flag": FLAG, "actor": "test", "reason": "test"}
        command = flags.decode_command(json.dumps({**data, **fields}).encode())
        event = flags.decide_command(
            state, command, at=T0 + timedelta(seconds=index), event_id=f"fe-{index}"
        )
        assert event is not None
        state = flags.apply(state, event)
        out.append(event)
    return out


@pytest.fixture
def client() -> FlagClient:
    return FlagClient(Settings(flag=FLAG), environ={}, clock=lambda: T0)


def test_before_any_flag_event_everything_goes_to_v1_and_is_shadowed(client: FlagClient) -> None:
    route = client.route("session-1", correlation_id="c-1")
    assert route.decision.pool == "v1"
    assert route.decision.reason == DecisionReason.DISABLED
    assert route.decision.flag_version == 0
    assert route.shadow


def test_decisions_follow_the_folded_log(client: FlagClient) -> None:
    client.ingest_all(
        changes(
            {"command": "enable"},
            {"command": "set_percentage", "percentage_bp": 10_000},
        )
    )
    decision = client.decide("session-1", correlation_id="c-1")
    assert (decision.pool, decision.reason, decision.flag_version) == ("v2", "SPLIT", 2)
    assert decision.at == T0


def test_a_session_override_from_the_log_wins_over_the_percentage(client: FlagClient) -> None:
    client.ingest_all(
        changes(
            {"command": "enable"},
            {"command": "set_percentage", "percentage_bp": 10_000},
            {"command": "set_session_override", "session_id": "vip", "pool": "v1"},
        )
    )
    decision = client.decide("vip")
    assert (decision.pool, decision.reason) == ("v1", DecisionReason.SESSION_OVERRIDE)


def test_a_flag_event_read_twice_is_folded_once(client: FlagClient) -> None:
    events = changes({"command": "enable"}, {"command": "set_percentage", "percentage_bp": 500})
    client.ingest_all(events + events)
    assert client.version == 2


def test_a_flag_event_that_breaks_the_chain_leaves_the_state_as_it_was(
    client: FlagClient,
) -> None:
    events = changes({"command": "enable"}, {"command": "set_percentage", "percentage_bp": 500})
    client.ingest(events[1])  # version 2 without version 1
    assert client.version == 0
    client.ingest(events[0])
    assert client.version == 1


def test_events_of_another_flag_are_ignored(client: FlagClient) -> None:
    other = changes({"command": "enable"})[0].model_copy(update={"flag": "other_flag"})
    client.ingest(other)
    assert client.version == 0


def test_the_client_decides_exactly_as_the_rollout_function_on_the_same_state(
    client: FlagClient,
) -> None:
    from ledger import rollout

    client.ingest_all(
        changes({"command": "enable"}, {"command": "set_percentage", "percentage_bp": 3_300})
    )
    for n in range(200):
        ours = client.decide(f"s-{n}", correlation_id=f"c-{n}")
        theirs = rollout.decide(
            client.state,
            rollout.DecisionContext(f"s-{n}", f"c-{n}"),
            at=T0,
            event_id=ours.event_id,
        )
        assert ours == theirs


def test_shadow_sampling_follows_the_sample_percentage_and_is_stable_per_operation(
    client: FlagClient,
) -> None:
    client.ingest_all(changes({"command": "set_shadow_sample", "sample_bp": 2_500}))
    first = [client.route(None, correlation_id=f"c-{n}").shadow for n in range(4000)]
    again = [client.route(None, correlation_id=f"c-{n}").shadow for n in range(4000)]
    assert first == again
    assert 0.22 < sum(first) / len(first) < 0.28


def test_no_shadow_at_all_when_shadow_mode_is_off(client: FlagClient) -> None:
    client.ingest_all(changes({"command": "set_shadow_mode", "enabled": False}))
    assert not any(client.route("s", correlation_id=f"c-{n}").shadow for n in range(100))


def test_wait_until_version_returns_once_the_version_is_folded(client: FlagClient) -> None:
    events = changes({"command": "enable"}, {"command": "disable"})
    assert not client.wait_until_version(2, timeout=0.05)
    feeder = threading.Timer(0.05, client.ingest_all, args=(events,))
    feeder.start()
    assert client.wait_until_version(2, timeout=5)
    feeder.join()


def test_staleness_grows_while_nothing_confirms_the_state(client: FlagClient) -> None:
    client.ingest_all(changes({"command": "enable"}))
    assert client.staleness() < 5
    client._last_current -= 100  # as if the last confirmation were 100 s old
    assert client.staleness() >= 100


# -- forcing a pool from the process environment ------------------------------------------------


def test_a_process_wide_forced_pool_overrides_the_log() -> None:
    client = FlagClient(Settings(flag=FLAG), environ={"MIGRATION_LEDGER_FORCE_POOL": "v2"})
    decision = client.decide("session-1")
    assert (decision.pool, decision.reason) == ("v2", DecisionReason.ENVIRONMENT_OVERRIDE)


def test_a_forced_pool_per_environment_applies_to_that_environment_only() -> None:
    client = FlagClient(
        Settings(flag=FLAG),
        environ={
            "MIGRATION_LEDGER_FORCE_POOL": "v1",
            "MIGRATION_LEDGER_FORCE_POOL_EU_WEST": "v2",
        },
    )
    assert client.decide("s", environment="eu-west").pool == "v2"
    assert client.decide("s", environment="us-east").pool == "v1"


def test_a_forced_pool_other_than_v1_or_v2_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="MIGRATION_LEDGER_FORCE_POOL_DEV='v3'"):
        forced_pools({"MIGRATION_LEDGER_FORCE_POOL_DEV": "v3"})


@settings(max_examples=50, deadline=None)
@given(session=st.text(IDS, max_size=20), percentage=st.integers(0, 10_000))
def test_the_same_inputs_always_give_the_same_decision(session: str, percentage: int) -> None:
    client = FlagClient(Settings(flag=FLAG), environ={}, clock=lambda: T0, new_id=lambda: "id")
    client.ingest_all(
        changes({"command": "enable"}, {"command": "set_percentage", "percentage_bp": percentage})
    )
    assert client.decide(session, correlation_id="c") == client.decide(session, correlation_id="c")


# -- OpenFeature ---------------------------------------------------------------------------


def test_openfeature_evaluates_the_pool_with_reason_variant_and_metadata(
    client: FlagClient,
) -> None:
    client.ingest_all(
        changes({"command": "enable"}, {"command": "set_percentage", "percentage_bp": 10_000})
    )
    sink = ListSink()
    api.set_provider(MigrationFlagProvider(client, publisher=sink))
    details = api.get_client().get_string_details(
        "migration-pool",
        "v1",
        EvaluationContext(targeting_key="session-7", attributes={"correlation_id": "c-7"}),
    )

    assert (details.value, details.variant, details.reason) == ("v2", "v2", "SPLIT")
    assert details.flag_metadata["flag_version"] == 2
    assert 0 <= int(details.flag_metadata["bucket"]) <= 9999
    assert [d.correlation_id for d in sink.decisions()] == ["c-7"]


def test_openfeature_reports_a_stale_state_and_unknown_flags(client: FlagClient) -> None:
    api.set_provider(MigrationFlagProvider(client, stale_after=1.0))
    client._last_current -= 10
    of = api.get_client()
    assert of.get_string_details("migration-pool", "v1").reason == "STALE"
    missing = of.get_string_details("colour", "blue")
    assert (missing.value, missing.error_code) == ("blue", ErrorCode.FLAG_NOT_FOUND)


def test_openfeature_says_whether_an_evaluation_is_shadowed(client: FlagClient) -> None:
    api.set_provider(MigrationFlagProvider(client))
    details = api.get_client().get_boolean_details("migration-shadow", False)
    assert details.value is True
    assert details.variant == "on"


def test_a_started_client_that_never_read_the_log_is_stale_and_says_so() -> None:
    # Nothing listens on port 1: the client never reads the log, so it stays on the defaults,
    # and a router must not take that for the log's state (found by the last-mile run).
    offline = FlagClient(
        Settings(flag=FLAG, bootstrap_servers="127.0.0.1:1"), environ={}, clock=lambda: T0
    ).start()
    try:
        assert not offline.wait_until_current(timeout=0.2)
        assert not offline.ever_current
        api.set_provider(MigrationFlagProvider(offline, stale_after=3600.0))
        assert api.get_client().get_string_details("migration-pool", "v1").reason == "STALE"
    finally:
        offline.close()


def test_a_client_fed_by_hand_is_as_current_as_what_it_was_given(client: FlagClient) -> None:
    assert client.ever_current
