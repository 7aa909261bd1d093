"""A realistic, seeded V1/V2 pool pair and the workload that drives it.

Each pool is a callable ``pool(operation, args)`` for the :class:`~producers.shadow.
ShadowRunner`: it returns a :class:`~producers.shadow.PoolResult` (value, simulated duration,
resources) or raises :class:`~producers.shadow.PoolError` with an error in *its own* native
shape, the way the two real pools differ:

* V1 wraps answers as ``{"status": "ok", "data": {...}}``; its errors look like
  ``{"type": "pool_timeout", "message": ..., "worker": "v1-w3", "retryable": true}``.
* V2 answers the result itself; its errors carry their category:
  ``{"type": "checkout_timeout", "category": "timeout", "code": "E_TIMEOUT", ...}``.

Both put fresh timestamps and generated ids in every answer (noise the comparison rules
ignore), V2 lists files in another order and ends stdout differently (noise the rules
normalise), and V2 differs for real at configurable rates (value and shape differences).
Latency is lognormal per pool (V2 faster by default). Scripted :class:`Incident` s change a
pool's error rate, latency or difference rate from a point in (simulated) time.

Every random choice of one call comes from a generator seeded by (seed, pool, operation,
arguments), so a run is reproducible whatever the thread scheduling. By default latency is
only *reported* (nothing sleeps: tests stay fast); ``time_scale`` > 0 also sleeps that
fraction of it, so timeouts and concurrency can be exercised for real.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, cast

from ledger.events import Pool, Resources
from producers.shadow import PoolError, PoolResult

__all__ = [
    "CANONICAL_ERRORS",
    "DEFAULT_V1",
    "DEFAULT_V2",
    "OPERATIONS",
    "Call",
    "CallRunner",
    "Conditions",
    "Incident",
    "IncidentError",
    "PoolProfile",
    "PoolSimulator",
    "SimulatedTime",
    "Simulator",
    "Traffic",
    "Workload",
    "parse_incidents",
]

CANONICAL_ERRORS: tuple[str, ...] = (
    "initialization",
    "connection",
    "communication",
    "timeout",
    "resource",
    "health_check",
    "session",
    "python",
    "system",
)

#: Canonical error -> V1's native type names (what the default rules map back).
V1_ERROR_TYPES: dict[str, tuple[str, ...]] = {
    "initialization": ("worker_spawn_failed", "pool_init_failed"),
    "connection": ("connection_refused", "connection_reset"),
    "communication": ("broken_pipe", "protocol_error"),
    "timeout": ("pool_timeout", "execution_timeout"),
    "resource": ("out_of_memory", "pool_exhausted"),
    "health_check": ("heartbeat_failed", "worker_unhealthy"),
    "session": ("session_expired", "session_not_found"),
    "python": ("python_exception",),
    "system": ("internal_error", "os_error"),
}
#: Canonical error -> V2's native type names; V2 also sends ``category``.
V2_ERROR_TYPES: dict[str, tuple[str, ...]] = {
    "initialization": ("initialization_error",),
    "connection": ("connection_error",),
    "communication": ("communication_error",),
    "timeout": ("timeout_error", "checkout_timeout"),
    "resource": ("resource_error", "resource_exhausted"),
    "health_check": ("health_check_error",),
    "session": ("session_error",),
    "python": ("python_error",),
    "system": ("system_error",),
}
_V2_CODES = {name: f"E_{name.upper()}" for name in CANONICAL_ERRORS}
_MESSAGES = {
    "initialization": "worker failed to start",
    "connection": "connection refused by worker",
    "communication": "worker closed the pipe mid-reply",
    "timeout": "no worker answered in time",
    "resource": "worker ran out of memory",
    "health_check": "worker missed its heartbeat",
    "session": "session expired or unknown",
    "python": "ZeroDivisionError: division by zero",
    "system": "internal error",
}

#: Operation -> share of the workload.
OPERATIONS: dict[str, float] = {"execute_program": 0.7, "list_files": 0.2, "health_check": 0.1}
_PROGRAMS = ("report", "etl_daily", "score_model", "render_invoice", "sync_users", "fit_curve")


@dataclass(frozen=True, slots=True)
class PoolProfile:
    """How one pool behaves; the defaults below are a plausible old and new pool."""

    name: Pool
    latency_median_ms: float
    latency_sigma: float
    #: Canonical error type -> probability per call.
    error_rates: Mapping[str, float]
    #: Probability that a successful answer differs for real in value / in shape.
    value_diff_rate: float = 0.0
    shape_diff_rate: float = 0.0
    timeout_ms: float = 5000.0
    workers: int = 8
    memory_median_bytes: int = 64 << 20

    @property
    def error_rate(self) -> float:
        return sum(self.error_rates.values())


DEFAULT_V1 = PoolProfile(
    name="v1",
    latency_median_ms=45.0,
    latency_sigma=0.55,
    error_rates={
        "timeout": 0.006,
        "connection": 0.002,
        "resource": 0.002,
        "communication": 0.001,
        "health_check": 0.001,
        "session": 0.001,
        "system": 0.001,
    },
    timeout_ms=5000.0,
    workers=8,
    memory_median_bytes=96 << 20,
)
DEFAULT_V2 = PoolProfile(
    name="v2",
    latency_median_ms=28.0,
    latency_sigma=0.45,
    error_rates={
        "timeout": 0.003,
        "connection": 0.001,
        "resource": 0.001,
        "initialization": 0.0005,
        "session": 0.0005,
    },
    value_diff_rate=0.01,
    shape_diff_rate=0.003,
    timeout_ms=3000.0,
    workers=16,
    memory_median_bytes=64 << 20,
)
#: Share of programs that fail in user code on *both* pools (an error both agree on).
FAULTY_PROGRAM_RATE = 0.004


# -- incidents ---------------------------------------------------------------------------------


class IncidentError(ValueError):
    """An incident text that cannot be understood; the message shows the expected form."""


_INCIDENT_FORM = (
    "POOL:METRIC(*FACTOR|+AMOUNT)@START[-END], e.g. 'v2:error_rate*5@180s', "
    "'v2:error_rate[timeout]*20@3m-5m', 'v2:latency*3@60s', 'v2:latency+250ms@2m', "
    "'v2:diff_rate+0.05@0s' (POOL v1|v2; METRIC error_rate[TYPE], latency, diff_rate; "
    "times in s or m)"
)
_INCIDENT = re.compile(
    r"""^(?P<pool>v[12]):
        (?P<metric>error_rate|latency|diff_rate)(?:\[(?P<type>[a-z_]+)\])?
        (?P<op>[*+])(?P<amount>\d+(?:\.\d+)?)(?P<unit>ms|s)?
        @(?P<start>\d+(?:\.\d+)?)(?P<start_unit>s|m)?
        (?:-(?P<end>\d+(?:\.\d+)?)(?P<end_unit>s|m)?)?$""",
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class Incident:
    """From ``start_s`` (until ``end_s``) one pool's metric is multiplied or raised."""

    pool: Pool
    metric: Literal["error_rate", "latency", "diff_rate"]
    op: Literal["*", "+"]
    amount: float
    start_s: float
    end_s: float | None = None
    #: For ``error_rate``: only this canonical type (None: every type).
    error_type: str | None = None

    @classmethod
    def parse(cls, text: str) -> Incident:
        match = _INCIDENT.match(text.strip().replace(" ", ""))
        if match is None:
            raise IncidentError(f"Cannot read the incident {text!r}; expected {_INCIDENT_FORM}.")
        metric = match["metric"]
        error_type = match["type"]
        if error_type is not None and metric != "error_rate":
            raise IncidentError(f"In {text!r}: only error_rate takes an error type in [...].")
        if error_type is not None and error_type not in CANONICAL_ERRORS:
            raise IncidentError(
                f"In {text!r}: unknown error type {error_type!r}; "
                f"one of {', '.join(CANONICAL_ERRORS)}."
            )
        amount = float(match["amount"])
        unit = match["unit"]
        if unit is not None and not (metric == "latency" and match["op"] == "+"):
            raise IncidentError(f"In {text!r}: a unit (ms, s) only goes with latency+AMOUNT.")
        if metric == "latency" and match["op"] == "+":
            amount = amount * 1000.0 if unit == "s" else amount
        if metric == "diff_rate" and match["op"] == "+" and amount > 1:
            raise IncidentError(f"In {text!r}: diff_rate+AMOUNT is a probability (0..1).")
        if match["op"] == "*" and amount < 0:
            raise IncidentError(f"In {text!r}: the factor must not be negative.")
        start = _seconds(match["start"], match["start_unit"])
        end = _seconds(match["end"], match["end_unit"]) if match["end"] is not None else None
        if end is not None and end <= start:
            raise IncidentError(f"In {text!r}: the end must come after the start.")
        return cls(
            pool=cast(Pool, match["pool"]),
            metric=cast(Literal["error_rate", "latency", "diff_rate"], metric),
            op=cast(Literal["*", "+"], match["op"]),
            amount=amount,
            start_s=start,
            end_s=end,
            error_type=error_type,
        )

    def active(self, elapsed_s: float) -> bool:
        return elapsed_s >= self.start_s and (self.end_s is None or elapsed_s < self.end_s)

    def apply(self, value: float) -> float:
        return value * self.amount if self.op == "*" else value + self.amount

    def __str__(self) -> str:
        metric = self.metric + (f"[{self.error_type}]" if self.error_type else "")
        amount = f"{self.amount:g}" + ("ms" if self.metric == "latency" and self.op == "+" else "")
        end = f"-{self.end_s:g}s" if self.end_s is not None else ""
        return f"{self.pool}:{metric}{self.op}{amount}@{self.start_s:g}s{end}"


