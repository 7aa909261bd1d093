"""Replay of one recorded decision found in the ledger, by session and time or correlation id."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from report_factories import Ledger, rewrite

from reports.explain import DecisionNotFoundError, explain, find_decision, render_explanation


def test_every_decision_found_by_correlation_id_replays_to_a_match(con: Any, built: Ledger) -> None:
    for decision in built.decisions[::25]:
        explained = explain(con, correlation_id=decision.correlation_id)
        assert explained.decision == decision
        assert explained.matches
        assert explained.explanation.flag_version == decision.flag_version
        assert explained.explanation.bucket == decision.bucket
        assert explained.chain_ok


def test_the_session_and_a_time_pick_the_decision_in_effect_then(con: Any, built: Ledger) -> None:
    session = built.decisions[40].session_id
    assert session is not None
    mine = sorted((d for d in built.decisions if d.session_id == session), key=lambda d: d.at)
    middle = mine[len(mine) // 2]
    assert find_decision(con, session_id=session, at=middle.at) == middle
    just_before = middle.at - timedelta(microseconds=1)
    earlier = [d for d in mine if d.at <= just_before]
    assert find_decision(con, session_id=session, at=just_before) == earlier[-1]
    assert find_decision(con, session_id=session) == mine[-1]


def test_the_explanation_names_the_change_that_made_the_version(con: Any, built: Ledger) -> None:
    decision = next(d for d in built.decisions if d.flag_version >= 2)
    explained = explain(con, correlation_id=decision.correlation_id)
    change = built.flag_changes[decision.flag_version - 1]
    assert explained.change == change
    text = render_explanation(explained)
    assert f"version {change.version} was made by {change.command} from {change.actor}" in text
    assert "MATCHES" in text
    assert f"{explained.explanation.bucket}" in text


def test_a_decision_changed_in_storage_replays_to_a_difference(
    built: Ledger, ledger_path: Path, tmp_path: Path
) -> None:
    import shutil

    from ledger.store import open_reader

    copy = Path(shutil.copytree(ledger_path, tmp_path / "ledger"))
    victim = built.decisions[7]
    flipped = "v1" if victim.pool == "v2" else "v2"
    rewrite(
        copy,
        "decisions",
        f"SELECT * REPLACE (CASE WHEN event_id = '{victim.event_id}' THEN '{flipped}' "
        "ELSE pool END AS pool) FROM t",
    )
    con = open_reader(copy)
    try:
        explained = explain(con, correlation_id=victim.correlation_id)
    finally:
        con.close()
    assert not explained.matches
    assert any(d.startswith("pool") for d in explained.explanation.differences)
    assert "DIFFERS" in render_explanation(explained)


def test_an_unknown_session_or_correlation_id_is_named_in_the_error(con: Any) -> None:
    with pytest.raises(DecisionNotFoundError, match="session 'nobody'"):
        explain(con, session_id="nobody")
    with pytest.raises(DecisionNotFoundError, match="correlation id 'c-none'"):
        explain(con, correlation_id="c-none")


def test_a_time_before_the_sessions_first_decision_finds_nothing(con: Any, built: Ledger) -> None:
    first = min(built.decisions, key=lambda d: d.at)
    assert first.session_id is not None
    with pytest.raises(DecisionNotFoundError, match="at or before"):
        find_decision(con, session_id=first.session_id, at=first.at - timedelta(seconds=1))


def test_the_json_form_carries_recorded_and_recomputed_side_by_side(
    con: Any, built: Ledger
) -> None:
    import json

    decision = built.decisions[3]
    document = json.loads(
        render_explanation(explain(con, correlation_id=decision.correlation_id), "json")
    )
    assert document["matches"] is True
    assert document["recorded"]["pool"] == document["recomputed"]["pool"] == decision.pool
    assert document["bucket"] == decision.bucket
    assert document["threshold_bp"] == decision.threshold_bp
