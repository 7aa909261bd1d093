"""The shadow runner: the compatibility layer between callers and the two pools.

``ShadowRunner.run(operation, args, session_id)`` asks the router (the flag client) where the
operation goes, records that decision, runs the chosen pool on the caller's thread and gives
the caller exactly what that pool gave (its value, or its exception). When the decision says
*shadow*, the other pool runs too, in the background, under its own timeout; both executions
are published as ``OperationRecorded`` with one correlation id (roles ``primary`` and
``shadow``), so the ledger can pair and compare them.

The shadow side can never reach the caller: its exceptions, hangs (timeout) and garbage
results are recorded, nothing more. It is bounded: at most ``shadow_concurrency`` shadow
executions run and ``shadow_queue`` wait; beyond that the shadow run is dropped and counted.
A shadow callable that hangs for good keeps its worker thread (Python cannot kill a thread)
but not the caller: its timeout is recorded by a watchdog when due.

Pools are plain callables ``pool(operation, args)``: sync ones for :meth:`ShadowRunner.run`,
async ones (or sync ones returning awaitables) for :meth:`ShadowRunner.arun`. A pool signals
a failure by raising :class:`PoolError` carrying its native error object (``type``,
``message`` and whatever else it has); any other exception is recorded as
``{"type": <class name>, "message": str(exc)}``. A pool may return :class:`PoolResult` to
report its own duration and resources; the caller still gets just the value.

**Circuit breaker** (``ledger.breaker``; on by default with the design's thresholds). Before
routing, the runner asks the breaker whether V2 may be used (time from the runner's clock) and
routes with ``breaker_open`` when it may not, so V2-bound sessions go to V1 with reason
``CIRCUIT_OPEN``; a V2 shadow is not run while it is open. Every V2 execution the breaker
admitted (primary or shadow) reports exactly one outcome, so half-open trials are never left
in flight. A V2 execution *fails* for the breaker when it timed out (shadow timeout), was
cancelled, or raised an error whose canonical type (default comparison rules) is not
``python``: a program failing in its own code is the program's fault, and V1 fails it too.
Each transition (``BreakerStateChanged``) goes to ``publisher.send(<health topic>, breaker
name, event)``. The bookkeeping never reaches the caller: its errors are logged.

**Skipped shadows are recorded.** Whenever a call is routed to be shadowed but the runner does
not run the shadow — the V2 breaker is open (``circuit_open``), the shadow queue is full
(``queue_full``), the shadow waited in the queue longer than its timeout
(``queued_too_long``) or the runner is closing (``closed``) — it still publishes the shadow
half: an ``OperationRecorded`` with ``role="shadow"``, ``outcome="error"``,
``duration_ms=0`` and the error ``{"type": "shadow_skipped", "reason": <why>, "source":
"shadow_runner", "message": ...}`` (:func:`is_skipped_shadow` recognises it). So every
shadowed call yields exactly two halves, and pairing can close the pair at once instead of
holding it until its timeout. Such a half is *not an execution* of its pool: consumers must
not count it as one (no error, no latency) and pair it as the missing half it is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import heapq
import inspect
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

from pydantic import JsonValue, ValidationError

from ledger.breaker import CircuitBreaker
from ledger.breaker import allow as breaker_allow
from ledger.comparison import RuleSet, load_rules
from ledger.events import (
    RUNNER_SOURCE,
    SHADOW_SKIPPED,
    BreakerStateChanged,
    DecisionReason,
    OperationError,
    OperationRecorded,
    Pool,
    Resources,
    RolloutDecided,
    is_skipped_shadow,
)
from ledger.settings import Settings
from producers.publisher import EventSink, from_micros, to_micros

__all__ = [
    "PROGRAM_ERRORS",
    "RUNNER_SOURCE",
    "SHADOW_SKIPPED",
    "Clock",
    "PoolCallable",
    "PoolError",
    "PoolResult",
    "Route",
    "Router",
    "ShadowRunner",
    "ShadowStats",
    "SkipReason",
    "args_digest",
    "is_skipped_shadow",
]

log = logging.getLogger(__name__)

#: Wall-clock time for event timestamps (durations always come from ``time.monotonic``).
Clock = Callable[[], datetime]
PoolCallable = Callable[[str, Mapping[str, Any]], Any]
#: Canonical error types that are the program's fault, not V2's: they never trip the breaker.
PROGRAM_ERRORS: Final = frozenset({"python"})
#: Why a shadow was skipped: ``error.reason`` of a ``shadow_skipped`` record.
SkipReason = Literal["circuit_open", "queue_full", "queued_too_long", "closed"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    # 128 random bits as 32 hex digits, like uuid4().hex, at a fifth of its cost.
    return os.urandom(16).hex()


class PoolError(Exception):
    """Raised by a pool callable: the execution failed with this native error object."""

    def __init__(
        self,
        native: Mapping[str, Any],
        *,
        duration_ms: float | None = None,
        resources: Resources | None = None,
    ) -> None:
        super().__init__(native.get("message", native.get("type", "pool error")))
        self.native = dict(native)
        self.duration_ms = duration_ms
        self.resources = resources


@dataclass(frozen=True, slots=True)
class PoolResult:
    """What a pool may return instead of a bare value, to report what it measured."""

    value: Any
    duration_ms: float | None = None
    resources: Resources | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """Where one operation goes: the recorded decision, and whether to shadow it."""

    decision: RolloutDecided
    shadow: bool


class Router(Protocol):
    """What the runner needs from the flag client (one consistent snapshot per call)."""

    def route(
        self,
        session_id: str | None,
        *,
        correlation_id: str,
        environment: str | None = None,
        breaker_open: bool = False,
    ) -> Route: ...


@dataclass(frozen=True, slots=True)
class ShadowStats:
    runs: int
    routed_v1: int
    routed_v2: int
    primary_errors: int
    shadow_started: int
    #: Shadow runs not started because the shadow queue was full.
    shadow_dropped: int
    shadow_timeouts: int
    #: Shadow executions recorded with outcome ``error`` (timeouts included).
    shadow_errors: int
    #: Shadow executions that finished after their timeout had been recorded.
    shadow_late: int
    #: Routing failures: the operation went to V1 without a shadow.
    routing_errors: int
    #: Executions that could not be recorded at all (see the log).
    record_errors: int
    #: Decisions the breaker turned from V2 to V1 (reason ``CIRCUIT_OPEN``).
    circuit_open: int = 0
    #: V2 shadow runs not started because the breaker was open.
    shadow_circuit_open: int = 0
    #: Breaker transitions (each one a ``BreakerStateChanged``).
    breaker_transitions: int = 0
    #: ``closed`` / ``open`` / ``half_open``; None without a breaker.
    breaker_state: str | None = None


@dataclass
class _Counters:
    runs: int = 0
    routed_v1: int = 0
    routed_v2: int = 0
    primary_errors: int = 0
    shadow_started: int = 0
    shadow_dropped: int = 0
    shadow_timeouts: int = 0
    shadow_errors: int = 0
    shadow_late: int = 0
    routing_errors: int = 0
    record_errors: int = 0
    circuit_open: int = 0
    shadow_circuit_open: int = 0
    breaker_transitions: int = 0


def args_digest(args: Mapping[str, Any]) -> str | None:
    """A short stable digest of the arguments, so halves can be checked to be the same call."""
    try:
        text = json.dumps(args, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return None
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _json_safe(value: Any) -> JsonValue:
    """A JSON-shaped copy of ``value`` (tuples become lists, unknown objects their repr)."""
    return json.loads(json.dumps(value, default=repr))  # type: ignore[no-any-return]


@dataclass
class _Execution:
    """One execution of one pool, in the making."""

    correlation_id: str
    session_id: str | None
    environment: str | None
    operation: str
    pool: Pool
    role: Literal["primary", "shadow"]
    #: The digest, or the arguments to digest where the event is built (see ``Draft``).
    digest: str | Mapping[str, Any] | None
    started_at: datetime
    started: float = field(default_factory=time.monotonic)
    #: The routing decision, when it goes out with this (primary) execution's record.
    decision: RolloutDecided | None = None

    def draft(
        self,
        outcome: str,
        result: Any,
        error: Mapping[str, Any] | None,
        duration_ms: float,
        resources: Resources | None,
    ) -> Draft:
        return (
            self.correlation_id,
            self.session_id,
            self.environment,
            self.operation,
            self.pool,
            self.role,
            self.digest,
            to_micros(self.started_at),
            outcome,
            result,
            error,
            duration_ms,
            None if resources is None else dict(resources.__dict__),
        )


@dataclass
class _ShadowJob:
    execution: _Execution
    pool: PoolCallable
    args: Mapping[str, Any]
    submitted: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: bool = False
    timed_out: bool = False


#: An execution ready to be recorded, as plain values (cheap to pickle): correlation id,
#: session id, environment, operation, pool, role, args digest (or the arguments, digested
#: where the event is built), started at (µs since the epoch, UTC), outcome, result, error
#: object, duration (ms), resources (dict or None).
Draft = tuple[
    str,
    str | None,
    str | None,
    str,
    str,
    str,
    str | Mapping[str, Any] | None,
    int,
    str,
    Any,
    Mapping[str, Any] | None,
    float,
    Mapping[str, Any] | None,
]


def _is_skip(error: Mapping[str, Any] | None) -> bool:
    return error is not None and error.get("type") == SHADOW_SKIPPED


def build_operation(draft: Draft, new_id: Callable[[], str]) -> OperationRecorded | None:
    """The ``OperationRecorded`` of a draft; None (logged) when not even its error can be.

    A result that is not JSON, or an error object without type/message, is still recorded,
    as an error of its own kind (``invalid_result`` / ``invalid_error``), so the ledger shows
    it. Runs on the runner's threads, or in the publisher's process for a draft publisher.
    """
    outcome, result, error = draft[8], draft[9], draft[10]
    try:
        return _event(draft, outcome, result, error, new_id)
    except (ValidationError, TypeError, ValueError) as exc:
        try:
            return _event(
                draft,
                "error",
                None,
                {
                    "type": "invalid_result" if outcome == "ok" else "invalid_error",
                    "message": _first_line(exc),
                    "python_type": type(result if outcome == "ok" else error).__name__,
                },
                new_id,
            )
        except Exception:
            log.exception("shadow runner: cannot record %s", draft[0])
            return None


def _event(
    draft: Draft,
    outcome: str,
    result: Any,
    error: Mapping[str, Any] | None,
    new_id: Callable[[], str],
) -> OperationRecorded:
    try:
        return _build(draft, outcome, result, error, new_id)
    except ValidationError:
        # Tuples, numpy scalars and the like: retry once with a JSON-shaped copy.
        safe_result = _json_safe(result) if result is not None else None
        safe_error = _json_safe(dict(error)) if error is not None else None
        if not isinstance(safe_error, dict | None):
            raise
        return _build(draft, outcome, safe_result, safe_error, new_id)


def _build(
    draft: Draft,
    outcome: str,
    result: Any,
    error: Mapping[str, Any] | None,
    new_id: Callable[[], str],
) -> OperationRecorded:
    native_error = None
    if error is not None:
        native = dict(error)
        native.setdefault("type", "unknown_error")
        native["message"] = str(native.get("message", ""))
        native_error = OperationError.model_validate(native)
        json.dumps(native_error.model_extra or {})  # extras must be JSON too
    resources = draft[12]
    return OperationRecorded(
        event_id=new_id(),
        correlation_id=draft[0],
        session_id=draft[1],
        pool=draft[4],  # type: ignore[arg-type]
        role=draft[5],  # type: ignore[arg-type]
        operation=draft[3],
        outcome=outcome,  # type: ignore[arg-type]
        result=result,
        error=native_error,
        started_at=from_micros(draft[7]),
        duration_ms=max(0.0, float(draft[11])),
        environment=draft[2],
        args_digest=digest if isinstance(digest := draft[6], str | None) else args_digest(digest),
        resources=Resources.model_validate(resources) if resources is not None else None,
    )


class ShadowRunner:
    """Routes, runs, shadows and records operations. Thread-safe; one per process is enough.

    ``v1`` and ``v2`` are the pools; ``router`` is usually a :class:`~producers.flag_client.
    FlagClient`; ``publisher`` anything with ``publish(event)`` (and ``send(topic, key,
    event)`` for the breaker's transitions). ``breaker``: the default is a
    :class:`~ledger.breaker.CircuitBreaker` with the design's thresholds; None turns it off.
    ``health_topic``: where transitions go (default: the publisher's ``settings.topic("health")``).
    """

    def __init__(
        self,
        v1: PoolCallable,
        v2: PoolCallable,
        router: Router,
        publisher: EventSink,
        *,
        shadow_timeout: float = 5.0,
        shadow_concurrency: int = 8,
        shadow_queue: int = 64,
        environment: str | None = None,
        clock: Clock = _utc_now,
        new_id: Callable[[], str] = _new_id,
        breaker: CircuitBreaker | Literal["default"] | None = "default",
        health_topic: str | None = None,
        rules: RuleSet | None = None,
    ) -> None:
        self._pools: dict[Pool, PoolCallable] = {"v1": v1, "v2": v2}
        self._router = router
        self._publisher = publisher
        self.shadow_timeout = shadow_timeout
        self._concurrency = shadow_concurrency
        self._capacity = shadow_concurrency + shadow_queue
        self._environment = environment
        self._clock = clock
        self._new_id = new_id
        self._lock = threading.Lock()
        self._counters = _Counters()
        self._admitted = 0  # shadow jobs queued or running (sync)
        self._executor: ThreadPoolExecutor | None = None
        self._watchdog: _Watchdog | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._breaker = CircuitBreaker() if breaker == "default" else breaker
        self._health_topic = health_topic or _health_topic_of(publisher)
        self._rules = rules
        #: ``publisher.record_draft``: the event is then built in the publisher's process.
        self._record_draft: Callable[[Draft, RolloutDecided | None], None] | None = getattr(
            publisher, "record_draft", None
        )
        #: A publisher whose process runs the shadows (``ProcessPublisher(pools=...)``).
        self._shadow_host: ShadowHost | None = (
            publisher if getattr(publisher, "runs_shadows", False) else None  # type: ignore[assignment]
        )
        self._host_key = f"{id(self):x}-{_new_id()[:8]}"
        self._host_final: ShadowStats | None = None
        if self._shadow_host is not None:
            self._shadow_host.open_shadows(
                self._host_key,
                {
                    "shadow_timeout": shadow_timeout,
                    "shadow_concurrency": shadow_concurrency,
                    "shadow_queue": shadow_queue,
                },
            )
        if self._breaker is not None:
            self._rules = rules or load_rules()
            chained = self._breaker.on_event

            def on_event(event: BreakerStateChanged) -> None:
                self._breaker_changed(event)
                if chained is not None:
                    chained(event)

            self._breaker.on_event = on_event

    # -- the caller's side ----------------------------------------------------------------

    def run(
        self,
        operation: str,
        args: Mapping[str, Any],
        session_id: str | None,
        environment: str | None = None,
        *,
        correlation_id: str | None = None,
    ) -> Any:
        """Run ``operation`` on the routed pool; return its value or raise its exception."""
        start = self._submit_shadow if self._shadow_host is None else self._send_shadow
        execution = self._begin(operation, args, session_id, environment, correlation_id, start)
        primary = execution.pool
        try:
            answer = self._pools[primary](operation, args)
        except BaseException as exc:
            self._count(primary_errors=1)
            self._record_failure(execution, exc)
            self._breaker_outcome(primary, exc)
            raise
        self._breaker_outcome(primary, None)
        value = self._record_answer(execution, answer)
        return value

    async def arun(
        self,
        operation: str,
        args: Mapping[str, Any],
        session_id: str | None,
        environment: str | None = None,
        *,
        correlation_id: str | None = None,
    ) -> Any:
        """:meth:`run` for async pools; the shadow runs as a task on the same event loop."""
        execution = self._begin(
            operation, args, session_id, environment, correlation_id, self._start_shadow_task
        )
        primary = execution.pool
        try:
            answer = self._pools[primary](operation, args)
            if inspect.isawaitable(answer):
                answer = await answer
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self._count(primary_errors=1)
                self._record_failure(execution, exc)
            # A cancelled V2 call is a failure for the breaker too (see the module's notes).
            self._breaker_outcome(primary, exc)
            raise
        self._breaker_outcome(primary, None)
        return self._record_answer(execution, answer)

    @property
    def stats(self) -> ShadowStats:
        """Counters; with shadows in the publisher's process, theirs added (a round trip)."""
        state = self._breaker.state.status if self._breaker is not None else None
        with self._lock:
            own = ShadowStats(**vars(self._counters), breaker_state=state)
        hosted = self._host_final
        if hosted is None and self._shadow_host is not None:
            hosted = self._shadow_host.shadow_stats(self._host_key)[0]
        return own if hosted is None else _merged(own, hosted)

    @property
    def breaker(self) -> CircuitBreaker | None:
        return self._breaker

    @property
    def shadows_in_flight(self) -> int:
        with self._lock:
            here = self._admitted + len(self._tasks)
        if self._shadow_host is not None and self._host_final is None:
            here += self._shadow_host.shadow_stats(self._host_key)[1]
        return here

    def close(self, timeout: float = 5.0) -> ShadowStats:
        """Wait up to ``timeout`` for running shadows to finish (hung ones are abandoned)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closed = True
        if self._shadow_host is not None and self._host_final is None:
            self._host_final = self._shadow_host.close_shadows(self._host_key, timeout)
            self._apply_host_outcomes()
        while self.shadows_in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._watchdog is not None:
            self._watchdog.stop()
        return self.stats

    async def aclose(self, timeout: float = 5.0) -> ShadowStats:
        """Wait for shadow tasks of ``arun``, cancel what is left after ``timeout``."""
        tasks = set(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
        return self.close(timeout=0)

    # -- routing ----------------------------------------------------------------------------

    def _begin(
        self,
        operation: str,
        args: Mapping[str, Any],
        session_id: str | None,
        environment: str | None,
        correlation_id: str | None,
        start_shadow: Callable[
            [Pool, str, Mapping[str, Any], Route, str | Mapping[str, Any] | None], None
        ],
    ) -> _Execution:
        """Route, start the shadow if routed so (threads or a task: ``start_shadow``), and
        open the primary's execution: the same first steps for :meth:`run` and :meth:`arun`."""
        environment = environment or self._environment
        route, published = self._route(session_id, correlation_id or self._new_id(), environment)
        primary = route.decision.pool
        # A draft publisher digests the arguments in its own process.
        digest = args if self._record_draft is not None else args_digest(args)
        if route.shadow:
            start_shadow(_other(primary), operation, args, route, digest)
        execution = self._execution(route, operation, primary, "primary", digest)
        if not published:
            execution.decision = route.decision  # goes out with the primary's record
        return execution

    def _route(
        self, session_id: str | None, correlation_id: str, environment: str | None
    ) -> tuple[Route, bool]:
        """The decision, with the breaker consulted: a V2 primary is admitted by the breaker.

        Also says whether the decision is recorded already: a draft publisher gets it with
        the primary's record instead, in one write.
        """
        published = True
        if self._shadow_host is not None:
            self._apply_host_outcomes()
        try:
            open_ = self._breaker_refuses()
            route = self._ask(session_id, correlation_id, environment, breaker_open=open_)
            if route.decision.pool == "v2" and not self._breaker_admits():
                # Another thread took the last half-open trial since we looked: decide again.
                route = self._ask(session_id, correlation_id, environment, breaker_open=True)
        except Exception:
            # The caller must be served even when routing is broken: V1, no shadow.
            log.exception("shadow runner: routing failed; sending %s to v1", correlation_id)
            self._count(routing_errors=1)
            route = Route(
                RolloutDecided(
                    event_id=self._new_id(),
                    flag="unknown",
                    session_id=session_id,
                    correlation_id=correlation_id,
                    environment=environment,
                    pool="v1",
                    reason=DecisionReason.DISABLED,
                    flag_version=0,
                    at=self._clock(),
                ),
                shadow=False,
            )
        else:
            if self._record_draft is None:
                self._publish(route.decision)
            else:
                published = False
        if route.decision.pool == "v1":
            circuit_open = int(route.decision.reason == DecisionReason.CIRCUIT_OPEN)
            self._count(runs=1, routed_v1=1, circuit_open=circuit_open)
        else:
            self._count(runs=1, routed_v2=1)
        return route, published

    def _ask(
        self,
        session_id: str | None,
        correlation_id: str,
        environment: str | None,
        *,
        breaker_open: bool,
    ) -> Route:
        # ``breaker_open`` is passed only when it says something, so routers written before
        # the breaker keep working while it is closed.
        extra = {"breaker_open": True} if breaker_open else {}
        return self._router.route(
            session_id, correlation_id=correlation_id, environment=environment, **extra
        )

    # -- the circuit breaker ------------------------------------------------------------------

    def _breaker_refuses(self) -> bool:
        """Would the breaker refuse V2 now? A look only (pure): nothing admitted, no transition."""
        breaker = self._breaker
        if breaker is None:
            return False
        try:
            return not breaker_allow(breaker.state, breaker.config, self._clock()).allowed
        except Exception:
            log.exception("shadow runner: breaker look failed; V2 allowed")
            return False

    def _breaker_admits(self) -> bool:
        """Admit one V2 execution (it must then report one outcome to ``_breaker_outcome``)."""
        if self._breaker is None:
            return True
        try:
            return self._breaker.allow(self._clock())
        except Exception:
            log.exception("shadow runner: breaker admission failed; V2 allowed")
            return True

    def _breaker_outcome(
        self, pool: Pool, exc: BaseException | None, *, failed: bool = False
    ) -> None:
        """Count an admitted V2 execution's outcome; never raises (the caller is waiting)."""
        if pool != "v2" or self._breaker is None:
            return
        try:
            failure = failed or (exc is not None and self._is_v2_failure(exc))
            self._breaker.record(self._clock(), success=not failure)
        except Exception:
            log.exception("shadow runner: breaker bookkeeping failed")

    def _is_v2_failure(self, exc: BaseException) -> bool:
        if not isinstance(exc, Exception):  # cancelled, interrupted: V2 gave no answer
            return True
        native = exc.native if isinstance(exc, PoolError) else {"type": type(exc).__name__}
        try:
            error = OperationError.model_validate(
                {
                    **native,
                    "type": str(native.get("type") or "unknown_error"),
                    "message": str(native.get("message", "")),
                }
            )
            assert self._rules is not None
            return self._rules.canonical_error("v2", error) not in PROGRAM_ERRORS
        except Exception:
            return True  # an error that cannot even be classified is V2's

    def _breaker_changed(self, event: BreakerStateChanged) -> None:
        self._count(breaker_transitions=1)
        log.warning(
            "shadow runner: breaker %s %s -> %s (%s)",
            event.breaker,
            event.previous,
            event.current,
            event.reason,
        )
        send = getattr(self._publisher, "send", None)
        if send is None or self._health_topic is None:
            log.warning("shadow runner: breaker transition %s not published", event.event_id)
            return
        try:
            send(self._health_topic, event.breaker, event)
        except Exception:
            log.exception("shadow runner: publisher refused %s", event.event_id)
            self._count(record_errors=1)

    # -- recording --------------------------------------------------------------------------

    def _execution(
        self,
        route: Route,
        operation: str,
        pool: Pool,
        role: Literal["primary", "shadow"],
        digest: str | Mapping[str, Any] | None,
    ) -> _Execution:
        decision = route.decision
        return _Execution(
            correlation_id=decision.correlation_id,
            session_id=decision.session_id,
            environment=decision.environment,
            operation=operation,
            pool=pool,
            role=role,
            digest=digest,
            started_at=self._clock(),
        )

    def _record_answer(self, execution: _Execution, answer: Any) -> Any:
        elapsed_ms = (time.monotonic() - execution.started) * 1000.0
        if isinstance(answer, PoolResult):
            value, duration, resources = answer.value, answer.duration_ms, answer.resources
        else:
            value, duration, resources = answer, None, None
        self._record(
            execution,
            outcome="ok",
            result=value,
            error=None,
            duration_ms=elapsed_ms if duration is None else duration,
            resources=resources,
        )
        return value

    def _record_failure(self, execution: _Execution, exc: BaseException) -> None:
        elapsed_ms = (time.monotonic() - execution.started) * 1000.0
        duration, resources = elapsed_ms, None
        if isinstance(exc, PoolError):
            native: dict[str, Any] = exc.native
            duration = elapsed_ms if exc.duration_ms is None else exc.duration_ms
            resources = exc.resources
        else:
            native = {"type": type(exc).__name__, "message": str(exc)}
        self._record(
            execution,
            outcome="error",
            result=None,
            error=native,
            duration_ms=duration,
            resources=resources,
        )

    def _record(
        self,
        execution: _Execution,
        *,
        outcome: str,
        result: Any,
        error: Mapping[str, Any] | None,
        duration_ms: float,
        resources: Resources | None,
    ) -> None:
        """Hand one execution over to be recorded; never raises (the caller is waiting).

        With a publisher that takes drafts (:class:`~producers.publisher.ProcessPublisher`)
        the event is built and encoded in its process: this thread only packs a tuple.
        """
        if execution.role == "shadow" and outcome == "error" and not _is_skip(error):
            self._count(shadow_errors=1)
        try:
            draft = execution.draft(outcome, result, error, duration_ms, resources)
        except Exception:  # a clock giving naive datetimes, say: nothing can be recorded
            log.exception("shadow runner: cannot record %s", execution.correlation_id)
            self._count(record_errors=1)
            return
        decision, execution.decision = execution.decision, None
        if self._record_draft is not None:
            try:
                self._record_draft(draft, decision)
                return
            except Exception:  # a result that does not pickle: build the event here
                log.debug("shadow runner: draft refused, recording here", exc_info=True)
        if decision is not None:
            self._publish(decision)
        event = build_operation(draft, self._new_id)
        if event is None:
            self._count(record_errors=1)
            return
        self._publish(event)

    def _publish(self, event: OperationRecorded | RolloutDecided) -> None:
        try:
            self._publisher.publish(event)
        except Exception:
            log.exception("shadow runner: publisher refused %s", event.event_id)
            self._count(record_errors=1)

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, amount in increments.items():
                setattr(self._counters, name, getattr(self._counters, name) + amount)

    # -- the shadow side (threads) ------------------------------------------------------------

    def _submit_shadow(
        self,
        pool: Pool,
        operation: str,
        args: Mapping[str, Any],
        route: Route,
        digest: str | Mapping[str, Any] | None,
    ) -> None:
        if pool == "v2" and self._breaker_refuses():
            self._count(shadow_circuit_open=1)
            self._record_skipped(route, operation, pool, digest, "circuit_open")
            return
        self._submit_execution(self._execution(route, operation, pool, "shadow", digest), args)

    def _submit_execution(self, execution: _Execution, args: Mapping[str, Any]) -> None:
        """Queue one shadow execution on the shadow threads (or record why it was not)."""
        with self._lock:
            skipped: SkipReason | None = None
            if self._closed:
                skipped = "closed"
            elif self._admitted >= self._capacity:
                skipped = "queue_full"
            if skipped is not None:
                self._counters.shadow_dropped += 1
        if skipped is not None:
            self._skip(execution, skipped)
            return
        with self._lock:
            self._admitted += 1
            self._counters.shadow_started += 1
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self._concurrency, thread_name_prefix="shadow"
                )
                self._watchdog = _Watchdog(self._expire)
        job = _ShadowJob(
            execution=execution,
            pool=self._pools[execution.pool],
            args=args,
            submitted=time.monotonic(),
        )
        try:
            self._executor.submit(self._run_shadow, job)
        except RuntimeError:  # executor shut down by close() meanwhile
            with self._lock:
                self._admitted -= 1
                self._counters.shadow_dropped += 1
            self._skip(job.execution, "closed")

    def _send_shadow(
        self,
        pool: Pool,
        operation: str,
        args: Mapping[str, Any],
        route: Route,
        digest: str | Mapping[str, Any] | None,
    ) -> None:
        """Hand the shadow to the publisher's process, which runs and records it there."""
        if pool == "v2" and self._breaker_refuses():
            self._count(shadow_circuit_open=1)
            self._record_skipped(route, operation, pool, digest, "circuit_open")
            return
        with self._lock:
            closed = self._closed
        if closed:
            self._count(shadow_dropped=1)
            self._record_skipped(route, operation, pool, digest, "closed")
            return
        execution = self._execution(route, operation, pool, "shadow", digest)
        request = (
            execution.correlation_id,
            execution.session_id,
            execution.environment,
            operation,
            pool,
            digest if isinstance(digest, str | None) else None,  # None: digested there
            pool == "v2" and self._breaker is not None,  # report the outcome back
        )
        try:
            assert self._shadow_host is not None
            self._shadow_host.submit_shadow(self._host_key, request, args)
        except Exception:  # arguments that do not pickle: run it here
            log.debug("shadow runner: shadow not handed over, running it here", exc_info=True)
            self._submit_shadow(pool, operation, args, route, digest)

    def _apply_host_outcomes(self) -> None:
        """Outcomes of V2 shadows run in the publisher's process, for the breaker."""
        assert self._shadow_host is not None
        try:
            failures = self._shadow_host.breaker_outcomes(self._host_key)
        except Exception:
            log.exception("shadow runner: could not read the shadows' outcomes")
            return
        for failed in failures:
            self._breaker_outcome("v2", None, failed=failed)

    def _shadow_outcome(
        self, execution: _Execution, exc: BaseException | None, *, failed: bool = False
    ) -> None:
        self._breaker_outcome(execution.pool, exc, failed=failed)

    def _run_shadow(self, job: _ShadowJob) -> None:
        try:
            if time.monotonic() - job.submitted > self.shadow_timeout:
                # Queued longer than it may take: its primary half is long recorded and the
                # pairing would wait for nothing useful. Dropped, like a full queue.
                self._count(shadow_dropped=1, shadow_started=-1)
                self._skip(job.execution, "queued_too_long")
                return
            execution = job.execution
            if execution.pool == "v2" and not self._breaker_admits():
                self._count(shadow_circuit_open=1, shadow_started=-1)
                self._skip(execution, "circuit_open")
                return
            execution.started_at = self._clock()
            execution.started = time.monotonic()
            assert self._watchdog is not None
            self._watchdog.watch(execution.started + self.shadow_timeout, job)
            try:
                answer = job.pool(execution.operation, job.args)
            except BaseException as exc:
                if self._finish(job):
                    self._shadow_outcome(execution, exc)
                    self._record_failure(execution, exc)
            else:
                if self._finish(job):
                    self._shadow_outcome(execution, None)
                    self._record_answer(execution, answer)
        except BaseException:  # nothing from the shadow side may escape, not even a bug here
            log.exception("shadow runner: shadow execution failed to record")
            self._count(record_errors=1)
        finally:
            with self._lock:
                self._admitted -= 1

    def _finish(self, job: _ShadowJob) -> bool:
        """Mark the job finished; False when its timeout was already recorded."""
        with job.lock:
            job.finished = True
            if job.timed_out:
                self._count(shadow_late=1)
                return False
            return True

    def _expire(self, job: _ShadowJob) -> None:
        with job.lock:
            if job.finished:
                return
            job.timed_out = True
        self._count(shadow_timeouts=1)
        self._shadow_outcome(job.execution, None, failed=True)
        self._record_timeout(job.execution)

    def _record_skipped(
        self,
        route: Route,
        operation: str,
        pool: Pool,
        digest: str | Mapping[str, Any] | None,
        reason: SkipReason,
    ) -> None:
        self._skip(self._execution(route, operation, pool, "shadow", digest), reason)

    def _skip(self, execution: _Execution, reason: SkipReason) -> None:
        """Record a shadow not run, so pairing closes its pair now instead of at its timeout."""
        self._record(
            execution,
            outcome="error",
            result=None,
            error={
                "type": SHADOW_SKIPPED,
                "message": f"shadow execution not run: {reason.replace('_', ' ')}",
                "reason": reason,
                "source": RUNNER_SOURCE,
            },
            duration_ms=0.0,
            resources=None,
        )

    def _record_timeout(self, execution: _Execution) -> None:
        self._record(
            execution,
            outcome="error",
            result=None,
            error={
                "type": "timeout",
                "message": f"shadow execution exceeded {self.shadow_timeout:g} s",
                "source": RUNNER_SOURCE,
            },
            duration_ms=self.shadow_timeout * 1000.0,
            resources=None,
        )

    # -- the shadow side (asyncio) --------------------------------------------------------------

    def _start_shadow_task(
        self,
        pool: Pool,
        operation: str,
        args: Mapping[str, Any],
        route: Route,
        digest: str | Mapping[str, Any] | None,
    ) -> None:
        if pool == "v2" and self._breaker_refuses():
            self._count(shadow_circuit_open=1)
            self._record_skipped(route, operation, pool, digest, "circuit_open")
            return
        with self._lock:
            skipped: SkipReason | None = None
            if self._closed:
                skipped = "closed"
            elif len(self._tasks) >= self._capacity:
                skipped = "queue_full"
            if skipped is not None:
                self._counters.shadow_dropped += 1
            else:
                self._counters.shadow_started += 1
        if skipped is not None:
            self._record_skipped(route, operation, pool, digest, skipped)
            return
        execution = self._execution(route, operation, pool, "shadow", digest)
        task = asyncio.get_running_loop().create_task(
            self._run_shadow_async(execution, self._pools[pool], args)
        )
        with self._lock:
            self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        with self._lock:
            self._tasks.discard(task)

    async def _run_shadow_async(
        self, execution: _Execution, pool: PoolCallable, args: Mapping[str, Any]
    ) -> None:
        if execution.pool == "v2" and not self._breaker_admits():
            self._count(shadow_circuit_open=1, shadow_started=-1)
            self._skip(execution, "circuit_open")
            return
        execution.started_at = self._clock()
        execution.started = time.monotonic()
        try:
            answer = await asyncio.wait_for(
                _awaited(pool, execution.operation, args), self.shadow_timeout
            )
        except TimeoutError:
            self._count(shadow_timeouts=1)
            self._breaker_outcome(execution.pool, None, failed=True)
            self._record_timeout(execution)
        except asyncio.CancelledError as exc:
            self._breaker_outcome(execution.pool, exc)
            raise
        except BaseException as exc:
            self._breaker_outcome(execution.pool, exc)
            self._record_failure(execution, exc)
        else:
            self._breaker_outcome(execution.pool, None)
            self._record_answer(execution, answer)


class ShadowHost(Protocol):
    """A publisher that runs shadow executions in its own process (``ProcessPublisher``)."""

    runs_shadows: bool

    def open_shadows(self, key: str, options: Mapping[str, Any]) -> None: ...

    def submit_shadow(self, key: str, request: ShadowRequest, args: Mapping[str, Any]) -> None: ...

    def breaker_outcomes(self, key: str) -> list[bool]: ...

    def shadow_stats(self, key: str) -> tuple[ShadowStats | None, int]: ...

    def close_shadows(self, key: str, timeout: float) -> ShadowStats | None: ...


#: What a shadow host needs to run one shadow: correlation id, session id, environment,
#: operation, pool, args digest, and whether to report its outcome for the V2 breaker.
ShadowRequest = tuple[str, str | None, str | None, str, str, str | None, bool]

_HOST_COUNTERS: Final = (
    "shadow_started",
    "shadow_dropped",
    "shadow_timeouts",
    "shadow_errors",
    "shadow_late",
    "record_errors",
    "shadow_circuit_open",
)


def _merged(own: ShadowStats, hosted: ShadowStats) -> ShadowStats:
    added = {name: getattr(own, name) + getattr(hosted, name) for name in _HOST_COUNTERS}
    return dataclasses.replace(own, **added)


class HostedShadows(ShadowRunner):
    """The shadow side of a runner, in the publisher's process: runs what it is handed.

    No router and no breaker of its own: the caller's runner decided the shadow, and the
    outcome of each V2 shadow it asked about goes to ``report(failed)`` for its breaker.
    """

    def __init__(
        self,
        pools: Mapping[str, PoolCallable],
        publisher: EventSink,
        report: Callable[[bool], None],
        **options: Any,
    ) -> None:
        super().__init__(pools["v1"], pools["v2"], _NoRouter(), publisher, breaker=None, **options)
        self._rules = load_rules()
        self._report = report
        self._reporting: set[str] = set()

    def submit(self, request: ShadowRequest, args: Mapping[str, Any]) -> None:
        correlation_id, session_id, environment, operation, pool, digest, report = request
        if report:
            with self._lock:
                self._reporting.add(correlation_id)
        execution = _Execution(
            correlation_id=correlation_id,
            session_id=session_id,
            environment=environment,
            operation=operation,
            pool=pool,  # type: ignore[arg-type]
            role="shadow",
            digest=digest if digest is not None else args_digest(args),
            started_at=self._clock(),
        )
        self._submit_execution(execution, args)

    def _shadow_outcome(
        self, execution: _Execution, exc: BaseException | None, *, failed: bool = False
    ) -> None:
        with self._lock:
            asked = execution.correlation_id in self._reporting
            self._reporting.discard(execution.correlation_id)
        if asked:
            try:
                self._report(failed or (exc is not None and self._is_v2_failure(exc)))
            except Exception:
                log.exception("shadow host: could not report an outcome")


class _NoRouter:
    def route(self, session_id: str | None, **kwargs: Any) -> Route:
        raise RuntimeError("a hosted shadow runner routes nothing")


async def _awaited(pool: PoolCallable, operation: str, args: Mapping[str, Any]) -> Any:
    answer = pool(operation, args)
    if inspect.isawaitable(answer):
        answer = await answer
    return answer


def _health_topic_of(publisher: object) -> str | None:
    """The health topic of a :class:`~producers.publisher.Publisher` (its settings say it)."""
    settings = getattr(publisher, "settings", None)
    return settings.topic("health") if isinstance(settings, Settings) else None


def _other(pool: Pool) -> Pool:
    return "v2" if pool == "v1" else "v1"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


class _Watchdog:
    """One thread that records shadow timeouts when they fall due."""

    def __init__(self, expire: Callable[[_ShadowJob], None]) -> None:
        self._expire = expire
        self._heap: list[tuple[float, int, _ShadowJob]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="shadow-watchdog", daemon=True)
        self._thread.start()

    def watch(self, deadline: float, job: _ShadowJob) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._order), job))
            if self._heap[0][2] is job:
                self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    wait = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(wait)
                if self._stopped:
                    return
                _, _, job = heapq.heappop(self._heap)
            if not job.finished:
                try:
                    self._expire(job)
                except Exception:
                    log.exception("shadow runner: could not record a shadow timeout")