def _seconds(number: str, unit: str | None) -> float:
    return float(number) * (60.0 if unit == "m" else 1.0)


def parse_incidents(texts: Sequence[str]) -> tuple[Incident, ...]:
    """Parse every incident text; the first bad one raises ``IncidentError``."""
    return tuple(Incident.parse(text) for text in texts)


# -- time -------------------------------------------------------------------------------------


class SimulatedTime:
    """Seconds since the start of a run, set by the driver (for incidents)."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds

    def __call__(self) -> float:
        return self.seconds


def _utc_now() -> datetime:
    return datetime.now(UTC)


# -- pools -------------------------------------------------------------------------------------


def _rng(*parts: object) -> random.Random:
    digest = hashlib.blake2b(
        json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=8
    ).digest()
    return random.Random(int.from_bytes(digest, "big"))


@dataclass(frozen=True, slots=True)
class Conditions:
    """What a pool is like at one moment, incidents applied."""

    error_rates: Mapping[str, float]
    latency_factor: float
    latency_add_ms: float
    value_diff_rate: float
    shape_diff_rate: float

    @property
    def error_rate(self) -> float:
        return sum(self.error_rates.values())


@dataclass
class _PoolCounters:
    calls: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    value_differences: int = 0
    shape_differences: int = 0


class PoolSimulator:
    """One simulated pool: ``pool(operation, args)`` (sync) or ``await pool.acall(...)``."""

    def __init__(
        self,
        profile: PoolProfile,
        *,
        seed: int,
        incidents: Sequence[Incident] = (),
        elapsed: Callable[[], float] = lambda: 0.0,
        clock: Callable[[], datetime] = _utc_now,
        time_scale: float = 0.0,
    ) -> None:
        self.profile = profile
        self.seed = seed
        self.incidents = tuple(i for i in incidents if i.pool == profile.name)
        self._elapsed = elapsed
        self._clock = clock
        self.time_scale = time_scale
        self._lock = threading.Lock()
        self._counters = _PoolCounters()

    @property
    def name(self) -> Pool:
        return self.profile.name

    def __call__(self, operation: str, args: Mapping[str, Any]) -> PoolResult:
        outcome, latency_ms = self._outcome(operation, args)
        if self.time_scale > 0:
            time.sleep(latency_ms / 1000.0 * self.time_scale)
        if isinstance(outcome, PoolError):
            raise outcome
        return outcome

    async def acall(self, operation: str, args: Mapping[str, Any]) -> PoolResult:
        outcome, latency_ms = self._outcome(operation, args)
        if self.time_scale > 0:
            await asyncio.sleep(latency_ms / 1000.0 * self.time_scale)
        if isinstance(outcome, PoolError):
            raise outcome
        return outcome

    def counts(self) -> dict[str, Any]:
        """What this pool did so far: calls, errors by canonical type, injected differences."""
        with self._lock:
            c = self._counters
            return {
                "calls": c.calls,
                "errors": dict(c.errors),
                "value_differences": c.value_differences,
                "shape_differences": c.shape_differences,
            }

    # -- one call -------------------------------------------------------------------------------

    def conditions(self, elapsed: float) -> Conditions:
        """Error rates, latency and difference rates in force ``elapsed`` seconds in."""
        profile = self.profile
        rates = dict(profile.error_rates)
        latency_factor, latency_add = 1.0, 0.0
        value_rate, shape_rate = profile.value_diff_rate, profile.shape_diff_rate
        for incident in self.incidents:
            if not incident.active(elapsed):
                continue
            if incident.metric == "error_rate":
                targets = [incident.error_type] if incident.error_type else list(CANONICAL_ERRORS)
                for name in targets:
                    base = rates.get(name, 0.0)
                    if incident.op == "*" and base == 0.0:
                        continue  # x5 of a type the pool never shows stays zero
                    if incident.op == "+" and incident.error_type is None:
                        # "+0.05" over all types: spread over the types the pool shows.
                        shown = [n for n, r in profile.error_rates.items() if r > 0] or ["system"]
                        if name not in shown:
                            continue
                        rates[name] = base + incident.amount / len(shown)
                        continue
                    rates[name] = incident.apply(base)
            elif incident.metric == "latency":
                if incident.op == "*":
                    latency_factor *= incident.amount
                else:
                    latency_add += incident.amount
            else:
                value_rate = incident.apply(value_rate)
                if incident.op == "*":
                    shape_rate *= incident.amount
        total = sum(rates.values())
        if total > 1.0:  # rates are shares of calls: keep the mix, cap the sum
            rates = {name: rate / total for name, rate in rates.items()}
        return Conditions(
            error_rates=rates,
            latency_factor=latency_factor,
            latency_add_ms=latency_add,
            value_diff_rate=min(1.0, value_rate),
            shape_diff_rate=min(1.0, shape_rate),
        )

    def _outcome(
        self, operation: str, args: Mapping[str, Any]
    ) -> tuple[PoolResult | PoolError, float]:
        profile = self.profile
        rng = _rng(self.seed, profile.name, operation, args)
        shared = _rng(self.seed, "both", operation, args)  # what both pools agree on
        now = self.conditions(self._elapsed())
        latency = profile.latency_median_ms * math.exp(profile.latency_sigma * rng.gauss(0, 1))
        latency = latency * now.latency_factor + now.latency_add_ms
        worker = f"{profile.name}-w{rng.randrange(profile.workers)}"
        memory = int(profile.memory_median_bytes * math.exp(0.3 * rng.gauss(0, 1)))
        resources = Resources(
            cpu_ms=round(latency * rng.uniform(0.3, 0.9), 3),
            memory_bytes=memory,
            worker_id=worker,
        )
        with self._lock:
            self._counters.calls += 1

        faulty = operation == "execute_program" and shared.random() < FAULTY_PROGRAM_RATE
        error_type = "python" if faulty else self._draw_error(rng, now.error_rates)
        if error_type is not None:
            duration = profile.timeout_ms if error_type == "timeout" else latency * 0.4
            with self._lock:
                self._counters.errors[error_type] += 1
            native = self._native_error(error_type, rng, worker)
            return PoolError(native, duration_ms=round(duration, 3), resources=resources), duration

        reference = _reference(operation, args, shared)
        value_rate, shape_rate = now.value_diff_rate, now.shape_diff_rate
        draw = rng.random()
        if draw < value_rate:
            _differ_in_value(operation, reference, rng)
            with self._lock:
                self._counters.value_differences += 1
        elif draw < value_rate + shape_rate:
            _differ_in_shape(operation, reference, rng)
            with self._lock:
                self._counters.shape_differences += 1
        answer = self._dress(reference, rng, worker)
        return PoolResult(answer, duration_ms=round(latency, 3), resources=resources), latency

    def _draw_error(self, rng: random.Random, rates: Mapping[str, float]) -> str | None:
        draw = rng.random()
        for name in CANONICAL_ERRORS:
            rate = rates.get(name, 0.0)
            if draw < rate:
                return name
            draw -= rate
        return None

    def _native_error(self, canonical: str, rng: random.Random, worker: str) -> dict[str, Any]:
        message = _MESSAGES[canonical]
        if self.profile.name == "v1":
            error: dict[str, Any] = {
                "type": rng.choice(V1_ERROR_TYPES[canonical]),
                "message": message,
                "worker": worker,
                "retryable": canonical in ("timeout", "connection", "resource"),
            }
            if canonical == "python":
                error["traceback"] = (
                    'Traceback (most recent call last):\n  File "<program>", line 3\n' + message
                )
            return error
        return {
            "type": rng.choice(V2_ERROR_TYPES[canonical]),
            "category": canonical,
            "message": message,
            "code": _V2_CODES[canonical],
            "details": {"worker_id": worker, "attempt": rng.randint(1, 3)},
        }

    def _dress(self, reference: dict[str, Any], rng: random.Random, worker: str) -> Any:
        """The pool's own shape, with its generated ids, timestamps and harmless quirks."""
        body = dict(reference)
        body["execution_id"] = f"{rng.getrandbits(64):016x}"
        body["created_at"] = self._clock().isoformat()
        if self.profile.name == "v1":
            return {"status": "ok", "data": body, "hostname": f"v1-host-{worker[-1]}"}
        if isinstance(body.get("files"), list) and len(body["files"]) > 1:
            body["files"] = list(reversed(body["files"]))  # unordered by the rules
        if isinstance(body.get("stdout"), str):
            body["stdout"] = body["stdout"].rstrip("\n") + "\r\n"  # stripped by the rules
        return body


