"""Rollout decisions: precedence, sticky bucketing, its distribution, and its SQL twin."""

from __future__ import annotations

import bisect
import hashlib
import random
import subprocess
import sys
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import flags, rollout
from ledger.events import DecisionReason, RolloutDecided
from ledger.rollout import DecisionContext
from tests.unit.flag_factories import (
    ENVIRONMENTS,
    FLAG,
    SESSIONS,
    T0,
    changes_for,
    command_lists,
    decide_all,
)

#: Ids as the contract takes them (ledger.events: no NUL).
IDS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")

session_ids = st.one_of(st.sampled_from(SESSIONS), st.text(IDS, max_size=40))
contexts = st.builds(
    DecisionContext,
    session_id=st.one_of(st.none(), session_ids),
    correlation_id=st.text(IDS, min_size=1, max_size=40),
    environment=st.one_of(st.none(), st.sampled_from(ENVIRONMENTS), st.text(max_size=10)),
    breaker_open=st.booleans(),
)
states = command_lists.map(lambda commands: decide_all(commands).final)
#: One in-memory DuckDB for the hypothesis examples (a connection per example is slow).
SQL = duckdb.connect()


def state_at_percentage(bp: int, flag: str = FLAG) -> flags.FlagState:
    log = decide_all(
        [{"command": "enable"}, {"command": "set_percentage", "percentage_bp": bp}], flag=flag
    )
    return log.final


def decide(state: flags.FlagState, context: DecisionContext) -> RolloutDecided:
    return rollout.decide(state, context, at=T0, event_id="d-1")


# --- the bucket ------------------------------------------------------------------------------


@given(st.text(max_size=30), st.text(max_size=60))
def test_the_bucket_is_md5_of_length_prefixed_salt_and_key_first_15_hex_digits_modulo_10000(
    salt: str, key: str
) -> None:
    text = f"{len(salt.encode())}:{salt}:{key}".encode()
    digest = hashlib.md5(text).hexdigest()
    assert rollout.HASH_VERSION == 2
    assert rollout.bucket(salt, key) == int(digest[:15], 16) % 10_000
    assert 0 <= rollout.bucket(salt, key) <= 9999


@given(st.text(max_size=30), st.text(max_size=60))
def test_hash_version_1_is_md5_of_salt_colon_key_for_old_decisions(salt: str, key: str) -> None:
    digest = hashlib.md5((salt + ":" + key).encode("utf-8")).hexdigest()
    assert rollout.bucket(salt, key, 1) == int(digest[:15], 16) % 10_000


def test_hash_version_1_buckets_never_change() -> None:
    # Recorded decisions replay against this exact value: changing it needs a new hash_version.
    assert rollout.bucket("v2_migration", "session-42", 1) == (
        int(hashlib.md5(b"v2_migration:session-42").hexdigest()[:15], 16) % 10_000
    )
    assert rollout.bucket("v2_migration", "session-42", 1) == 7450


def test_hash_version_2_buckets_never_change() -> None:
    assert rollout.bucket("v2_migration", "session-42", 2) == (
        int(hashlib.md5(b"12:v2_migration:session-42").hexdigest()[:15], 16) % 10_000
    )
    assert rollout.bucket("v2_migration", "session-42", 2) == 823


def test_hash_version_2_tells_apart_what_version_1_ran_together() -> None:
    # Found in issue 12: under version 1 the salt/key split was ambiguous.
    assert rollout.bucket("a:b", "c", 1) == rollout.bucket("a", "b:c", 1)
    assert rollout.bucket("a:b", "c") != rollout.bucket("a", "b:c")


def test_an_unknown_hash_version_is_refused() -> None:
    with pytest.raises(ValueError, match="hash version 3"):
        rollout.bucket("f", "k", 3)


def test_buckets_are_the_same_in_another_process_with_another_hash_seed() -> None:
    keys = [f"session-{i}" for i in range(50)]
    here = [rollout.bucket(FLAG, key) for key in keys]
    probe = f"from ledger.rollout import bucket; print([bucket({FLAG!r}, k) for k in {keys!r}])"
    there = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={"PYTHONHASHSEED": "12345"},
    ).stdout
    assert there.strip() == str(here)


def _ids(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.getrandbits(96):024x}" for _ in range(count)]


