"""The pairing table's slots, and how an arriving half or the passing of time changes one.

Pure: no faust, no clock. The pairing agent (``streams.pairing``) keeps one slot per
correlation id in a faust table and hands each arrival to :func:`receive` and each expiry to
:func:`expire`; it stores the returned slot and publishes the returned comparisons.

A slot is either *pending* (one half seen, waiting for the other until ``due``) or *decided*
(a comparison was emitted). A decided slot is remembered until ``forget_at`` so that
duplicates and late halves are recognised and nothing is compared twice; it also remembers
which input position caused each emission, so that after a crash the agent can re-publish
what it may have decided without publishing (see ``Emission``).

Times are seconds since the epoch on the *stream's* clock: the broker's append time of the
operations (``LogAppendTime``), advanced by wall-clock ticks only once a partition is read to
its end. A backlog read after a restart therefore pairs exactly as it would have live.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Protocol

from pydantic import Field, TypeAdapter

from ledger.events import ComparisonRecorded, OperationRecorded, Pool, is_skipped_shadow
from ledger.frozen import Frozen

__all__ = [
    "Classifier",
    "Decided",
    "Emission",
    "Outcome",
    "Pending",
    "Position",
    "Slot",
    "Step",
    "bare",
    "counted",
    "decode_slot",
    "encode_slot",
    "expire",
    "late_marker",
    "receive",
]


class Classifier(Protocol):
    """What pairing needs from the comparison engine (``ledger.comparison``)."""

    def compare(
        self, v1: OperationRecorded, v2: OperationRecorded, *, at: datetime
    ) -> ComparisonRecorded: ...

    def missing(
        self, present: OperationRecorded, *, at: datetime, late: bool = False
    ) -> ComparisonRecorded: ...


class Position(Frozen):
    """Where an input message sits in Kafka: what caused an emission."""

    topic: str
    partition: int
    offset: int


class Emission(Frozen):
    """A comparison the slot emitted, and the input whose processing emitted it.

    If the worker dies after the table write reached the changelog but before the comparison
    reached its topic, re-reading that same input position re-publishes this event; the
    comparison id makes the copy recognisable downstream.
    """

    position: Position
    event: ComparisonRecorded


class Pending(Frozen):
    state: Literal["pending"] = "pending"
    half: OperationRecorded
    partition: int
    arrived: float
    due: float


class Decided(Frozen):
    state: Literal["decided"] = "decided"
    #: pool -> event id of every half that took part (a late half included).
    halves: dict[Pool, str]
    emissions: tuple[Emission, ...]
    partition: int
    forget_at: float
    #: Every half that took part: what the health windows counted, so a restarted worker
    #: rebuilds its open windows from the slots alone (stored without results: ``bare``).
    executions: tuple[OperationRecorded, ...] = ()

    @property
    def comparison(self) -> ComparisonRecorded:
        return self.emissions[0].event


Slot = Annotated[Pending | Decided, Field(discriminator="state")]
_SLOT: TypeAdapter[Pending | Decided] = TypeAdapter(Slot)


def bare(half: OperationRecorded) -> OperationRecorded:
    """The half without its result: all the health windows read of it, a fraction of its size."""
    return half if half.result is None else half.model_copy(update={"result": None})


def counted(
    slot: Pending | Decided,
) -> tuple[tuple[OperationRecorded, ...], tuple[ComparisonRecorded, ...]]:
    """The executions and the (not late) comparisons the health windows counted for a slot.

    Every half a slot holds was counted once when it arrived (a duplicate never reaches a
    slot), and every comparison it emitted once when it was emitted: the windows of a
    partition are the fold of its slots, which is how they survive a crash exactly.
    """
    if isinstance(slot, Pending):
        return (slot.half,), ()
    return slot.executions, tuple(e.event for e in slot.emissions if not e.event.late)


#: What a decided slot's executions lose on the way to the table: their results.
_BARE: dict[str, object] = {"executions": {"__all__": {"result"}}}


def encode_slot(slot: Pending | Decided) -> bytes:
    """The table's form of a slot: a decided slot's executions go without their results."""
    if isinstance(slot, Decided):
        return slot.model_dump_json(exclude=_BARE).encode()  # type: ignore[arg-type]
    return slot.model_dump_json().encode()


def decode_slot(data: bytes) -> Pending | Decided:
    return _SLOT.validate_json(data)


class Outcome(StrEnum):
    STORED = "stored"  # first half, now pending
    PAIRED = "paired"  # second half, compared
    DUPLICATE = "duplicate"  # same event id seen before (producer retry, replay)
    LATE = "late"  # the missing half, after its timeout was emitted
    CONFLICT = "conflict"  # another execution of a pool already seen: dead-lettered
    EXPIRED = "expired"  # timeout: shadow_missing / primary_missing emitted
    FORGOTTEN = "forgotten"  # a decided slot past its memory: removed
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Step:
    """What one input did: the new slot (None = delete it) and what to publish."""

    outcome: Outcome
    slot: Pending | Decided | None
    emit: tuple[ComparisonRecorded, ...] = ()
    reason: str = ""

    @property
    def writes(self) -> bool:
        return self.outcome not in (Outcome.DUPLICATE, Outcome.CONFLICT, Outcome.UNCHANGED)


def receive(
    slot: Pending | Decided | None,
    half: OperationRecorded,
    *,
    partition: int,
    position: Position,
    arrived: float,
    at: datetime,
    timeout: float,
    keep_for: float,
    classifier: Classifier,
) -> Step:
    """One half arrives for its correlation id (``arrived`` on the stream clock)."""
    if slot is None:
        pending = Pending(half=half, partition=partition, arrived=arrived, due=arrived + timeout)
        return Step(Outcome.STORED, pending)
    if isinstance(slot, Pending):
        first = slot.half
        if first.event_id == half.event_id:
            return Step(Outcome.DUPLICATE, slot)
        if first.pool == half.pool:
            return Step(Outcome.CONFLICT, slot, reason=_conflict(half, first.event_id))
        v1, v2 = (first, half) if first.pool == "v1" else (half, first)
        comparison = _judge(v1, v2, at=at, classifier=classifier)
        decided = Decided(
            halves={"v1": v1.event_id, "v2": v2.event_id},
            emissions=(Emission(position=position, event=comparison),),
            partition=slot.partition,
            forget_at=max(arrived, slot.arrived) + keep_for,
            executions=(first, half),
        )
        return Step(Outcome.PAIRED, decided, (comparison,))
    if half.event_id in slot.halves.values():
        return Step(Outcome.DUPLICATE, slot)
    if half.pool in slot.halves:
        return Step(Outcome.CONFLICT, slot, reason=_conflict(half, slot.halves[half.pool]))
    marker = late_marker(half, at=at, classifier=classifier)
    late = slot.model_copy(
        update={
            "halves": {**slot.halves, half.pool: half.event_id},
            "emissions": (*slot.emissions, Emission(position=position, event=marker)),
            "executions": (*slot.executions, half),
        }
    )
    return Step(Outcome.LATE, late, (marker,))


def _judge(
    v1: OperationRecorded, v2: OperationRecorded, *, at: datetime, classifier: Classifier
) -> ComparisonRecorded:
    """Compare the halves, unless one is a shadow the runner skipped: then the other is alone.

    A skipped shadow (breaker open, queue full) is a record that the shadow was not run, not
    an answer: its pair is ``shadow_missing`` at once, rather than after the timeout.
    """
    for skipped, present in ((v2, v1), (v1, v2)):
        if is_skipped_shadow(skipped):
            return classifier.missing(present, at=at)
    return classifier.compare(v1, v2, at=at)


def expire(
    slot: Pending | Decided | None,
    *,
    now: float,
    position: Position,
    at: datetime,
    keep_for: float,
    classifier: Classifier,
) -> Step:
    """The stream clock reached ``now``: time out a pending half, forget an old decision."""
    if isinstance(slot, Pending) and now >= slot.due:
        comparison = classifier.missing(slot.half, at=at)
        decided = Decided(
            halves={slot.half.pool: slot.half.event_id},
            emissions=(Emission(position=position, event=comparison),),
            partition=slot.partition,
            forget_at=slot.due + keep_for,
            executions=(slot.half,),
        )
        return Step(Outcome.EXPIRED, decided, (comparison,))
    if isinstance(slot, Decided) and now >= slot.forget_at:
        return Step(Outcome.FORGOTTEN, None)
    return Step(Outcome.UNCHANGED, slot)


def late_marker(
    half: OperationRecorded, *, at: datetime, classifier: Classifier
) -> ComparisonRecorded:
    """The record of a half that arrived after its timeout: never a second comparison.

    The comparison engine's late form (same ``comparison_id`` and category as the timed-out
    comparison, ``late=True``, the late half's own figures) with an ``event_id`` of its own,
    so a store keyed by event id keeps it beside the original while a consumer deduplicating
    by comparison id still sees one comparison per correlation id.
    """
    marker = classifier.missing(half, at=at, late=True)
    return marker.model_copy(update={"event_id": f"{marker.comparison_id}:late", "late": True})


def _conflict(half: OperationRecorded, seen: str) -> str:
    return (
        f"correlation_id {half.correlation_id!r} already has a {half.pool} execution "
        f"(event_id {seen!r}); this one (event_id {half.event_id!r}) cannot be paired"
    )
