"""The simulator: reproducible, realistic in shape, and scripted incidents that read clearly."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.comparison import load_rules
from ledger.events import OperationError
from producers.shadow import PoolError, PoolResult
from producers.simulator import (
    CANONICAL_ERRORS,
    DEFAULT_V1,
    DEFAULT_V2,
    V1_ERROR_TYPES,
    V2_ERROR_TYPES,
    Call,
    Incident,
    IncidentError,
    PoolSimulator,
    Simulator,
    Workload,
    parse_incidents,
)

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _outcomes(pool: PoolSimulator, calls: list[Call]) -> list[Any]:
    outcomes: list[Any] = []
    for call in calls:
        try:
            outcomes.append(pool(call.operation, call.args))
        except PoolError as exc:
            outcomes.append(("error", exc.native, exc.duration_ms))
    return outcomes


def test_the_same_seed_gives_the_same_run_call_for_call() -> None:
    workload = Workload(seed=7, sessions=20)
    first = Simulator(seed=7, clock=lambda: AT)
    second = Simulator(seed=7, clock=lambda: AT)

    assert workload.calls(300) == Workload(seed=7, sessions=20).calls(300)
    assert _outcomes(first.v2, workload.calls(300)) == _outcomes(second.v2, workload.calls(300))


def test_the_order_of_calls_does_not_change_any_answer() -> None:
    """Shadow runs finish in any order: each call's randomness depends on the call alone."""
    calls = Workload(seed=3).calls(50)
    forward = Simulator(seed=3, clock=lambda: AT).v1
    backward = Simulator(seed=3, clock=lambda: AT).v1

    def answer(pool: PoolSimulator, n: int) -> Any:
        try:
            return pool(calls[n].operation, calls[n].args)
        except PoolError as exc:
            return exc.native

    assert [answer(forward, n) for n in range(50)] == [
        answer(backward, n) for n in reversed(range(50))
    ][::-1]


def test_another_seed_gives_another_run() -> None:
    workload = Workload(seed=1)
    one = _outcomes(Simulator(seed=1, clock=lambda: AT).v1, workload.calls(50))
    two = _outcomes(Simulator(seed=2, clock=lambda: AT).v1, workload.calls(50))
    assert one != two


def test_v1_wraps_its_answer_and_v2_answers_bare_with_fresh_ids_and_timestamps() -> None:
    sim = Simulator(seed=5).with_profiles(error_rates={}, value_diff_rate=0, shape_diff_rate=0)
    args = {"request": 1, "program": "report", "inputs": [1]}
    v1, v2 = sim.v1("execute_program", args), sim.v2("execute_program", args)

    assert isinstance(v1, PoolResult)
    assert isinstance(v2, PoolResult)
    assert v1.value["status"] == "ok"
    body = v1.value["data"]
    assert body["execution_id"] != v2.value["execution_id"]
    assert sorted(body["files"]) == sorted(v2.value["files"])
    assert body["metrics"] == v2.value["metrics"]
    assert body["stdout"].strip() == v2.value["stdout"].strip()
    assert v1.resources is not None
    assert v1.resources.worker_id is not None
    assert v1.resources.worker_id.startswith("v1-w")


def test_v2_is_faster_than_v1_by_default() -> None:
    calls = Workload(seed=11).calls(800)
    sim = Simulator(seed=11).with_profiles(error_rates={})

    def median(pool: PoolSimulator) -> float:
        durations = [o.duration_ms for o in _outcomes(pool, calls) if isinstance(o, PoolResult)]
        return statistics.median(d for d in durations if d is not None)

    assert median(sim.v2) < median(sim.v1)
    assert median(sim.v1) == pytest.approx(DEFAULT_V1.latency_median_ms, rel=0.1)


def test_error_rates_per_type_come_out_near_the_profile() -> None:
    rates = {"timeout": 0.05, "connection": 0.02}
    pool = Simulator(seed=2).with_profiles(error_rates=rates).v1
    _outcomes(pool, Workload(seed=2).calls(3000))
    errors = pool.counts()["errors"]
    assert 150 * 0.7 < errors["timeout"] < 150 * 1.3
    assert 60 * 0.6 < errors["connection"] < 60 * 1.4
    assert set(errors) <= {"timeout", "connection", "python"}


