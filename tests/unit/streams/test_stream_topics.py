"""The topic table and how `topics ensure` judges an existing topic (no broker needed)."""

from __future__ import annotations

from ledger.kafka.admin import _compare
from ledger.kafka.topics import INTERNAL_TOPICS, TOPIC_SPECS, topic_name
from ledger.settings import TOPICS, Settings


def spec(logical: str):  # type: ignore[no-untyped-def]
    return next(s for s in TOPIC_SPECS if s.logical == logical)


def test_every_public_and_internal_topic_has_exactly_one_spec() -> None:
    logical = [s.logical for s in TOPIC_SPECS]
    assert sorted(logical) == sorted([*TOPICS, *INTERNAL_TOPICS])


def test_flag_event_log_is_one_partition_never_compacted_never_expired() -> None:
    config = spec("flag_events").config()
    assert config["cleanup.policy"] == "delete"
    assert config["retention.ms"] == "-1"
    assert config["retention.bytes"] == "-1"
    assert spec("flag_events").partitions_for(Settings(partitions=12)) == 1
    assert spec("flag_commands").partitions_for(Settings(partitions=12)) == 1


def test_pairing_input_and_ticks_follow_the_partitions_setting() -> None:
    settings = Settings(partitions=6)
    for logical in ("operations", "pairing_ticks", "comparisons"):
        assert spec(logical).partitions_for(settings) == 6


def test_names_carry_the_prefix_public_or_internal() -> None:
    settings = Settings(topic_prefix="x.")
    assert topic_name(settings, "operations") == "x.pool.operations"
    assert topic_name(settings, "pairing_ticks") == "x.ledger.pairing-ticks"


def test_existing_topic_with_other_partitions_or_retention_is_a_mismatch() -> None:
    settings = Settings(partitions=4)
    flag_events = spec("flag_events")
    described = {"partitions": [{}, {}]}
    config = {"cleanup.policy": "compact", "retention.ms": "604800000", "retention.bytes": "-1"}
    found = {
        (m.setting, m.expected, m.actual)
        for m in _compare("t", flag_events, settings, described, config)
    }
    assert found == {
        ("partitions", "1", "2"),
        ("cleanup.policy", "delete", "compact"),
        ("retention.ms", "-1", "604800000"),
    }


def test_matching_topic_has_no_mismatch() -> None:
    settings = Settings(partitions=4)
    operations = spec("operations")
    described = {"partitions": [{}] * 4}
    assert _compare("t", operations, settings, described, operations.config()) == []
