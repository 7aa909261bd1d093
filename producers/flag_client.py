"""The flag client: the migration flag's state, kept current, decided on locally.

A background thread tails ``ledger.flag-events`` from the beginning (no consumer group: every
process reads the whole log), folds each ``FlagChanged`` / ``CommandRejected`` of our flag
into a ``FlagState`` with ``ledger.flags.apply`` and swaps the cached state. ``decide`` then
costs one ``ledger.rollout.decide`` on that immutable snapshot: no network, no lock.

``staleness()`` says how long ago the client last *knew* it was current: the time of the last
check that its position had reached the end of the log (done about once a second), so a
silent log and a dead broker can be told apart.

**Local forced pool** (for development, read once from the process environment at start):

* ``MIGRATION_LEDGER_FORCE_POOL=v1|v2`` forces every decision of this process;
* ``MIGRATION_LEDGER_FORCE_POOL_<ENV>=v1|v2`` forces decisions made for environment ``<ENV>``
  (upper-cased, other characters as ``_``: environment ``eu-west`` reads
  ``MIGRATION_LEDGER_FORCE_POOL_EU_WEST``); it wins over the process-wide one.

A forced decision is recorded with reason ``ENVIRONMENT_OVERRIDE`` like an override from the
flag log, but it is not *in* the log, so replaying it reports a mismatch: that is the honest
answer to "why did this go to V2?" for a developer's machine.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import cast

from ledger import flags, rollout, wire
from ledger.errors import ChainError, ConfigurationError, EventDecodeError
from ledger.events import (
    CommandRejected,
    DecisionReason,
    FlagChanged,
    Pool,
    RolloutDecided,
)
from ledger.kafka.log import LogReader
from ledger.settings import Settings
from producers.shadow import Route

__all__ = ["FORCE_POOL_VARIABLE", "FlagClient", "forced_pools"]

log = logging.getLogger(__name__)

FORCE_POOL_VARIABLE = "MIGRATION_LEDGER_FORCE_POOL"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return uuid.uuid4().hex


def _environment_variable(environment: str) -> str:
    return f"{FORCE_POOL_VARIABLE}_{re.sub(r'[^A-Za-z0-9]', '_', environment).upper()}"


def forced_pools(environ: Mapping[str, str]) -> dict[str | None, Pool]:
    """The forced pools in ``environ``: key None for the process-wide one, else the env name.

    Per-environment names come back as written in the variable (``EU_WEST``); lookups
    normalise the environment the same way. A value other than v1/v2 is refused.
    """
    forced: dict[str | None, Pool] = {}
    for name, value in environ.items():
        if name != FORCE_POOL_VARIABLE and not name.startswith(FORCE_POOL_VARIABLE + "_"):
            continue
        pool = value.strip().lower()
        if pool not in ("v1", "v2"):
            raise ConfigurationError(f"{name}={value!r}: a forced pool is 'v1' or 'v2'.")
        key = None if name == FORCE_POOL_VARIABLE else name[len(FORCE_POOL_VARIABLE) + 1 :]
        forced[key] = cast(Pool, pool)
    return forced


class FlagClient:
    """Cached flag state from the flag log, and decisions on it. Thread-safe.

    ``FlagClient(settings).start()`` tails Kafka; without ``start`` (tests, replays) feed it
    events with :meth:`ingest`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = _utc_now,
        new_id: Callable[[], str] = _new_id,
        environ: Mapping[str, str] | None = None,
        poll_interval: float = 0.5,
    ) -> None:
        self.settings = settings
        self.flag = settings.flag
        self._topic = settings.topic("flag_events")
        self._clock = clock
        self._new_id = new_id
        self._poll_interval = poll_interval
        forced = forced_pools(os.environ if environ is None else environ)
        self._forced_everywhere = forced.pop(None, None)
        self._forced_by_environment = {str(k): v for k, v in forced.items()}
        if self._forced_everywhere or self._forced_by_environment:
            log.warning(
                "flag client: local forced pool in effect (%s); decisions will not replay",
                {k or "*": v for k, v in {None: self._forced_everywhere, **forced}.items() if v},
            )

        self._state: flags.FlagState = flags.initial_state(self.flag)
        self._changed = threading.Condition()
        self._last_current = time.monotonic()  # when we last knew we were at the log's end
        #: Set once the client has known it was current: until then its state is the
        #: defaults (V2 off), whatever the log says, and a router should not decide on it.
        self._current_once = threading.Event()
        self._messages = 0
        self._decode_errors = 0
        self._chain_errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = False
        self._next_offsets: dict[int, int] = {}

    # -- state --------------------------------------------------------------------------------

    @property
    def state(self) -> flags.FlagState:
        """The current flag state (immutable: safe to keep)."""
        return self._state

    @property
    def version(self) -> int:
        return self._state.version

    def ingest(self, event: FlagChanged | CommandRejected) -> None:
        """Fold one flag event into the cached state (events of other flags are ignored).

        A ``FlagChanged`` the state already has (same or older version: a re-read) is
        skipped; one that does not follow the chain is logged and counted, and the state
        stays where it was (``migration-ledger check`` and the audit say why).
        """
        if event.flag != self.flag:
            return
        with self._changed:
            if isinstance(event, FlagChanged) and event.version <= self._state.version:
                return
            try:
                self._state = flags.apply(self._state, event)
            except ChainError as exc:
                self._chain_errors += 1
                log.error("flag client: flag event %s does not follow: %s", event.event_id, exc)
                return
            self._messages += 1
            self._last_current = time.monotonic()
            self._changed.notify_all()

    def ingest_all(self, events: Iterable[FlagChanged | CommandRejected]) -> None:
        for event in events:
            self.ingest(event)

    def wait_until_version(self, version: int, timeout: float) -> bool:
        """Block until the state reached ``version`` (or ``timeout``); True if it did."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.version < version:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    @property
    def ever_current(self) -> bool:
        """Whether the client has read the whole flag log at least once since it started.

        A client that does not tail Kafka (fed by ``ingest``, as a replay or a test does) is
        as current as what it was given.
        """
        return self._thread is None or self._current_once.is_set()

    def wait_until_current(self, timeout: float) -> bool:
        """Block until the client has read the whole flag log once (or ``timeout``).

        A router that decides before then decides on the defaults: V1 for every request even
        when V2 is at 100 % (seen in the last-mile integration run: a new router's first
        requests went to V1 at flag version 0).
        """
        return self._current_once.wait(timeout)

    def staleness(self) -> float:
        """Seconds since the client last confirmed it had read the whole flag log."""
        return max(0.0, time.monotonic() - self._last_current)

    @property
    def shadow_mode_enabled(self) -> bool:
        return self._state.values.shadow_mode_enabled

    @property
    def shadow_sample_bp(self) -> int:
        return self._state.values.shadow_sample_bp

    # -- deciding -------------------------------------------------------------------------------

    def new_correlation_id(self) -> str:
        """A fresh correlation id, from the same source as the decisions' event ids."""
        return self._new_id()

    def decide(
        self,
        session_id: str | None,
        environment: str | None = None,
        *,
        correlation_id: str | None = None,
        breaker_open: bool = False,
    ) -> RolloutDecided:
        """Where this request goes, as a ``RolloutDecided`` ready to publish."""
        return self._decide(
            self._state, session_id, environment, correlation_id or self._new_id(), breaker_open
        )

    def route(
        self,
        session_id: str | None,
        *,
        correlation_id: str,
        environment: str | None = None,
        breaker_open: bool = False,
    ) -> Route:
        """The decision and whether to shadow it, from one snapshot (the runner's view)."""
        state = self._state
        decision = self._decide(state, session_id, environment, correlation_id, breaker_open)
        enabled = state.values.shadow_mode_enabled
        sample = state.values.shadow_sample_bp
        shadow = enabled and (
            sample >= 10_000 or rollout.bucket(f"{self.flag}:shadow", correlation_id) < sample
        )
        return Route(decision, shadow=shadow)

    def _decide(
        self,
        state: flags.FlagState,
        session_id: str | None,
        environment: str | None,
        correlation_id: str,
        breaker_open: bool,
    ) -> RolloutDecided:
        forced = self._forced(environment)
        at = self._clock()
        if forced is not None:
            return RolloutDecided(
                event_id=self._new_id(),
                flag=self.flag,
                session_id=session_id,
                correlation_id=correlation_id,
                environment=environment,
                pool=forced,
                reason=DecisionReason.ENVIRONMENT_OVERRIDE,
                flag_version=state.version,
                at=at,
            )
        context = rollout.DecisionContext(
            session_id=session_id,
            correlation_id=correlation_id,
            environment=environment,
            breaker_open=breaker_open,
        )
        return rollout.decide(state, context, at=at, event_id=self._new_id())

    def _forced(self, environment: str | None) -> Pool | None:
        if environment is not None and self._forced_by_environment:
            key = re.sub(r"[^A-Za-z0-9]", "_", environment).upper()
            pool = self._forced_by_environment.get(key)
            if pool is not None:
                return pool
        return self._forced_everywhere

    # -- tailing Kafka -----------------------------------------------------------------------------

    def start(self) -> FlagClient:
        """Tail the flag log in a background thread (returns at once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._tail, name="flag-client", daemon=True)
            self._thread.start()
        return self

    def __enter__(self) -> FlagClient:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def connected(self) -> bool:
        return self._connected

    def _tail(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._consume()
                return
            except Exception as exc:  # the broker went away or never came: try again
                self._connected = False
                log.warning("flag client: cannot read %s (%s); retrying", self._topic, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _consume(self) -> None:
        with LogReader(
            self.settings, [self._topic], client_id="migration-ledger-flag-client", timeout_s=5.0
        ) as reader:
            if not self._wait_for_partitions(reader):
                return
            # From the start the first time; after a reconnect, from where we were (the state
            # is kept, and folding an event twice is not what the log says).
            reader.seek({(self._topic, p): offset for p, offset in self._next_offsets.items()})
            self._connected = True
            last_check = 0.0
            while not self._stop.is_set():
                for record in reader.poll(timeout_s=self._poll_interval):
                    self._handle(record.value)
                    self._next_offsets[record.partition] = record.offset + 1
                now = time.monotonic()
                if now - last_check >= 1.0:
                    last_check = now
                    ends = reader.end_offsets()  # raises when the broker is away
                    if all(reader.position()[tp] >= end for tp, end in ends.items()):
                        self._last_current = now
                        self._current_once.set()

    def _wait_for_partitions(self, reader: LogReader) -> bool:
        """Whether the flag log exists; before it does, the defaults are current."""
        while not self._stop.is_set():
            if reader.partitions():
                return True
            self._last_current = time.monotonic()  # no log yet: the defaults are the state
            self._current_once.set()
            self._stop.wait(1.0)
        return False

    def _handle(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            event = wire.decode(value, "flag_events")
        except EventDecodeError as exc:
            self._decode_errors += 1
            log.error("flag client: undecodable flag event skipped: %s", exc)
            return
        if isinstance(event, FlagChanged | CommandRejected):
            self.ingest(event)