@pytest.mark.parametrize("canonical", CANONICAL_ERRORS)
def test_each_pools_native_errors_map_back_to_their_canonical_type_in_the_default_rules(
    canonical: str,
) -> None:
    rules = load_rules()
    for pool, names in (("v1", V1_ERROR_TYPES), ("v2", V2_ERROR_TYPES)):
        for name in names[canonical]:
            native: dict[str, Any] = {"type": name, "message": "m"}
            if pool == "v2":
                native["category"] = canonical
            assert rules.canonical_error(pool, OperationError(**native)) == canonical, name


def test_v1_and_v2_errors_come_in_their_own_native_shapes() -> None:
    only_timeouts = {"timeout": 1.0}
    sim = Simulator(seed=1).with_profiles(error_rates=only_timeouts)
    with pytest.raises(PoolError) as v1:
        sim.v1("list_files", {"request": 1})
    with pytest.raises(PoolError) as v2:
        sim.v2("list_files", {"request": 1})

    assert v1.value.native["type"] in V1_ERROR_TYPES["timeout"]
    assert {"worker", "retryable"} <= set(v1.value.native)
    assert v2.value.native["category"] == "timeout"
    assert v2.value.native["code"] == "E_TIMEOUT"
    assert v1.value.duration_ms == DEFAULT_V1.timeout_ms


def test_real_differences_appear_at_their_configured_rate() -> None:
    sim = Simulator(seed=4).with_profiles(error_rates={}, value_diff_rate=0.1, shape_diff_rate=0)
    _outcomes(sim.v2, Workload(seed=4).calls(1000))
    assert 60 < sim.v2.counts()["value_differences"] < 140


# -- incidents ------------------------------------------------------------------------------


def test_an_error_rate_incident_multiplies_from_its_start() -> None:
    incident = Incident.parse("v2:error_rate*5@180s")
    pool = PoolSimulator(DEFAULT_V2, seed=0, incidents=[incident])

    assert pool.conditions(179.9).error_rate == pytest.approx(DEFAULT_V2.error_rate)
    assert pool.conditions(180).error_rate == pytest.approx(DEFAULT_V2.error_rate * 5)


def test_an_incident_for_the_other_pool_changes_nothing() -> None:
    pool = PoolSimulator(DEFAULT_V1, seed=0, incidents=parse_incidents(["v2:latency*10@0s"]))
    assert pool.conditions(100).latency_factor == 1.0


def test_latency_regressions_multiply_or_add_and_end_when_told() -> None:
    pool = PoolSimulator(
        DEFAULT_V2,
        seed=0,
        incidents=parse_incidents(["v2:latency*3@1m-2m", "v2:latency+250ms@90s"]),
    )
    assert (pool.conditions(30).latency_factor, pool.conditions(30).latency_add_ms) == (1.0, 0.0)
    assert (pool.conditions(95).latency_factor, pool.conditions(95).latency_add_ms) == (3.0, 250.0)
    assert (pool.conditions(130).latency_factor, pool.conditions(130).latency_add_ms) == (1.0, 250)


def test_an_incident_on_one_error_type_raises_only_that_type() -> None:
    pool = PoolSimulator(
        DEFAULT_V2, seed=0, incidents=parse_incidents(["v2:error_rate[connection]+0.2@0s"])
    )
    rates = pool.conditions(0).error_rates
    assert rates["connection"] == pytest.approx(DEFAULT_V2.error_rates["connection"] + 0.2)
    assert rates["timeout"] == DEFAULT_V2.error_rates["timeout"]


def test_an_incident_drives_the_simulated_pool_through_the_simulated_clock() -> None:
    sim = Simulator(seed=9, incidents=parse_incidents(["v2:error_rate+0.5@60s"]))
    calls = Workload(seed=9).calls(400)

    def failures() -> int:
        count = 0
        for call in calls:
            try:
                sim.v2(call.operation, call.args)
            except PoolError:
                count += 1
        return count

    before = failures()
    sim.time.seconds = 61
    after = failures()
    assert before < 20
    assert 150 < after < 250


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("v3:error_rate*5@180s", "expected POOL:METRIC"),
        ("v2:errors*5@180s", "expected POOL:METRIC"),
        ("v2:error_rate*5", "expected POOL:METRIC"),
        ("v2:error_rate*five@1s", "expected POOL:METRIC"),
        ("v2:latency[timeout]*2@1s", "only error_rate takes an error type"),
        ("v2:error_rate[gremlins]*2@1s", "unknown error type 'gremlins'"),
        ("v2:error_rate*2ms@1s", "a unit (ms, s) only goes with latency+AMOUNT"),
        ("v2:latency*2@3m-1m", "the end must come after the start"),
        ("v2:diff_rate+3@0s", "is a probability"),
    ],
)
def test_a_bad_incident_is_refused_with_a_message_saying_what_is_wrong(
    text: str, message: str
) -> None:
    with pytest.raises(IncidentError, match=re.escape(message)):
        Incident.parse(text)


