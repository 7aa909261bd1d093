"""The V2 circuit breaker: a pure state machine with time passed in.

Closed: every request may go to V2; ``failure_threshold`` consecutive failures open it.
Open: nothing goes to V2 (routers send V2-bound traffic to V1, reason ``CIRCUIT_OPEN``) until
``open_timeout`` has passed; then it is half-open. Half-open: at most ``half_open_trials``
trial requests are in flight at once; ``success_threshold`` successes close it, any failure
opens it again for another ``open_timeout``.

Every transition is returned as a ``BreakerStateChanged`` event (ids derived from the
breaker's name, its transition count and the time, so they are deterministic), and nothing
here reads a clock: the caller passes ``now``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from ledger.events import BreakerStateChanged

__all__ = [
    "Admission",
    "BreakerConfig",
    "BreakerState",
    "CircuitBreaker",
    "Recorded",
    "allow",
    "initial_state",
    "record",
]

Status = Literal["closed", "open", "half_open"]


class BreakerConfig(BaseModel):
    """Thresholds; defaults from the migration design."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    failure_threshold: int = Field(default=5, ge=1)
    success_threshold: int = Field(default=3, ge=1)
    open_timeout: timedelta = timedelta(seconds=60)
    half_open_trials: int = Field(default=3, ge=1)


class BreakerState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    status: Status = "closed"
    consecutive_failures: int = 0
    opened_at: datetime | None = None
    trials_in_flight: int = 0
    half_open_successes: int = 0
    #: Transitions so far: part of each event's id.
    transitions: int = 0

    def retry_at(self, config: BreakerConfig) -> datetime | None:
        """While open: when trial requests are let through again."""
        if self.status != "open" or self.opened_at is None:
            return None
        return self.opened_at + config.open_timeout


class Admission(NamedTuple):
    allowed: bool
    state: BreakerState
    events: list[BreakerStateChanged]


class Recorded(NamedTuple):
    state: BreakerState
    events: list[BreakerStateChanged]


def initial_state(name: str = "v2") -> BreakerState:
    return BreakerState(name=name)


def _moved(
    state: BreakerState, config: BreakerConfig, to: BreakerState, reason: str, now: datetime
) -> tuple[BreakerState, BreakerStateChanged]:
    to = to.model_copy(update={"transitions": state.transitions + 1})
    seed = f"{state.name}|{to.transitions}|{state.status}|{to.status}|{now.isoformat()}"
    event = BreakerStateChanged(
        event_id="breaker-" + hashlib.sha256(seed.encode()).hexdigest()[:32],
        breaker=state.name,
        previous=state.status,
        current=to.status,
        reason=reason,
        consecutive_failures=to.consecutive_failures,
        half_open_successes=to.half_open_successes,
        retry_at=to.retry_at(config),
        at=now,
    )
    return to, event


def allow(state: BreakerState, config: BreakerConfig, now: datetime) -> Admission:
    """May this request go to V2? Admitting a half-open trial counts it as in flight."""
    events: list[BreakerStateChanged] = []
    if state.status == "open":
        retry_at = state.retry_at(config)
        if retry_at is not None and now < retry_at:
            return Admission(False, state, events)
        half_open = BreakerState(name=state.name, status="half_open")
        state, event = _moved(state, config, half_open, "open timeout elapsed: trying V2", now)
        events.append(event)
    if state.status == "half_open":
        if state.trials_in_flight >= config.half_open_trials:
            return Admission(False, state, events)
        state = state.model_copy(update={"trials_in_flight": state.trials_in_flight + 1})
    return Admission(True, state, events)


def record(state: BreakerState, config: BreakerConfig, now: datetime, *, success: bool) -> Recorded:
    """Count the outcome of a request that went to V2."""
    if state.status == "open":
        # Answers of requests admitted before it opened change nothing: it is already open.
        return Recorded(state, [])
    if state.status == "closed":
        if success:
            if state.consecutive_failures == 0:
                return Recorded(state, [])
            return Recorded(state.model_copy(update={"consecutive_failures": 0}), [])
        failures = state.consecutive_failures + 1
        if failures < config.failure_threshold:
            return Recorded(state.model_copy(update={"consecutive_failures": failures}), [])
        opened = BreakerState(
            name=state.name, status="open", consecutive_failures=failures, opened_at=now
        )
        moved, event = _moved(state, config, opened, f"{failures} consecutive V2 failures", now)
        return Recorded(moved, [event])
    # half open
    in_flight = max(state.trials_in_flight - 1, 0)
    if not success:
        opened = BreakerState(name=state.name, status="open", consecutive_failures=1, opened_at=now)
        moved, event = _moved(state, config, opened, "a half-open trial failed", now)
        return Recorded(moved, [event])
    successes = state.half_open_successes + 1
    if successes < config.success_threshold:
        return Recorded(
            state.model_copy(
                update={"half_open_successes": successes, "trials_in_flight": in_flight}
            ),
            [],
        )
    closed = BreakerState(name=state.name, status="closed", half_open_successes=successes)
    moved, event = _moved(state, config, closed, f"{successes} half-open trials succeeded", now)
    # The event keeps the count that closed it; the closed state starts afresh.
    return Recorded(moved.model_copy(update={"half_open_successes": 0}), [event])


class CircuitBreaker:
    """The breaker as an object for a router: the state kept here, under a lock (routers call
    from many threads), every transition handed to ``on_event`` (e.g. a publisher)."""

    def __init__(
        self,
        name: str = "v2",
        config: BreakerConfig | None = None,
        on_event: Callable[[BreakerStateChanged], None] | None = None,
    ) -> None:
        self.config = config or BreakerConfig()
        self.on_event = on_event
        self._state = initial_state(name)
        self._lock = threading.Lock()

    @property
    def state(self) -> BreakerState:
        return self._state

    def allow(self, now: datetime) -> bool:
        """May this request go to V2? (False: send it to V1, reason ``CIRCUIT_OPEN``.)"""
        with self._lock:
            allowed, self._state, events = allow(self._state, self.config, now)
        self._emit(events)
        return allowed

    def record(self, now: datetime, *, success: bool) -> None:
        with self._lock:
            self._state, events = record(self._state, self.config, now, success=success)
        self._emit(events)

    def _emit(self, events: list[BreakerStateChanged]) -> None:
        if self.on_event is not None:
            for event in events:
                self.on_event(event)
