"""The publisher in a child process: the caller's side only writes a pipe, and nothing is lost.

Kafka is unreachable for the child (its producer factory refuses), so every event must end
up in the journal; a one-process publisher on the same journal then delivers it, as a
restart after an outage would.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from producer_fakes import FakeBroker, FixedRouter, producer_factory, unreachable_kafka

from ledger.events import (
    BreakerStateChanged,
    DecisionReason,
    OperationRecorded,
    RolloutDecided,
    decode_event,
    encode_event,
)
from ledger.settings import Settings
from producers.publisher import (
    ProcessPublisher,
    Publisher,
    pack_decision,
    pack_event,
    unpack_decision,
    unpack_event,
)
from producers.shadow import ShadowRunner, is_skipped_shadow

AT = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def v1_pool(operation: str, args: Mapping[str, Any]) -> Any:
    return {"status": "ok", "data": {"answer": args["x"] * 2}}


def v2_pool(operation: str, args: Mapping[str, Any]) -> Any:
    if args["x"] % 3 == 0:
        raise ValueError("v2 broke")
    return {"answer": args["x"] * 2}


@pytest.fixture
def child(settings: Settings, tmp_path: Path) -> Iterator[ProcessPublisher]:
    publisher = ProcessPublisher(
        settings,
        journal_path=tmp_path / "journal.jsonl",
        producer_factory=unreachable_kafka,
        retry_backoff=(0.05, 0.1),
    ).start()
    yield publisher
    publisher.close(timeout=1)


def _delivered(settings: Settings, journal: Path) -> list[Any]:
    """What a one-process publisher on the journal sends once Kafka is back (decoded)."""
    broker = FakeBroker()
    with Publisher(settings, journal_path=journal, producer_factory=producer_factory(broker)) as p:
        assert p.flush(30)
    return [
        decode_event(value, OperationRecorded if b'"OperationRecorded"' in value else None)
        for value in broker.values()
    ]


def test_events_pack_and_unpack_to_the_same_wire_form() -> None:
    decision = RolloutDecided(
        event_id="d-1",
        flag="v2_migration",
        session_id="s-1",
        correlation_id="c-1",
        pool="v2",
        reason=DecisionReason.SPLIT,
        bucket=12,
        threshold_bp=5000,
        flag_version=4,
        at=AT,
    )
    transition = BreakerStateChanged(
        event_id="b-1",
        breaker="v2",
        previous="closed",
        current="open",
        reason="five failures",
        consecutive_failures=5,
        at=AT,
        retry_at=AT,
    )
    for event in (decision, transition):
        assert encode_event(unpack_event(pack_event(event))) == encode_event(event)
    assert encode_event(unpack_decision(pack_decision(decision))) == encode_event(decision)


def test_every_call_is_journaled_by_the_child_while_kafka_is_away_and_sent_after_a_restart(
    settings: Settings, tmp_path: Path, child: ProcessPublisher
) -> None:
    runner = ShadowRunner(v1_pool, v2_pool, FixedRouter("v1"), child, breaker=None)
    for n in range(50):
        runner.run("double", {"x": n}, f"s-{n % 4}", correlation_id=f"c-{n}")
    runner.close()
    stats = child.close(timeout=1)
    assert stats.published == 150  # decision, primary and shadow of each call
    assert stats.pending == 150
    assert stats.online is False

    events = _delivered(settings, tmp_path / "journal.jsonl")
    operations = [e for e in events if isinstance(e, OperationRecorded)]
    assert len(events) == 150
    assert Counter(e.role for e in operations) == {"primary": 50, "shadow": 50}
    assert {e.correlation_id for e in operations} == {f"c-{n}" for n in range(50)}
    shadow_7 = next(e for e in operations if e.correlation_id == "c-7" and e.role == "shadow")
    assert shadow_7.result == {"answer": 14}
    shadow_9 = next(e for e in operations if e.correlation_id == "c-9" and e.role == "shadow")
    assert shadow_9.error is not None
    assert shadow_9.error.type == "ValueError"


def test_the_child_builds_what_the_runner_would_have_built_itself(
    settings: Settings, tmp_path: Path, child: ProcessPublisher
) -> None:
    """Same events through the child as through an in-process sink, but for the ids."""
    from producer_fakes import ListSink

    ticks = iter(range(10_000))

    def clock() -> datetime:
        return AT.replace(microsecond=next(ticks))

    weird: dict[str, Any] = {"tuple": (1, 2), "set": {3}}
    calls = [{"x": 1}, {"x": 3}, {"x": 4, "weird": True}]

    def v2(operation: str, args: Mapping[str, Any]) -> Any:
        return weird if args.get("weird") else v2_pool(operation, args)

    def run(sink: Any) -> None:
        runner = ShadowRunner(
            v1_pool, v2, FixedRouter("v1"), sink, clock=clock, new_id=lambda: "id", breaker=None
        )
        for n, args in enumerate(calls):
            runner.run("double", args, "s", correlation_id=f"c-{n}")
            while runner.shadows_in_flight:
                time.sleep(0.001)
        runner.close()

    local = ListSink()
    run(local)
    ticks = iter(range(10_000))
    run(child)
    child.close(timeout=1)

    def comparable(event: Any) -> dict[str, Any]:
        return {**event.model_dump(mode="json"), "event_id": None, "duration_ms": None}

    sent = _delivered(settings, tmp_path / "journal.jsonl")
    key = lambda e: (e.type, e.correlation_id, getattr(e, "role", ""))  # noqa: E731
    assert sorted(map(comparable, sent), key=str) == sorted(map(comparable, local.events), key=str)
    assert sorted(map(key, sent)) == sorted(map(key, local.events))


def test_a_result_that_does_not_pickle_is_built_by_the_runner_and_still_recorded(
    settings: Settings, tmp_path: Path, child: ProcessPublisher
) -> None:
    def v2(operation: str, args: Mapping[str, Any]) -> Any:
        return {"callback": lambda: None}  # a lambda pickles nowhere

    runner = ShadowRunner(v1_pool, v2, FixedRouter("v1"), child, breaker=None)
    runner.run("double", {"x": 1}, "s", correlation_id="c-1")
    runner.close()
    child.close(timeout=1)

    operations = [
        e
        for e in _delivered(settings, tmp_path / "journal.jsonl")
        if isinstance(e, OperationRecorded)
    ]
    shadow = next(e for e in operations if e.role == "shadow")
    assert isinstance(shadow.result, dict)
    assert str(shadow.result["callback"]).startswith("<function")


def test_skipped_shadows_cross_the_process_boundary_too(
    settings: Settings, tmp_path: Path, child: ProcessPublisher
) -> None:
    runner = ShadowRunner(
        v1_pool, v2_pool, FixedRouter("v1"), child, shadow_queue=0, shadow_concurrency=0
    )
    runner.run("double", {"x": 1}, "s", correlation_id="c-1")
    runner.close()
    child.close(timeout=1)
    shadows = [
        e
        for e in _delivered(settings, tmp_path / "journal.jsonl")
        if isinstance(e, OperationRecorded) and e.role == "shadow"
    ]
    assert [is_skipped_shadow(e) for e in shadows] == [True]


def test_a_child_that_dies_is_replaced_and_what_it_journaled_is_kept(
    settings: Settings, tmp_path: Path, child: ProcessPublisher
) -> None:
    runner = ShadowRunner(v1_pool, v2_pool, FixedRouter("v1", shadow=False), child)
    for n in range(10):
        runner.run("double", {"x": n}, "s", correlation_id=f"before-{n}")
    assert child.flush(0.5) is False  # Kafka is away; the child answers, it has them
    process = child._process
    assert process is not None
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    for n in range(10):
        runner.run("double", {"x": n}, "s", correlation_id=f"after-{n}")
    stats = child.close(timeout=1)

    assert child.restarts == 1
    assert stats.published == 20  # the new child's own; it replayed the dead one's journal
    correlation_ids = {
        e.correlation_id
        for e in _delivered(settings, tmp_path / "journal.jsonl")
        if isinstance(e, OperationRecorded)
    }
    assert correlation_ids == {f"{when}-{n}" for when in ("before", "after") for n in range(10)}


# -- shadows run by the child ---------------------------------------------------------------


def worker_failing_v2(operation: str, args: Mapping[str, Any]) -> Any:
    from producers.shadow import PoolError

    raise PoolError({"type": "connection_error", "message": "gone", "category": "connection"})


def child_pools() -> dict[str, Any]:
    """The pools the child builds (module-level, so the child can import it)."""
    return {"v1": v1_pool, "v2": worker_failing_v2}


def test_shadows_run_in_the_child_and_their_v2_failures_open_the_callers_breaker(
    settings: Settings, tmp_path: Path
) -> None:
    publisher = ProcessPublisher(
        settings,
        journal_path=tmp_path / "journal.jsonl",
        producer_factory=unreachable_kafka,
        pools=child_pools,
    ).start()
    ran_here: list[int] = []

    def v2_here(operation: str, args: Mapping[str, Any]) -> Any:
        ran_here.append(args["x"])  # must never run: the child has its own V2
        return {}

    runner = ShadowRunner(v1_pool, v2_here, FixedRouter("v1"), publisher)
    try:
        for n in range(6):
            runner.run("double", {"x": n}, "s", correlation_id=f"c-{n}")
            while runner.shadows_in_flight:
                time.sleep(0.005)
        stats = runner.close()
    finally:
        publisher.close(timeout=1)

    assert ran_here == []
    assert (stats.shadow_started, stats.shadow_errors, stats.shadow_circuit_open) == (5, 5, 1)
    assert stats.breaker_state == "open"
    shadows = {
        e.correlation_id: e
        for e in _delivered(settings, tmp_path / "journal.jsonl")
        if isinstance(e, OperationRecorded) and e.role == "shadow"
    }
    assert sorted(shadows) == [f"c-{n}" for n in range(6)]
    errors = [shadows[f"c-{n}"].error for n in range(6)]
    assert [e.type if e else None for e in errors] == ["connection_error"] * 5 + ["shadow_skipped"]


def test_a_simulator_can_be_the_childs_pools(settings: Settings, tmp_path: Path) -> None:
    import functools

    from producers.simulator import Simulator

    publisher = ProcessPublisher(
        settings,
        journal_path=tmp_path / "journal.jsonl",
        producer_factory=unreachable_kafka,
        pools=functools.partial(Simulator, seed=3),
    ).start()
    sim = Simulator(seed=3)
    runner = ShadowRunner(sim.v1, sim.v2, FixedRouter("v1"), publisher, breaker=None)
    try:
        for n in range(20):
            runner.run("health_check", {"n": n}, "s", correlation_id=f"c-{n}")
        stats = runner.close(timeout=10)
    finally:
        publisher.close(timeout=1)
    assert stats.shadow_started == 20
    shadows = [
        e
        for e in _delivered(settings, tmp_path / "journal.jsonl")
        if isinstance(e, OperationRecorded) and e.role == "shadow"
    ]
    assert len(shadows) == 20
    assert {e.pool for e in shadows} == {"v2"}