@settings(max_examples=100, deadline=None)
@given(
    pool=st.sampled_from(["v1", "v2"]),
    metric=st.sampled_from(["error_rate", "latency", "diff_rate"]),
    op=st.sampled_from(["*", "+"]),
    amount=st.integers(0, 50),
    start=st.integers(0, 600),
    length=st.none() | st.integers(1, 600),
)
def test_an_incident_reads_back_from_its_own_text(
    pool: str, metric: str, op: str, amount: int, start: int, length: int | None
) -> None:
    if metric == "diff_rate" and op == "+":
        amount = min(amount, 1)
    end = "" if length is None else f"-{start + length}s"
    incident = Incident.parse(f"{pool}:{metric}{op}{amount}@{start}s{end}")
    assert Incident.parse(str(incident)) == incident


def test_the_workload_spreads_calls_over_operations_and_sessions_at_its_rate() -> None:
    calls = Workload(seed=0, sessions=30, rate=20).calls(3000)
    operations = Counter(c.operation for c in calls)
    sessions = {c.session_id for c in calls}

    assert operations["execute_program"] > operations["list_files"] > operations["health_check"]
    assert len(sessions - {None}) == 30
    assert None in sessions  # some operations are anonymous
    assert calls[40].at_s == 2.0


def test_traffic_sends_every_operation_through_the_runner_and_counts_what_callers_saw() -> None:
    from producer_fakes import FixedRouter, ListSink

    from producers.shadow import ShadowRunner
    from producers.simulator import Traffic

    sim = Simulator(seed=6, incidents=parse_incidents(["v2:error_rate+1@1s"]))
    sink = ListSink()
    runner = ShadowRunner(sim.v1, sim.v2, FixedRouter("v1"), sink, shadow_queue=1000)
    traffic = Traffic(
        runner, Workload(seed=6, rate=200_000.0), simulator=sim, operations=400, concurrency=3
    ).start()

    assert traffic.wait(30)
    traffic.close()
    runner.close(timeout=10)
    assert (traffic.issued, traffic.completed, traffic.other_errors) == (400, 400, [])
    assert traffic.pool_errors == sum(sim.v1.counts()["errors"].values())
    assert sim.time.seconds == pytest.approx(399 / 200_000)
    assert len(sink.decisions()) == 400


def test_traffic_sets_the_simulated_clock_so_incidents_start_at_the_same_operation() -> None:
    from producer_fakes import FixedRouter, ListSink

    from producers.shadow import ShadowRunner
    from producers.simulator import Traffic

    def failed_v2_requests() -> list[int]:
        # Operation n is due at n / rate simulated seconds: from n = 100 on, V2 always fails.
        sim = Simulator(seed=8, incidents=parse_incidents(["v2:error_rate+1@0.5s"]))
        sink = ListSink()
        # No breaker: this test follows the incident on V2 itself, not traffic sent to V1.
        runner = ShadowRunner(sim.v1, sim.v2, FixedRouter("v2", shadow=False), sink, breaker=None)
        traffic = Traffic(
            runner, Workload(seed=8, rate=200.0), simulator=sim, operations=150, concurrency=1
        ).start()
        assert traffic.wait(30)
        traffic.close()
        # One caller thread: events come in request order.
        return [n for n, event in enumerate(sink.operations()) if event.outcome == "error"]

    failed = failed_v2_requests()
    assert set(range(100, 150)) <= set(failed)
    assert len([n for n in failed if n < 100]) <= 3  # the pool's usual failure rate
    assert failed == failed_v2_requests()
