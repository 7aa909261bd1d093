"""The shadow runner with the V2 circuit breaker: V2 failures open it, V2-bound traffic goes to
V1 (reason CIRCUIT_OPEN) while it is open, trials after the open timeout close it again, and
the caller always gets exactly the answer of the pool its recorded decision chose."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from producer_fakes import ListSink

from ledger import flags
from ledger.breaker import BreakerConfig, CircuitBreaker
from ledger.events import BreakerStateChanged, CommandRejected, DecisionReason, FlagChanged
from ledger.settings import Settings
from producers.flag_client import FlagClient
from producers.shadow import PoolError, ShadowRunner, is_skipped_shadow

FLAG = "v2_migration"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SETTINGS = Settings(flag=FLAG, topic_prefix="breaker-test.")
HEALTH = SETTINGS.topic("health")


class ManualClock:
    """The runner's wall clock, moved by the test (the breaker's open timeout reads it)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class SendingSink(ListSink):
    """A publisher that also takes ``send(topic, key, event)``, and says its settings."""

    def __init__(self) -> None:
        super().__init__()
        self.settings = SETTINGS
        self.sent: list[tuple[str, str | None, Any]] = []

    def send(self, topic: str, key: str | None, event: Any) -> None:
        self.sent.append((topic, key, event))

    def transitions(self) -> list[tuple[str, str]]:
        return [(e.previous, e.current) for _, _, e in self.sent]


