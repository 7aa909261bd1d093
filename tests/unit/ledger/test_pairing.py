"""The pairing table's slot logic (ledger.pairing): pure, so hypothesis drives it hard."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.comparison import comparison_id_for
from ledger.events import RUNNER_SOURCE, SHADOW_SKIPPED
from ledger.pairing import (
    Decided,
    Outcome,
    Pending,
    Position,
    bare,
    counted,
    decode_slot,
    encode_slot,
    expire,
    receive,
)
from tests.unit.streams.stream_factories import half

AT = datetime(2025, 3, 1, 10, 0, 5, tzinfo=UTC)
TIMEOUT = 30.0
KEEP = 600.0


def pos(offset: int, topic: str = "ops") -> Position:
    return Position(topic=topic, partition=0, offset=offset)


def arrive(slot: Any, h: Any, classifier: Any, offset: int = 0, arrived: float = 100.0) -> Any:
    return receive(
        slot,
        h,
        partition=0,
        position=pos(offset),
        arrived=arrived,
        at=AT,
        timeout=TIMEOUT,
        keep_for=KEEP,
        classifier=classifier,
    )


def tick(slot: Any, now: float, classifier: Any, offset: int = 99) -> Any:
    return expire(slot, now=now, position=pos(offset), at=AT, keep_for=KEEP, classifier=classifier)


def test_first_half_waits_pending_until_its_due_time(classifier: Any) -> None:
    step = arrive(None, half("c1", "v1"), classifier, arrived=100.0)
    assert step.outcome is Outcome.STORED
    assert isinstance(step.slot, Pending)
    assert step.slot.due == 100.0 + TIMEOUT
    assert step.emit == ()
    assert tick(step.slot, 100.0 + TIMEOUT - 0.001, classifier).outcome is Outcome.UNCHANGED


def test_second_half_is_compared_once_whichever_pool_came_first(classifier: Any) -> None:
    for first, second in (("v1", "v2"), ("v2", "v1")):
        stored = arrive(None, half("c1", first), classifier).slot
        step = arrive(stored, half("c1", second), classifier, offset=1)
        assert step.outcome is Outcome.PAIRED
        (comparison,) = step.emit
        assert comparison.category == "match"
        assert comparison.comparison_id == comparison_id_for("c1")
        assert comparison.v1_event_id == "c1-v1"
        assert comparison.v2_event_id == "c1-v2"
        assert isinstance(step.slot, Decided)
        assert step.slot.emissions[0].position == pos(1)


SKIPPED = {
    "type": SHADOW_SKIPPED,
    "message": "shadow not run: circuit_open",
    "reason": "circuit_open",
    "source": RUNNER_SOURCE,
}


def test_a_skipped_shadow_makes_its_pair_shadow_missing_at_once(classifier: Any) -> None:
    """The runner recorded that it did not run V2: no comparison, no wait for the timeout."""
    for first, second in (("v1", "v2"), ("v2", "v1")):
        halves = {"v1": half("c1", "v1"), "v2": half("c1", "v2", error=SKIPPED)}
        stored = arrive(None, halves[first], classifier).slot
        step = arrive(stored, halves[second], classifier, offset=1)
        assert step.outcome is Outcome.PAIRED
        (comparison,) = step.emit
        assert comparison.category == "shadow_missing"
        assert comparison.v1_event_id == "c1-v1"


def test_duplicate_of_a_pending_or_decided_half_is_ignored(classifier: Any) -> None:
    stored = arrive(None, half("c1", "v1"), classifier).slot
    assert arrive(stored, half("c1", "v1"), classifier).outcome is Outcome.DUPLICATE
    decided = arrive(stored, half("c1", "v2"), classifier).slot
    for pool in ("v1", "v2"):
        step = arrive(decided, half("c1", pool), classifier)
        assert step.outcome is Outcome.DUPLICATE
        assert step.emit == ()
        assert not step.writes


def test_a_second_execution_of_the_same_pool_is_a_conflict_with_a_reason(classifier: Any) -> None:
    stored = arrive(None, half("c1", "v1"), classifier).slot
    step = arrive(stored, half("c1", "v1", event_id="other"), classifier)
    assert step.outcome is Outcome.CONFLICT
    assert "already has a v1 execution" in step.reason
    assert step.emit == ()


def test_timeout_emits_shadow_missing_and_a_late_shadow_is_marked_not_compared(
    classifier: Any,
) -> None:
    stored = arrive(None, half("c1", "v1"), classifier, arrived=100.0).slot
    timed_out = tick(stored, 100.0 + TIMEOUT, classifier)
    assert timed_out.outcome is Outcome.EXPIRED
    (missing,) = timed_out.emit
    assert missing.category == "shadow_missing"
    assert not missing.late

    late = arrive(timed_out.slot, half("c1", "v2", result={"value": 2}), classifier, offset=5)
    assert late.outcome is Outcome.LATE
    (marker,) = late.emit
    assert marker.late
    assert marker.comparison_id == missing.comparison_id
    assert marker.category == "shadow_missing"  # recorded as late, not compared (no mismatch)
    assert marker.event_id != missing.event_id

    again = arrive(late.slot, half("c1", "v2", result={"value": 2}), classifier, offset=6)
    assert again.outcome is Outcome.DUPLICATE


def test_missing_primary_is_primary_missing(classifier: Any) -> None:
    stored = arrive(None, half("c1", "v2"), classifier, arrived=0.0).slot
    (missing,) = tick(stored, TIMEOUT, classifier).emit
    assert missing.category == "primary_missing"


def test_decided_slot_is_forgotten_after_keep_for(classifier: Any) -> None:
    stored = arrive(None, half("c1", "v1"), classifier, arrived=100.0).slot
    decided = arrive(stored, half("c1", "v2"), classifier, arrived=101.0).slot
    assert isinstance(decided, Decided)
    assert tick(decided, 101.0 + KEEP - 1, classifier).outcome is Outcome.UNCHANGED
    forgotten = tick(decided, 101.0 + KEEP, classifier)
    assert forgotten.outcome is Outcome.FORGOTTEN
    assert forgotten.slot is None


def test_slots_survive_the_changelog_round_trip(classifier: Any) -> None:
    stored = arrive(None, half("c1", "v1"), classifier).slot
    decided = arrive(stored, half("c1", "v2", result={"value": [1, 2]}), classifier).slot
    assert decode_slot(encode_slot(stored)) == stored  # the waiting half whole: to compare
    assert isinstance(decided, Decided)
    back = decode_slot(encode_slot(decided))
    # Everything but the results of its executions, which no one reads again.
    assert back == decided.model_copy(update={"executions": tuple(map(bare, decided.executions))})
    assert [e.result for e in decided.executions] == [{"value": 1}, {"value": [1, 2]}]


@st.composite
def arrivals(draw: st.DrawFn) -> list[tuple[str, str, str]]:
    """(correlation id, pool, event id) in any order, with duplicates, some halves missing."""
    items: list[tuple[str, str, str]] = []
    for n in range(draw(st.integers(1, 6))):
        cid = f"c{n}"
        pools = draw(st.sampled_from([("v1", "v2"), ("v1",), ("v2",)]))
        for pool in pools:
            items.extend([(cid, pool, f"{cid}-{pool}")] * draw(st.integers(1, 3)))
    return draw(st.permutations(items))


@settings(max_examples=60, deadline=None)
@given(arrivals())
def test_any_arrival_order_gives_one_comparison_per_correlation_id(
    items: list[tuple[str, str, str]],
) -> None:
    from streams.pairing import RuleClassifier

    classifier = RuleClassifier()
    slots: dict[str, Any] = {}
    emitted: dict[str, list[str]] = {}
    for offset, (cid, pool, event_id) in enumerate(items):
        step = arrive(slots.get(cid), half(cid, pool, event_id=event_id), classifier, offset)
        slots[cid] = step.slot
        for event in step.emit:
            emitted.setdefault(cid, []).append(event.category)
    for cid, slot in list(slots.items()):
        step = tick(slot, 1e12, classifier)
        for event in step.emit:
            emitted.setdefault(cid, []).append(event.category)
    pools = {cid: {pool for c, pool, _ in items if c == cid} for cid, _, _ in items}
    for cid, seen in pools.items():
        expected = {
            frozenset({"v1", "v2"}): "match",
            frozenset({"v1"}): "shadow_missing",
            frozenset({"v2"}): "primary_missing",
        }[frozenset(seen)]
        assert emitted[cid] == [expected]


@st.composite
def arrivals(draw: st.DrawFn) -> list[Any]:
    """Halves of a few correlation ids in any order, some sent twice (same event id)."""
    halves = []
    for n in range(draw(st.integers(1, 6))):
        pools = draw(st.sampled_from([("v1", "v2"), ("v1",), ("v2",)]))
        halves.extend(half(f"c{n}", pool) for pool in pools)
    halves.extend(draw(st.lists(st.sampled_from(halves), max_size=4)) if halves else [])
    return list(draw(st.permutations(halves)))


@settings(max_examples=80, deadline=None)
@given(order=arrivals(), data=st.data())
def test_the_slots_hold_every_distinct_execution_once_whatever_the_order(
    order: list[Any], data: st.DataObject, classifier: Any
) -> None:
    """What the health windows rebuild from (``counted``) is what they counted live: each
    distinct execution once, each non-late comparison once, timeouts and late halves too."""
    slots: dict[str, Any] = {}
    live_executions: list[str] = []
    live_comparisons: list[str] = []
    clock = 100.0
    for offset, h in enumerate(order):
        clock += data.draw(st.sampled_from([0.0, 1.0, TIMEOUT + 1]))
        for cid in list(slots):
            step = tick(slots[cid], clock, classifier)
            if step.outcome is not Outcome.UNCHANGED:
                slots[cid] = decode_slot(encode_slot(step.slot))
                live_comparisons += [e.comparison_id for e in step.emit if not e.late]
        step = arrive(slots.get(h.correlation_id), h, classifier, offset=offset, arrived=clock)
        if step.outcome in (Outcome.STORED, Outcome.PAIRED, Outcome.LATE):
            live_executions.append(h.event_id)
        live_comparisons += [e.comparison_id for e in step.emit if not e.late]
        slots[h.correlation_id] = decode_slot(encode_slot(step.slot))  # through the table

    rebuilt_executions: list[str] = []
    rebuilt_comparisons: list[str] = []
    for slot in slots.values():
        executions, comparisons = counted(slot)
        rebuilt_executions += [e.event_id for e in executions]
        rebuilt_comparisons += [c.comparison_id for c in comparisons]
        assert all(e.result is None for e in executions if isinstance(slot, Decided))
    assert sorted(rebuilt_executions) == sorted(live_executions)
    assert sorted(live_executions) == sorted({h.event_id for h in order})
    assert sorted(rebuilt_comparisons) == sorted(live_comparisons)
