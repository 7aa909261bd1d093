"""The V2 circuit breaker: opens, waits, tries, closes; every transition an event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    allow,
    initial_state,
    record,
)
from ledger.events import BreakerStateChanged, decode_event, encode_event

CONFIG = BreakerConfig()
T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def _fail_times(state: BreakerState, times: int, at: datetime = T0) -> BreakerState:
    for _ in range(times):
        state = record(state, CONFIG, at, success=False).state
    return state


def _opened() -> BreakerState:
    return _fail_times(initial_state(), CONFIG.failure_threshold)


def test_defaults_are_those_of_the_migration_design() -> None:
    assert (
        CONFIG.failure_threshold,
        CONFIG.success_threshold,
        CONFIG.open_timeout,
        CONFIG.half_open_trials,
    ) == (5, 3, timedelta(seconds=60), 3)


@given(st.lists(st.booleans(), max_size=200))
@settings(max_examples=200, deadline=None)
def test_it_opens_exactly_when_five_consecutive_failures_happen(outcomes: list[bool]) -> None:
    state = initial_state()
    run = 0
    for success in outcomes:
        run = 0 if success else run + 1
        state = record(state, CONFIG, T0, success=success).state
        if run >= CONFIG.failure_threshold:
            break
        assert state.status == "closed"
    assert (state.status == "open") == (run >= CONFIG.failure_threshold)


def test_opening_is_an_event_saying_when_to_retry() -> None:
    state = _fail_times(initial_state(), 4)
    outcome = record(state, CONFIG, T0, success=False)

    assert outcome.state.status == "open"
    [event] = outcome.events
    assert (event.previous, event.current) == ("closed", "open")
    assert event.consecutive_failures == 5
    assert event.retry_at == T0 + timedelta(seconds=60)
    assert decode_event(encode_event(event), BreakerStateChanged) == event


def test_an_open_breaker_refuses_v2_until_the_timeout() -> None:
    state = _opened()

    refused = allow(state, CONFIG, T0 + timedelta(seconds=59))
    admitted = allow(state, CONFIG, T0 + timedelta(seconds=60))

    assert refused.allowed is False
    assert refused.events == []
    assert admitted.allowed is True
    assert admitted.state.status == "half_open"
    assert [(e.previous, e.current) for e in admitted.events] == [("open", "half_open")]


def test_half_open_lets_at_most_three_trials_through_at_once() -> None:
    state = _opened()
    at = T0 + timedelta(seconds=60)
    admitted = []
    for _ in range(5):
        outcome = allow(state, CONFIG, at)
        admitted.append(outcome.allowed)
        state = outcome.state

    assert admitted == [True, True, True, False, False]
    state = record(state, CONFIG, at, success=True).state
    assert allow(state, CONFIG, at).allowed is True


def test_three_half_open_successes_close_it() -> None:
    state = _opened()
    at = T0 + timedelta(seconds=60)
    for _ in range(3):
        state = allow(state, CONFIG, at).state
    events = []
    for _ in range(3):
        outcome = record(state, CONFIG, at, success=True)
        state, events = outcome.state, events + outcome.events

    assert state == BreakerState(name="v2", status="closed", transitions=3)
    assert [(e.previous, e.current) for e in events] == [("half_open", "closed")]


def test_a_failed_trial_opens_it_again_for_a_full_timeout() -> None:
    state = _opened()
    at = T0 + timedelta(seconds=60)
    state = allow(state, CONFIG, at).state
    outcome = record(state, CONFIG, at + timedelta(seconds=1), success=False)

    assert outcome.state.status == "open"
    assert outcome.events[0].retry_at == at + timedelta(seconds=61)
    assert allow(outcome.state, CONFIG, at + timedelta(seconds=60)).allowed is False


def test_answers_arriving_while_open_change_nothing() -> None:
    state = _opened()

    assert record(state, CONFIG, T0, success=True).state == state
    assert record(state, CONFIG, T0, success=False).state == state


@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["allow", "ok", "fail"]), st.integers(0, 30)), max_size=120
    )
)
@settings(max_examples=150, deadline=None)
def test_transitions_form_one_unbroken_chain_of_distinct_events(
    steps: list[tuple[str, int]],
) -> None:
    state = initial_state()
    at = T0
    events: list[BreakerStateChanged] = []
    for action, gap in steps:
        at += timedelta(seconds=gap)
        if action == "allow":
            admission = allow(state, CONFIG, at)
            state, new = admission.state, admission.events
        else:
            state, new = record(state, CONFIG, at, success=action == "ok")
        events.extend(new)
        assert state.trials_in_flight <= CONFIG.half_open_trials

    current = "closed"
    for event in events:
        assert event.previous == current
        current = event.current
    assert current == state.status
    assert len({e.event_id for e in events}) == len(events)
    assert state.transitions == len(events)


def test_the_breaker_object_keeps_its_state_and_hands_out_every_transition() -> None:
    seen: list[BreakerStateChanged] = []
    breaker = CircuitBreaker(on_event=seen.append)
    for _ in range(5):
        assert breaker.allow(T0)
        breaker.record(T0, success=False)

    assert not breaker.allow(T0 + timedelta(seconds=30))
    assert breaker.allow(T0 + timedelta(seconds=60))
    for _ in range(3):
        breaker.record(T0 + timedelta(seconds=61), success=True)

    assert breaker.state.status == "closed"
    assert [(e.previous, e.current) for e in seen] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