class V2:
    """A V2 pool whose behaviour the test switches: answer, fail as a worker, fail in user code."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.calls = 0

    def __call__(self, operation: str, args: Mapping[str, Any]) -> Any:
        self.calls += 1
        if self.mode == "worker":
            raise PoolError(
                {"type": "connection_error", "message": "worker gone", "category": "connection"}
            )
        if self.mode == "python":
            raise PoolError(
                {"type": "python_error", "message": "ZeroDivisionError", "category": "python"}
            )
        return {"answer": args["x"] * 2}


def v1_pool(operation: str, args: Mapping[str, Any]) -> Any:
    return {"status": "ok", "data": {"answer": args["x"] * 2}}


def flag_log(*commands: dict[str, Any]) -> list[FlagChanged | CommandRejected]:
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


def client_for(*, v2_bp: int, shadow: bool, clock: ManualClock) -> FlagClient:
    client = FlagClient(SETTINGS, environ={}, clock=clock)
    client.ingest_all(
        flag_log(
            {"command": "enable"},
            {"command": "set_percentage", "percentage_bp": v2_bp},
            {"command": "set_shadow_mode", "enabled": shadow},
        )
    )
    return client


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sink() -> SendingSink:
    return SendingSink()


def _open_it(runner: ShadowRunner, v2: V2) -> None:
    v2.mode = "worker"
    for n in range(5):
        with pytest.raises(PoolError):
            runner.run("double", {"x": n}, f"s-{n}")


def test_after_five_consecutive_v2_failures_v2_bound_sessions_go_to_v1_with_circuit_open(
    clock: ManualClock, sink: SendingSink
) -> None:
    v2 = V2()
    client = client_for(v2_bp=10_000, shadow=False, clock=clock)
    runner = ShadowRunner(v1_pool, v2, client, sink, clock=clock)

    _open_it(runner, v2)
    answer = runner.run("double", {"x": 21}, "s-next")
    runner.close()

    assert answer == {"status": "ok", "data": {"answer": 42}}
    assert v2.calls == 5
    last = sink.decisions()[-1]
    assert (last.pool, last.reason) == ("v1", DecisionReason.CIRCUIT_OPEN)
    assert [d.reason for d in sink.decisions()[:5]] == [DecisionReason.SPLIT] * 5
    assert sink.transitions() == [("closed", "open")]
    topic, key, event = sink.sent[0]
    assert (topic, key) == (HEALTH, "v2")
    assert isinstance(event, BreakerStateChanged)
    assert event.consecutive_failures == 5
    assert event.retry_at == T0 + timedelta(seconds=60)
    stats = runner.stats
    assert (stats.breaker_state, stats.circuit_open, stats.breaker_transitions) == ("open", 1, 1)


def test_four_failures_then_a_success_keep_it_closed(clock: ManualClock, sink: SendingSink) -> None:
    v2 = V2()
    runner = ShadowRunner(
        v1_pool, v2, client_for(v2_bp=10_000, shadow=False, clock=clock), sink, clock=clock
    )
    for round_ in range(3):
        v2.mode = "worker"
        for n in range(4):
            with pytest.raises(PoolError):
                runner.run("double", {"x": n}, f"s-{round_}-{n}")
        v2.mode = "ok"
        runner.run("double", {"x": 1}, f"s-{round_}")
    runner.close()
    assert sink.sent == []
    assert {d.reason for d in sink.decisions()} == {DecisionReason.SPLIT}


def test_after_the_open_timeout_half_open_trials_go_to_v2_and_three_successes_close_it(
    clock: ManualClock, sink: SendingSink
) -> None:
    v2 = V2()
    client = client_for(v2_bp=10_000, shadow=False, clock=clock)
    runner = ShadowRunner(v1_pool, v2, client, sink, clock=clock)
    _open_it(runner, v2)
    v2.mode = "ok"

    clock.advance(59)
    assert runner.run("double", {"x": 1}, "early") == {"status": "ok", "data": {"answer": 2}}
    clock.advance(1)
    answers = [runner.run("double", {"x": n}, f"trial-{n}") for n in range(3)]
    after = runner.run("double", {"x": 5}, "after")
    runner.close()

    assert answers == [{"answer": 0}, {"answer": 2}, {"answer": 4}]
    assert after == {"answer": 10}
    reasons = [d.reason for d in sink.decisions()[5:]]
    assert reasons == [DecisionReason.CIRCUIT_OPEN] + [DecisionReason.SPLIT] * 4
    assert sink.transitions() == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert all(topic == HEALTH and key == "v2" for topic, key, _ in sink.sent)
    assert runner.stats.breaker_state == "closed"


def test_a_failed_half_open_trial_opens_it_for_another_timeout(
    clock: ManualClock, sink: SendingSink
) -> None:
    v2 = V2()
    client = client_for(v2_bp=10_000, shadow=False, clock=clock)
    runner = ShadowRunner(v1_pool, v2, client, sink, clock=clock)
    _open_it(runner, v2)
    clock.advance(60)

    with pytest.raises(PoolError):
        runner.run("double", {"x": 1}, "trial")
    runner.run("double", {"x": 1}, "next")
    runner.close()

    assert sink.transitions()[-2:] == [("open", "half_open"), ("half_open", "open")]
    assert sink.decisions()[-1].reason == DecisionReason.CIRCUIT_OPEN
    assert v2.calls == 6


def test_v1_failures_never_open_it(clock: ManualClock, sink: SendingSink) -> None:
    def failing_v1(operation: str, args: Mapping[str, Any]) -> Any:
        raise PoolError({"type": "connection_refused", "message": "down"})

    v2 = V2()
    client = client_for(v2_bp=0, shadow=True, clock=clock)
    runner = ShadowRunner(failing_v1, v2, client, sink, clock=clock)
    for n in range(12):
        with pytest.raises(PoolError):
            runner.run("double", {"x": n}, f"s-{n}")
    runner.close()

    assert sink.sent == []
    assert runner.stats.breaker_state == "closed"
    assert v2.calls == 12  # every V2 shadow still ran


def test_errors_of_the_program_itself_do_not_open_it(clock: ManualClock, sink: SendingSink) -> None:
    v2 = V2()
    v2.mode = "python"
    client = client_for(v2_bp=10_000, shadow=False, clock=clock)
    runner = ShadowRunner(v1_pool, v2, client, sink, clock=clock)
    for n in range(10):
        with pytest.raises(PoolError):
            runner.run("double", {"x": n}, f"s-{n}")
    runner.close()
    assert sink.sent == []
    assert v2.calls == 10


def test_any_other_exception_from_v2_counts_as_a_failure(
    clock: ManualClock, sink: SendingSink
) -> None:
    def v2(operation: str, args: Mapping[str, Any]) -> Any:
        raise ConnectionResetError("peer reset")

    runner = ShadowRunner(
        v1_pool, v2, client_for(v2_bp=10_000, shadow=False, clock=clock), sink, clock=clock
    )
    for n in range(5):
        with pytest.raises(ConnectionResetError):
            runner.run("double", {"x": n}, f"s-{n}")
    runner.close()
    assert sink.transitions() == [("closed", "open")]


class Blocked:
    """A V2 that hangs until released (released at teardown, so no thread is left behind)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, operation: str, args: Mapping[str, Any]) -> Any:
        self.calls += 1
        self.release.wait(10)
        return {"late": True}


@pytest.fixture
def blocked() -> Iterator[Blocked]:
    pool = Blocked()
    yield pool
    pool.release.set()