def test_python_and_duckdb_sql_buckets_agree_on_100000_ids() -> None:
    odd = ["", "é", "日本語", "o'brien", "a:b", "🙂", " spaced ", "x" * 500]
    keys = _ids(100_000 - len(odd), seed=7) + odd
    salts = [FLAG, "other migration", "quote'salt"]
    con = duckdb.connect()
    con.execute("CREATE TABLE ids (k VARCHAR)")
    con.executemany("INSERT INTO ids VALUES (?)", [(k,) for k in odd])
    con.execute("INSERT INTO ids SELECT unnest($keys)", {"keys": keys[: len(keys) - len(odd)]})
    for salt in salts:
        expression = rollout.bucket_sql(rollout.sql_literal(salt), "k")
        rows = con.execute(f"SELECT k, {expression} AS b FROM ids").fetchall()
        assert len(rows) == 100_000
        disagreements = [(k, b) for k, b in rows if rollout.bucket(salt, k) != b]
        assert disagreements == []


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.text(max_size=40), min_size=1, max_size=50),
    st.text(max_size=20),
    st.sampled_from(rollout.HASH_VERSIONS),
)
def test_python_and_duckdb_sql_buckets_agree_on_any_text(
    keys: list[str], salt: str, version: int
) -> None:
    expression = rollout.bucket_sql("s", "k", version)
    per_row = rollout.bucket_sql("s", "k", "v")
    rows = (
        SQL.cursor()
        .execute(
            f"SELECT k, {expression}, {per_row} "
            "FROM (SELECT unnest($keys) AS k, $salt AS s, $version AS v)",
            {"keys": keys, "salt": salt, "version": version},
        )
        .fetchall()
    )
    expected = [rollout.bucket(salt, k, version) for k in keys]
    assert [(k, b) for k, b, _ in rows] == list(zip(keys, expected, strict=True))
    assert [b for _, _, b in rows] == expected


def test_sql_literal_doubles_quotes() -> None:
    literal = rollout.sql_literal("it's")
    assert duckdb.connect().execute(f"SELECT {literal}").fetchone() == ("it's",)


# --- the split ---------------------------------------------------------------------------------


@settings(max_examples=4, deadline=None, derandomize=True)
@given(st.integers(0, 2**32), st.lists(st.integers(0, 10_000), min_size=1, max_size=30))
def test_at_p_percent_about_p_percent_of_100000_random_sessions_go_to_v2(
    seed: int, percentages_bp: list[int]
) -> None:
    sessions = _ids(100_000, seed)
    buckets = sorted(rollout.bucket(FLAG, session) for session in sessions)
    for bp in percentages_bp:
        # A session goes to V2 iff its bucket is below the threshold (checked on decide below
        # and in the split test), so the share at bp is the share of buckets below bp.
        share = bisect.bisect_left(buckets, bp) / len(sessions)
        assert abs(100 * share - bp / 100) <= 0.5, (bp, share)
        state = state_at_percentage(bp)
        sample = sessions[:500]
        to_v2 = [rollout.route(state, DecisionContext(s, "c"))[0] == "v2" for s in sample]
        assert to_v2 == [rollout.bucket(FLAG, s) < bp for s in sample]


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.lists(session_ids, max_size=30))
def test_raising_the_percentage_never_moves_a_session_from_v2_back_to_v1(
    low: int, high: int, sessions: list[str]
) -> None:
    low, high = sorted((low, high))
    before, after = state_at_percentage(low), state_at_percentage(high)
    for session in sessions:
        context = DecisionContext(session, "c")
        if decide(before, context).pool == "v2":
            assert decide(after, context).pool == "v2"


@given(st.integers(0, 10_000), session_ids)
def test_the_split_sends_a_session_to_v2_exactly_when_its_bucket_is_below_the_threshold(
    bp: int, session: str
) -> None:
    decision = decide(state_at_percentage(bp), DecisionContext(session, "c"))
    assert decision.reason == DecisionReason.SPLIT
    assert decision.bucket == rollout.bucket(FLAG, session)
    assert decision.threshold_bp == bp
    assert (decision.pool == "v2") == (rollout.bucket(FLAG, session) < bp)


@given(st.integers(0, 10_000), st.text(IDS, min_size=1, max_size=30))
def test_an_anonymous_operation_is_bucketed_by_its_correlation_id(
    bp: int, correlation: str
) -> None:
    decision = decide(state_at_percentage(bp), DecisionContext(None, correlation))
    assert decision.bucket == rollout.bucket(FLAG, correlation)


