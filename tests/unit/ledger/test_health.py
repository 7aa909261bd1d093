"""Health windows: mergeable in any order, serialisable, the library's quantiles."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from ddsketch import DDSketch
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.events import (
    RUNNER_SOURCE,
    SHADOW_SKIPPED,
    HealthAssessed,
    OperationError,
    OperationRecorded,
    decode_event,
    encode_event,
    is_skipped_shadow,
)
from ledger.health import (
    ALL_OPERATIONS,
    HealthWindow,
    HealthWindows,
    LatencySketch,
    PartialWindows,
    WindowMerger,
    assessment_id_for,
    merge_windows,
    window_start,
)
from tests.unit.health_factories import CATEGORIES, T0, comparison, execution, executions

SIZE = timedelta(seconds=60)
unique_executions = st.lists(executions, max_size=60, unique_by=lambda op: op.event_id)


def _one_window(ops: list[OperationRecorded], sample_size: int = 8) -> HealthWindow:
    window = HealthWindow(pool="v2", operation="execute_program", start=T0, sample_size=sample_size)
    for op in ops:
        window.add_operation(op)
    return window


@given(
    ops=unique_executions,
    parts=st.integers(1, 5),
    data=st.data(),
)
@settings(max_examples=150, deadline=None)
def test_partial_windows_merged_in_any_order_equal_one_window(
    ops: list[OperationRecorded], parts: int, data: st.DataObject
) -> None:
    whole = _one_window(ops)
    assignment = data.draw(
        st.lists(st.integers(0, parts - 1), min_size=len(ops), max_size=len(ops))
    )
    partials = [
        _one_window([op for op, p in zip(ops, assignment, strict=True) if p == i])
        for i in range(parts)
    ]
    order = data.draw(st.permutations(partials))

    merged = merge_windows(order)

    assert merged == whole
    assert merged.assessed(at=T0) == whole.assessed(at=T0)


@given(ops=unique_executions)
@settings(max_examples=100, deadline=None)
def test_window_survives_a_json_round_trip_exactly(ops: list[OperationRecorded]) -> None:
    window = _one_window(ops)
    for i in range(min(len(ops), 10)):
        window.add_comparison(comparison(i, CATEGORIES[i % len(CATEGORIES)]))

    restored = HealthWindow.from_dict(json.loads(json.dumps(window.to_dict())))

    assert restored == window


@given(st.lists(st.floats(0, 100_000, allow_nan=False), min_size=1, max_size=300))
@settings(max_examples=100, deadline=None)
def test_quantiles_are_those_of_the_ddsketch_library(values: list[float]) -> None:
    ours = LatencySketch()
    library = DDSketch(ours.relative_accuracy)
    for value in values:
        ours.add(value)
        library.add(value)

    for q in (0.5, 0.95, 0.99):
        expected = library.get_quantile_value(q)
        assert ours.quantile(q) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_quantiles_are_within_the_relative_accuracy_of_the_true_ones() -> None:
    values = [float(v) for v in range(1, 10_001)]
    sketch = LatencySketch()
    for value in values:
        sketch.add(value)

    for q in (0.5, 0.95, 0.99):
        true = values[int(q * (len(values) - 1))]
        assert sketch.quantile(q) == pytest.approx(true, rel=sketch.relative_accuracy)


def test_an_empty_sketch_has_no_quantile() -> None:
    assert LatencySketch().quantile(0.99) is None


def test_windows_are_aligned_to_the_epoch_whatever_the_timezone() -> None:
    at = datetime.fromisoformat("2025-03-01T11:00:42.5+01:00")

    assert window_start(at, SIZE) == datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
    assert window_start(at, timedelta(seconds=5)) == datetime(2025, 3, 1, 10, 0, 40, tzinfo=UTC)


def test_a_window_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        window_start(T0, timedelta(0))


def test_errors_are_counted_by_canonical_type_and_worker_failures_apart() -> None:
    window = HealthWindow(pool="v2", operation="execute_program", start=T0)
    window.add_operation(execution(1, error_type="Timeout"), error_type="timeout")
    window.add_operation(execution(2, error_type="connection"))
    window.add_operation(execution(3, error_type="python"))
    window.add_operation(execution(4))

    assessed = window.assessed(at=T0 + SIZE)

    assert assessed.count == 4
    assert assessed.error_count == 3
    assert assessed.errors_by_type == {"connection": 1, "python": 1, "timeout": 1}
    assert assessed.worker_failures == 1
    assert assessed.metrics["error_rate"] == pytest.approx(0.75)


def test_v1_errors_and_missing_halves_are_not_v2_mismatches() -> None:
    window = HealthWindow(pool="v2", operation="execute_program", start=T0)
    for i, category in enumerate(CATEGORIES):
        window.add_comparison(comparison(i, category))

    assert (window.comparisons, window.mismatches, window.missing) == (7, 4, 2)


def test_resources_give_mean_cpu_and_peak_memory() -> None:
    window = HealthWindow(pool="v1", operation="execute_program", start=T0)
    window.add_operation(execution(1, pool="v1", cpu_ms=10.0, memory_bytes=100))
    window.add_operation(execution(2, pool="v1", cpu_ms=20.0, memory_bytes=300))
    window.add_operation(execution(3, pool="v1"))

    assessed = window.assessed(at=T0)

    assert assessed.cpu_ms_mean == pytest.approx(15.0)
    assert assessed.memory_bytes_max == 300


def test_a_duplicated_execution_is_sampled_once() -> None:
    window = HealthWindow(pool="v2", operation="execute_program", start=T0)
    window.add_operation(execution(1, duration_ms=5.0))
    window.add_operation(execution(1, duration_ms=5.0))

    assert window.sample_values() == (5.0,)


def test_the_sample_keeps_at_most_its_size() -> None:
    window = _one_window([execution(i, duration_ms=float(i)) for i in range(100)], sample_size=10)

    assert len(window.sample_values()) == 10


def test_each_execution_counts_in_its_operation_window_and_the_pool_total() -> None:
    windows = HealthWindows(size=SIZE)
    windows.add_operation(execution(1, operation="a"))
    windows.add_operation(execution(2, operation="b"))
    windows.add_operation(execution(3, pool="v1", operation="a"))

    counts = {key[:2]: window.count for key, window in windows.open.items()}

    assert counts == {
        ("v2", "a"): 1,
        ("v2", "b"): 1,
        ("v2", ALL_OPERATIONS): 2,
        ("v1", "a"): 1,
        ("v1", ALL_OPERATIONS): 1,
    }


def test_a_skipped_shadow_is_not_an_execution_of_its_pool() -> None:
    """The runner records shadows it did not run (breaker open): no count, no error."""
    skipped = execution(1, error_type=SHADOW_SKIPPED).model_copy(
        update={
            "error": OperationError.model_validate(
                {
                    "type": SHADOW_SKIPPED,
                    "message": "not run",
                    "reason": "circuit_open",
                    "source": RUNNER_SOURCE,
                }
            ),
            "duration_ms": 0.0,
        }
    )
    assert is_skipped_shadow(skipped)
    windows = HealthWindows(size=SIZE)
    windows.add_operation(skipped)
    windows.add_operation(execution(2, error_type="timeout"))

    counts = {key[:2]: (w.count, w.error_count) for key, w in windows.open.items()}
    assert counts == {("v2", "execute_program"): (1, 1), ("v2", ALL_OPERATIONS): (1, 1)}


def test_comparisons_count_in_v2_windows() -> None:
    windows = HealthWindows(size=SIZE)
    windows.add_comparison(comparison(1, "value_mismatch"))

    assert {key[:2] for key in windows.open} == {("v2", "execute_program"), ("v2", ALL_OPERATIONS)}


def test_only_windows_that_have_ended_are_closed_and_late_events_are_ignored() -> None:
    windows = HealthWindows(size=SIZE)
    windows.add_operation(execution(1, at=T0))
    windows.add_operation(execution(2, at=T0 + SIZE))

    assert windows.close_due(T0 + SIZE - timedelta(microseconds=1)) == []
    closed = windows.close_due(T0 + SIZE + timedelta(seconds=5), grace=timedelta(seconds=5))
    windows.add_operation(execution(3, at=T0 + timedelta(seconds=30)))

    assert {w.start for w in closed} == {T0}
    assert [w.operation for w in closed] == [ALL_OPERATIONS, "execute_program"]
    assert windows.late == 1
    assert {key[2] for key in windows.open} == {T0 + SIZE}


def test_an_assessment_round_trips_through_the_event_contract() -> None:
    window = _one_window([execution(i, duration_ms=float(i % 17)) for i in range(50)])
    assessed = window.assessed(at=T0 + SIZE)

    assert decode_event(encode_event(assessed), HealthAssessed) == assessed
    assert assessed.event_id == assessment_id_for("v2", "execute_program", T0, SIZE)
    assert assessed.latency_sketch is not None
    assert LatencySketch.from_dict(assessed.latency_sketch) == window.latency


def test_windows_of_another_key_do_not_merge() -> None:
    a = HealthWindow(pool="v2", operation="a", start=T0)
    b = HealthWindow(pool="v2", operation="b", start=T0)

    with pytest.raises(ValueError, match="cannot merge"):
        a.merged(b)


def test_an_unknown_stored_format_is_refused() -> None:
    data = HealthWindow(pool="v2", operation="a", start=T0).to_dict()
    data["format"] = 99

    with pytest.raises(ValueError, match="format"):
        HealthWindow.from_dict(data)


def _closed_by_partition(
    ops: list[OperationRecorded], assignment: list[int], partitions: int, now: datetime
) -> list[PartialWindows]:
    partials = []
    for partition in range(partitions):
        windows = HealthWindows(size=SIZE, sample_size=8)
        for op, p in zip(ops, assignment, strict=True):
            if p == partition:
                windows.add_operation(op)
        closed = windows.close_due(now)
        assert windows.closed_before is not None
        partials.append(PartialWindows(partition, windows.closed_before, tuple(closed)))
    return partials


@given(ops=unique_executions, partitions=st.integers(1, 4), data=st.data())
@settings(max_examples=100, deadline=None)
def test_the_merger_gives_one_accumulators_windows_once_every_partition_closed(
    ops: list[OperationRecorded], partitions: int, data: st.DataObject
) -> None:
    now = T0 + 2 * SIZE
    whole = HealthWindows(size=SIZE, sample_size=8)
    for op in ops:
        whole.add_operation(op)
    expected = {w.key: w for w in whole.close_due(now)}
    assignment = data.draw(
        st.lists(st.integers(0, partitions - 1), min_size=len(ops), max_size=len(ops))
    )
    partials = _closed_by_partition(ops, assignment, partitions, now)
    resent = data.draw(st.lists(st.sampled_from(partials), max_size=3))  # after a restart
    order = data.draw(st.permutations(partials + resent))
    merger = WindowMerger(partitions)

    heard: set[int] = set()
    out: list[HealthWindow] = []
    for partial in order:
        merger.add(PartialWindows.from_dict(json.loads(json.dumps(partial.to_dict()))))
        heard.add(partial.partition)
        ready = merger.ready()
        if len(heard) < partitions:
            assert ready == []  # never on part of the evidence
        out += ready

    assert {w.key: w for w in out} == expected
    assert len(out) == len(expected)  # each window once


def test_a_partial_for_a_window_already_merged_is_late_and_dropped() -> None:
    merger = WindowMerger(1)
    window = HealthWindow(pool="v1", operation="execute_program", start=T0, size=SIZE)
    window.add_operation(execution(1, pool="v1"))
    merger.add(PartialWindows(0, T0 + SIZE, (window,)))
    assert [w.count for w in merger.ready()] == [1]

    merger.add(PartialWindows(0, T0 + SIZE, (window,)))

    assert merger.ready() == []
    assert merger.late == 1


def test_a_partial_of_a_partition_beyond_the_count_is_ignored() -> None:
    merger = WindowMerger(2)
    merger.add(PartialWindows(5, T0 + SIZE))

    assert merger.closed_before == {}