def _reference(operation: str, args: Mapping[str, Any], shared: random.Random) -> dict[str, Any]:
    """The correct answer to a call: identical on both pools unless a difference is drawn."""
    if operation == "execute_program":
        program = str(args.get("program", "report"))
        rows = shared.randint(1, 5000)
        files = [f"{program}_{n}.csv" for n in range(shared.randint(0, 4))]
        return {
            "exit_code": 0,
            "stdout": f"{program}: processed {rows} rows\n",
            "files": files,
            "metrics": {"rows": rows, "score": round(shared.uniform(0, 1), 6)},
            "tags": sorted(shared.sample(["fast", "cached", "batch", "gpu", "retry"], 2)),
        }
    if operation == "list_files":
        count = shared.randint(0, 6)
        return {
            "path": str(args.get("path", "/")),
            "entries": [
                {"name": f"file_{n}.dat", "size": shared.randint(0, 1 << 20)} for n in range(count)
            ],
        }
    return {"healthy": True, "uptime_s": shared.randint(10, 10**6), "load": shared.random()}


def _differ_in_value(operation: str, reference: dict[str, Any], rng: random.Random) -> None:
    if operation == "execute_program":
        choice = rng.randrange(3)
        if choice == 0:
            reference["metrics"] = {
                **reference["metrics"],
                "rows": reference["metrics"]["rows"] + 1,
            }
        elif choice == 1:
            reference["stdout"] = reference["stdout"].replace("processed", "handled")
        else:
            reference["exit_code"] = 1
    elif operation == "list_files":
        reference["entries"] = [*reference["entries"], {"name": "extra.tmp", "size": 0}]
    else:
        reference["healthy"] = False