def test_the_flag_name_salts_the_bucket_so_two_migrations_split_independently() -> None:
    sessions = _ids(2000, seed=3)
    first = state_at_percentage(5000, flag="migration_a")
    second = state_at_percentage(5000, flag="migration_b")
    same = sum(
        decide(first, DecisionContext(s, "c")).pool == decide(second, DecisionContext(s, "c")).pool
        for s in sessions
    )
    assert 0.4 < same / len(sessions) < 0.6  # independent halves agree half of the time


# --- precedence --------------------------------------------------------------------------------


@given(states, contexts)
def test_the_same_inputs_always_give_the_same_decision(
    state: flags.FlagState, context: DecisionContext
) -> None:
    assert decide(state, context) == decide(state, context)


@given(states, contexts)
def test_precedence_is_environment_then_session_then_disabled_then_split(
    state: flags.FlagState, context: DecisionContext
) -> None:
    closed = DecisionContext(context.session_id, context.correlation_id, context.environment)
    decision = decide(state, closed)
    environment = state.environment_overrides.get(context.environment or "")
    session = state.session_overrides.get(context.session_id or "")
    if context.environment is not None and environment is not None:
        assert (decision.reason, decision.pool) == (
            DecisionReason.ENVIRONMENT_OVERRIDE,
            environment,
        )
    elif context.session_id is not None and session is not None:
        assert (decision.reason, decision.pool) == (DecisionReason.SESSION_OVERRIDE, session)
    elif not state.v2_pool_enabled:
        assert (decision.reason, decision.pool) == (DecisionReason.DISABLED, "v1")
    else:
        assert decision.reason == DecisionReason.SPLIT


@given(states, contexts)
def test_an_open_breaker_turns_v2_into_v1_with_circuit_open_and_keeps_the_bucket(
    state: flags.FlagState, context: DecisionContext
) -> None:
    closed = decide(
        state, DecisionContext(context.session_id, context.correlation_id, context.environment)
    )
    opened = decide(
        state,
        DecisionContext(context.session_id, context.correlation_id, context.environment, True),
    )
    assert opened.pool == "v1"
    assert opened.bucket == closed.bucket
    if closed.pool == "v2":
        assert opened.reason == DecisionReason.CIRCUIT_OPEN
    else:
        assert opened == closed


@given(states, contexts)
def test_every_decision_records_flag_version_bucket_threshold_and_hash_version(
    state: flags.FlagState, context: DecisionContext
) -> None:
    decision = decide(state, context)
    assert decision.flag == state.flag
    assert decision.flag_version == state.version
    assert decision.bucket == rollout.bucket(state.flag, context.sticky_key)
    assert decision.threshold_bp == state.v2_rollout_bp
    assert decision.hash_version == rollout.HASH_VERSION
    assert (decision.session_id, decision.correlation_id, decision.environment) == (
        context.session_id,
        context.correlation_id,
        context.environment,
    )
    assert decision.at == T0


@given(command_lists, contexts)
def test_after_a_rollback_nothing_goes_to_v2(
    commands: list[dict[str, Any]], context: DecisionContext
) -> None:
    state = decide_all([*commands, {"command": "rollback"}]).final
    assert decide(state, context).pool == "v1"


def test_an_environment_override_wins_over_a_session_override_and_a_disabled_flag() -> None:
    changes = changes_for(
        {"command": "set_session_override", "session_id": "alice", "pool": "v1"},
        {"command": "set_environment_override", "environment": "canary", "pool": "v2"},
    )
    state = flags.fold(changes, FLAG)
    in_canary = decide(state, DecisionContext("alice", "c", "canary"))
    elsewhere = decide(state, DecisionContext("alice", "c", "prod"))
    stranger = decide(state, DecisionContext("bob", "c", "prod"))
    assert (in_canary.pool, in_canary.reason) == ("v2", DecisionReason.ENVIRONMENT_OVERRIDE)
    assert (elsewhere.pool, elsewhere.reason) == ("v1", DecisionReason.SESSION_OVERRIDE)
    assert (stranger.pool, stranger.reason) == ("v1", DecisionReason.DISABLED)


@pytest.mark.parametrize("bp", [0, 10_000])
def test_zero_sends_nobody_and_one_hundred_percent_sends_everybody_to_v2(bp: int) -> None:
    state = state_at_percentage(bp)
    pools = {decide(state, DecisionContext(s, "c")).pool for s in _ids(2000, seed=bp)}
    assert pools == ({"v2"} if bp else {"v1"})