def test_shadow_timeouts_of_v2_open_it_and_then_no_v2_shadow_runs(
    clock: ManualClock, sink: SendingSink, blocked: Blocked
) -> None:
    client = client_for(v2_bp=0, shadow=True, clock=clock)
    runner = ShadowRunner(v1_pool, blocked, client, sink, clock=clock, shadow_timeout=0.05)
    for n in range(5):
        runner.run("double", {"x": n}, f"s-{n}")
    deadline = time.monotonic() + 10
    while runner.stats.shadow_timeouts < 5 and time.monotonic() < deadline:
        time.sleep(0.01)

    answer = runner.run("double", {"x": 3}, "after")
    stats = runner.stats
    blocked.release.set()
    runner.close()

    assert answer == {"status": "ok", "data": {"answer": 6}}
    assert sink.transitions() == [("closed", "open")]
    assert (stats.shadow_timeouts, stats.shadow_circuit_open) == (5, 1)
    assert blocked.calls == 5
    # The shadow not run is still recorded, so its pair is closed now, not at its timeout.
    # (Order-free: a timed-out shadow's record may be sent after the skipped one's.)
    shadows = [e for e in sink.operations() if e.role == "shadow"]
    assert sorted(is_skipped_shadow(e) for e in shadows) == [False] * 5 + [True]
    assert sorted(e.error.type for e in shadows if e.error) == ["shadow_skipped"] + ["timeout"] * 5
    (skipped,) = [e for e in shadows if is_skipped_shadow(e)]
    assert skipped.session_id == "after"
    # V1-bound sessions are not the breaker's business: their reason stays what the flag says.
    assert sink.decisions()[-1].reason == DecisionReason.SPLIT


def test_without_a_breaker_v2_failures_change_no_decision(
    clock: ManualClock, sink: SendingSink
) -> None:
    v2 = V2()
    v2.mode = "worker"
    client = client_for(v2_bp=10_000, shadow=False, clock=clock)
    runner = ShadowRunner(v1_pool, v2, client, sink, clock=clock, breaker=None)
    for n in range(8):
        with pytest.raises(PoolError):
            runner.run("double", {"x": n}, f"s-{n}")
    runner.close()
    assert {d.reason for d in sink.decisions()} == {DecisionReason.SPLIT}
    assert runner.stats.breaker_state is None


def test_a_breaker_passed_in_keeps_its_thresholds_and_its_own_listener(
    clock: ManualClock, sink: SendingSink
) -> None:
    heard: list[BreakerStateChanged] = []
    breaker = CircuitBreaker("pool-b", BreakerConfig(failure_threshold=2), on_event=heard.append)
    v2 = V2()
    v2.mode = "worker"
    client = client_for(v2_bp=10_000, shadow=False, clock=clock)
    runner = ShadowRunner(v1_pool, v2, client, sink, clock=clock, breaker=breaker)
    for n in range(2):
        with pytest.raises(PoolError):
            runner.run("double", {"x": n}, f"s-{n}")
    runner.run("double", {"x": 1}, "after")
    runner.close()
    assert [e.current for e in heard] == ["open"]
    assert [(topic, key) for topic, key, _ in sink.sent] == [(HEALTH, "pool-b")]
    assert sink.decisions()[-1].reason == DecisionReason.CIRCUIT_OPEN


MODES = st.sampled_from(["ok", "worker", "python"])


@settings(max_examples=30, deadline=None)
@given(script=st.lists(st.tuples(MODES, st.integers(0, 90)), min_size=1, max_size=25))
def test_the_caller_gets_exactly_the_answer_of_the_pool_its_decision_chose(
    script: list[tuple[str, int]],
) -> None:
    """Whatever V2 does and however the clock moves, with a publisher that refuses every
    transition, the caller's answer is that of the recorded decision's pool, nothing else."""

    class RefusingSink(SendingSink):
        def send(self, topic: str, key: str | None, event: Any) -> None:
            raise OSError("disk full")

    clock = ManualClock()
    sink = RefusingSink()
    v2 = V2()
    client = client_for(v2_bp=5_000, shadow=False, clock=clock)
    runner = ShadowRunner(v1_pool, v2, client, sink, clock=clock)
    for n, (mode, seconds) in enumerate(script):
        v2.mode = mode
        clock.advance(seconds)
        try:
            answer: Any = runner.run("double", {"x": n}, f"s-{n}")
        except PoolError as exc:
            answer = exc
        decision = sink.decisions()[-1]
        if decision.pool == "v1":
            assert answer == v1_pool("double", {"x": n})
        elif mode == "ok":
            assert answer == {"answer": n * 2}
        else:
            assert isinstance(answer, PoolError)
            assert answer.native["category"] == mode.replace("worker", "connection")
    runner.close()
    assert runner.stats.record_errors == runner.stats.breaker_transitions