def _differ_in_shape(operation: str, reference: dict[str, Any], rng: random.Random) -> None:
    if operation == "execute_program":
        choice = rng.randrange(3)
        if choice == 0:
            del reference["files"]
        elif choice == 1:
            reference["metrics"] = {
                **reference["metrics"],
                "rows": str(reference["metrics"]["rows"]),
            }
        else:
            reference["warnings_count"] = 0
    elif operation == "list_files":
        reference["entries"] = {e["name"]: e["size"] for e in reference["entries"]}
    else:
        reference["status"] = "green"


# -- the pair and the workload ---------------------------------------------------------------


class Simulator:
    """V1 and V2 simulated from one seed, with the same incidents and time source."""

    def __init__(
        self,
        *,
        seed: int = 0,
        v1: PoolProfile = DEFAULT_V1,
        v2: PoolProfile = DEFAULT_V2,
        incidents: Sequence[Incident] = (),
        elapsed: Callable[[], float] | None = None,
        clock: Callable[[], datetime] = _utc_now,
        time_scale: float = 0.0,
    ) -> None:
        self.seed = seed
        self.time = SimulatedTime()
        source = elapsed or self.time
        self.incidents = tuple(incidents)
        self.v1 = PoolSimulator(
            v1, seed=seed, incidents=incidents, elapsed=source, clock=clock, time_scale=time_scale
        )
        self.v2 = PoolSimulator(
            v2, seed=seed, incidents=incidents, elapsed=source, clock=clock, time_scale=time_scale
        )

    def pool(self, name: Pool) -> PoolSimulator:
        return self.v1 if name == "v1" else self.v2

    def with_profiles(self, **changes: Any) -> Simulator:
        """A copy with profile fields changed on both pools (e.g. ``value_diff_rate=0``)."""
        return Simulator(
            seed=self.seed,
            v1=replace(self.v1.profile, **changes),
            v2=replace(self.v2.profile, **changes),
            incidents=self.incidents,
        )


@dataclass(frozen=True, slots=True)
class Call:
    """One operation of the workload, as a caller would issue it."""

    n: int
    operation: str
    args: dict[str, Any]
    session_id: str | None
    environment: str | None
    #: When it is due, in seconds from the start, at the workload's rate.
    at_s: float


class Workload:
    """A reproducible stream of calls from ``sessions`` sessions at ``rate`` per second."""

    def __init__(
        self,
        *,
        seed: int = 0,
        sessions: int = 200,
        rate: float = 50.0,
        anonymous_share: float = 0.05,
        environments: Sequence[str | None] = (None,),
    ) -> None:
        if sessions < 1:
            raise ValueError("sessions must be at least 1")
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.seed = seed
        self.sessions = sessions
        self.rate = rate
        self.anonymous_share = anonymous_share
        self.environments = tuple(environments)
        self._operations = tuple(OPERATIONS)
        self._weights = tuple(OPERATIONS.values())

    def call(self, n: int) -> Call:
        rng = _rng(self.seed, "workload", n)
        operation = rng.choices(self._operations, self._weights)[0]
        args: dict[str, Any] = {"request": n}
        if operation == "execute_program":
            args["program"] = rng.choice(_PROGRAMS)
            args["inputs"] = [rng.randint(0, 99) for _ in range(rng.randint(0, 3))]
        elif operation == "list_files":
            args["path"] = f"/data/{rng.choice(_PROGRAMS)}"
        session = (
            None
            if rng.random() < self.anonymous_share
            else f"session-{rng.randrange(self.sessions):05d}"
        )
        return Call(
            n=n,
            operation=operation,
            args=args,
            session_id=session,
            environment=rng.choice(self.environments),
            at_s=n / self.rate,
        )

    def calls(self, count: int, start: int = 0) -> list[Call]:
        return [self.call(n) for n in range(start, start + count)]


class CallRunner(Protocol):
    """What traffic is sent through: a :class:`~producers.shadow.ShadowRunner`'s ``run``."""

    def run(
        self,
        operation: str,
        args: Mapping[str, Any],
        session_id: str | None,
        environment: str | None = None,
    ) -> Any: ...


class Traffic:
    """Sends a workload through a runner at the workload's rate, on background threads.

    Like an application's callers: ``concurrency`` threads, each call on time if a thread is
    free (a slow pool makes the schedule fall behind, reported by :attr:`behind_s`). Before
    each call the simulator's clock is set to the call's place in the schedule, so scripted
    incidents start at the same operation in every run. Exceptions reaching the callers are
    counted: :class:`~producers.shadow.PoolError` as the pool's own failures (expected), any
    other one in :attr:`other_errors` (a bug: the runner must never add errors).
    """

    def __init__(
        self,
        runner: CallRunner,
        workload: Workload,
        *,
        simulator: Simulator | None = None,
        operations: int | None = None,
        concurrency: int = 4,
        first: int = 0,
    ) -> None:
        self.runner = runner
        self.workload = workload
        self.simulator = simulator
        self.operations = operations
        self.first = first
        self._concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self.issued = 0
        self.completed = 0
        self.pool_errors = 0
        self.other_errors: list[BaseException] = []
        self.behind_s = 0.0
        self._thread = threading.Thread(target=self._schedule, name="traffic", daemon=True)
        self._executor: Any = None

    def start(self) -> Traffic:
        from concurrent.futures import ThreadPoolExecutor

        self._executor = ThreadPoolExecutor(self._concurrency, thread_name_prefix="caller")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop issuing; calls in progress finish."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Until every operation was issued and answered (or ``timeout``); True if so."""
        return self._done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        self.stop()
        self._thread.join(timeout)
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def _schedule(self) -> None:
        started = time.monotonic()
        n = self.first
        try:
            while not self._stop.is_set():
                if self.operations is not None and n >= self.first + self.operations:
                    break
                call = self.workload.call(n)
                due = started + call.at_s - self.first / self.workload.rate
                delay = due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                self.behind_s = max(0.0, -delay)
                self._slots.acquire()
                if self.simulator is not None:
                    self.simulator.time.seconds = call.at_s
                with self._lock:
                    self.issued += 1
                self._executor.submit(self._call, call)
                n += 1
        finally:
            for _ in range(self._concurrency):  # wait for the calls in progress
                self._slots.acquire()
            for _ in range(self._concurrency):
                self._slots.release()
            self._done.set()

    def _call(self, call: Call) -> None:
        pool_error: BaseException | None = None
        other: BaseException | None = None
        try:
            self.runner.run(call.operation, call.args, call.session_id, call.environment)
        except PoolError as exc:
            pool_error = exc
        except BaseException as exc:
            other = exc
        finally:
            self._slots.release()
        with self._lock:
            self.completed += 1
            if pool_error is not None:
                self.pool_errors += 1
            if other is not None:
                self.other_errors.append(other)
