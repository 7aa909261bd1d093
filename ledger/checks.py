"""Go-live checks: what was observed about a deployment, judged PASS / WARN / FAIL.

``migration-ledger check`` asks the broker, the topics, the flag log, the worker and the sink
how they are (``ledger.cli.probes`` does the asking) and hands the answers here as plain
observations. The judgments are pure so that every threshold and every wording can be tested
without a broker, and so that a line always carries its figure and what to do about it.

A check that could not run because another one failed first (no topics without a broker) is
``SKIP``: the cause already failed on its own line, and counting it twice would only hide it.
Only ``FAIL`` makes the command exit non-zero; ``WARN`` is for what an operator should look at
before moving traffic but that does not by itself make going live unsafe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from ledger.acls import AclDrift
from ledger.events import CommandRejected, FlagChanged
from ledger.flags import initial_state
from ledger.replay import chain_report

__all__ = [
    "MIN_KAFKA",
    "AclObservation",
    "BrokerObservation",
    "CheckReport",
    "Finding",
    "FlagLogObservation",
    "Status",
    "StoreObservation",
    "Thresholds",
    "TopicDifference",
    "TopicsObservation",
    "WorkerObservation",
    "describe_flag",
    "describe_values",
    "judge_acls",
    "judge_broker",
    "judge_flag_log",
    "judge_store",
    "judge_topics",
    "judge_worker",
    "skipped",
]

#: The oldest Kafka API level the project is tested against (the local broker and the
#: compose image are 4.x); older brokers may work but nobody has seen them do so.
MIN_KAFKA: tuple[int, int] = (4, 0)

#: Topic settings whose mismatch makes going live unsafe rather than merely untidy:
#: partitions break co-partitioning (the worker refuses to start), and a flag log with a
#: finite retention would one day forget the flag itself.
_FATAL_SETTINGS = frozenset({"partitions"})
_FLAG_LOG_SETTINGS = frozenset({"retention.ms", "retention.bytes", "cleanup.policy"})


class Status(StrEnum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Finding:
    """One line of the check: its name, verdict, the figure behind it and what to do."""

    check: str
    status: Status
    figure: str
    action: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "check": self.check,
            "status": self.status.value,
            "figure": self.figure,
            "action": self.action,
        }


@dataclass(frozen=True)
class CheckReport:
    findings: tuple[Finding, ...]

    @property
    def failed(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.status is Status.FAIL)

    @property
    def ok(self) -> bool:
        """True when nothing failed; warnings do not stop a deployment."""
        return not self.failed

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for f in self.findings if f.status is s) for s in Status}

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "counts": self.counts(),
            "checks": [f.to_json() for f in self.findings],
        }


@dataclass(frozen=True)
class Thresholds:
    """Where a figure turns from PASS to WARN; the command line can change each."""

    #: Messages the worker has not read yet, summed over its partitions.
    worker_lag: int = 10_000
    #: Seconds since the sink's last commit before readers are called stale.
    sink_age_s: float = 300.0
    #: Messages the sink has not stored yet, summed over every topic it reads.
    sink_lag: int = 10_000


def skipped(check: str, because: str) -> Finding:
    """A check that could not run because an earlier one failed (that one says why)."""
    return Finding(check, Status.SKIP, f"not run: {because}")


# --- ACLs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AclObservation:
    """The broker's ACLs against ``ledger.acls``' plan, read as ``user``."""

    user: str
    drifts: tuple[AclDrift, ...] = ()
    #: DENY entries on the broker (they only take rights away; counted, not compared).
    denies: int = 0
    #: Why the ACLs could not be read (the user may not describe them), if so.
    error: str | None = None


def judge_acls(seen: AclObservation) -> Finding:
    """FAIL when a principal has more or less than its plan; WARN when they cannot be read."""
    if seen.error is not None:
        return Finding(
            "acls",
            Status.WARN,
            f"cannot read the ACLs as {seen.user}: {seen.error}",
            "run `check` with the admin principal's settings (credentials/admin.env)",
        )
    wrong = [d for d in seen.drifts if not d.ok]
    if not wrong:
        extra = f"; {seen.denies} DENY entries besides" if seen.denies else ""
        planned = sum(1 for d in seen.drifts)
        return Finding("acls", Status.PASS, f"{planned} principals match their plan{extra}")
    parts = []
    for d in wrong:
        said = []
        if d.extra:
            said.append(f"{len(d.extra)} more than planned (e.g. {d.extra[0]})")
        if d.missing:
            said.append(f"{len(d.missing)} missing (e.g. {d.missing[0]})")
        parts.append(f"User:{d.principal}: {', '.join(said)}")
    return Finding(
        "acls",
        Status.FAIL,
        "; ".join(parts),
        "`migration-ledger acls plan` shows the plan; `acls apply --prune` (as admin) "
        "makes the broker match it",
    )


# --- broker ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerObservation:
    """What a Metadata exchange with the bootstrap servers returned (or why it did not)."""

    bootstrap: str
    error: str | None = None
    brokers: int = 0
    #: The API level the broker speaks, as the client infers it (Kafka sends no release).
    api_version: tuple[int, ...] | None = None
    #: The exact release, when this machine started the broker (``kafka up`` records it).
    release: str | None = None
    fenced: int = 0


def judge_broker(seen: BrokerObservation, *, timeout_s: float) -> Finding:
    name = "broker"
    if seen.error is not None:
        return Finding(
            name,
            Status.FAIL,
            f"{seen.bootstrap} did not answer within {timeout_s:g} s: {seen.error}",
            "start it (`migration-ledger kafka up`, see docs/runbooks/broker-operations.md) "
            "or point --bootstrap-servers / MIGRATION_LEDGER_BOOTSTRAP_SERVERS at the right one",
        )
    if seen.brokers < 1:
        return Finding(
            name,
            Status.FAIL,
            f"{seen.bootstrap} answered but lists no live broker",
            "the broker is still starting or has lost its controller: see its server.log",
        )
    version = _version_text(seen)
    figure = f"{seen.bootstrap}: {seen.brokers} broker(s), {version}"
    if seen.fenced:
        return Finding(
            name,
            Status.WARN,
            f"{figure}, {seen.fenced} fenced",
            "a fenced broker takes no traffic: check its server.log before going live",
        )
    if seen.api_version is not None and tuple(seen.api_version[:2]) < MIN_KAFKA:
        return Finding(
            name,
            Status.WARN,
            figure,
            f"the project is tested on Kafka {MIN_KAFKA[0]}.x; upgrade the broker or test "
            "this one with `make integration`",
        )
    return Finding(name, Status.PASS, figure)


def _version_text(seen: BrokerObservation) -> str:
    api = ".".join(map(str, seen.api_version)) if seen.api_version else None
    if seen.release and api:
        return f"Kafka {seen.release} (API level {api})"
    if seen.release:
        return f"Kafka {seen.release}"
    if api:
        return f"Kafka API level {api}"
    return "Kafka version unknown"


# --- topics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicDifference:
    """A topic setting that differs from its spec, as `topics ensure` and `check` both see it."""

    topic: str
    setting: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.setting} is {self.actual}, expected {self.expected}"


@dataclass(frozen=True)
class TopicsObservation:
    expected: tuple[str, ...]
    missing: tuple[str, ...] = ()
    differences: tuple[TopicDifference, ...] = ()
    #: The Kafka name of the flag event log, whose retention must never be finite.
    flag_log: str | None = None


def judge_topics(seen: TopicsObservation) -> Finding:
    name = "topics"
    if seen.missing:
        return Finding(
            name,
            Status.FAIL,
            f"{len(seen.missing)} of {len(seen.expected)} missing: {', '.join(seen.missing)}",
            "create them: `migration-ledger topics ensure` (the worker also does at start)",
        )
    fatal = [d for d in seen.differences if _is_fatal(d, seen.flag_log)]
    minor = [d for d in seen.differences if not _is_fatal(d, seen.flag_log)]
    if fatal:
        return Finding(
            name,
            Status.FAIL,
            "; ".join(map(str, fatal + minor)),
            "ensure never alters a topic: recreate these (or set MIGRATION_LEDGER_PARTITIONS "
            "to match) before starting the worker",
        )
    if minor:
        return Finding(
            name,
            Status.WARN,
            "; ".join(map(str, minor)),
            "retention differs from the spec; fix with kafka-configs or recreate the topic",
        )
    return Finding(
        name,
        Status.PASS,
        f"all {len(seen.expected)} present with the expected partitions and retention",
    )


def _is_fatal(difference: TopicDifference, flag_log: str | None) -> bool:
    if difference.setting in _FATAL_SETTINGS:
        return True
    return difference.topic == flag_log and difference.setting in _FLAG_LOG_SETTINGS


# --- flag log ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FlagLogObservation:
    """Every record of the flag event log, read from its start to its end offset."""

    flag: str
    topic: str
    #: This flag's FlagChanged and CommandRejected events, in log order.
    events: tuple[FlagChanged | CommandRejected, ...] = ()
    #: Records that are not valid events at all: nothing but the writer should append here.
    undecodable: int = 0
    #: Records of other flags, which share the topic (keyed by flag name).
    other_flags: int = 0
    error: str | None = None

    @property
    def changes(self) -> tuple[FlagChanged, ...]:
        return tuple(e for e in self.events if isinstance(e, FlagChanged))

    @property
    def rejections(self) -> int:
        return sum(1 for e in self.events if isinstance(e, CommandRejected))


def judge_flag_log(seen: FlagLogObservation) -> Finding:
    """The hash chain verifies (``ledger.replay``, as ``audit`` does) and the current state."""
    name = "flag log"
    if seen.error is not None:
        return Finding(
            name,
            Status.FAIL,
            f"{seen.topic} could not be read: {seen.error}",
            "check the broker and the topic (`migration-ledger topics ensure`)",
        )
    if seen.undecodable:
        return Finding(
            name,
            Status.FAIL,
            f"{seen.undecodable} record(s) in {seen.topic} are not valid flag events",
            "only the flag log writer may append here: find who wrote them, then run "
            "`migration-ledger audit`",
        )
    chain = chain_report(seen.events, flag=seen.flag)
    if not chain.ok:
        return Finding(
            name,
            Status.FAIL,
            f"hash chain broken: {chain.describe()}",
            "do not change the rollout; keep the topic as it is and compare with an export "
            "(docs/runbooks/audit.md)",
        )
    changes = seen.changes
    if not changes:
        others = f" ({seen.other_flags} event(s) of other flags)" if seen.other_flags else ""
        return Finding(
            name,
            Status.WARN,
            f"no FlagChanged for {seen.flag!r} yet: initial state, "
            f"{describe_values(initial_state(seen.flag))}{others}",
            "is MIGRATION_LEDGER_FLAG right? Start the worker, then the shadow run "
            "(docs/runbooks/start-shadow.md)",
        )
    figure = f"{len(changes)} change(s), hash chain verified; now {describe_flag(changes[-1])}"
    if seen.rejections:
        figure += f"; {seen.rejections} command(s) rejected"
    if changes[-1].frozen:
        return Finding(
            name,
            Status.WARN,
            figure,
            "the flag is frozen: ramp commands will be refused until `flags unfreeze`",
        )
    return Finding(name, Status.PASS, figure)


class _FlagValues(Protocol):
    """What a FlagChanged and a FlagState both tell: the values routing depends on."""

    @property
    def v2_pool_enabled(self) -> bool: ...
    @property
    def v2_rollout_bp(self) -> int: ...
    @property
    def shadow_mode_enabled(self) -> bool: ...
    @property
    def shadow_sample_bp(self) -> int: ...
    @property
    def session_overrides(self) -> Mapping[str, str]: ...
    @property
    def environment_overrides(self) -> Mapping[str, str]: ...
    @property
    def frozen(self) -> bool: ...


def describe_values(values: _FlagValues) -> str:
    """The flag's routing values in a few words."""
    parts = [
        f"V2 {'on' if values.v2_pool_enabled else 'off'}",
        f"rollout {_percent(values.v2_rollout_bp)}",
        f"shadow {'on' if values.shadow_mode_enabled else 'off'}"
        + (f" ({_percent(values.shadow_sample_bp)})" if values.shadow_mode_enabled else ""),
    ]
    overrides = len(values.session_overrides) + len(values.environment_overrides)
    if overrides:
        parts.append(f"{overrides} override(s)")
    if values.frozen:
        parts.append("FROZEN")
    return ", ".join(parts)


def describe_flag(change: FlagChanged) -> str:
    """The state a FlagChanged leaves the flag in, in one line (every event is a snapshot)."""
    return f"v{change.version}, {describe_values(change)}, last: {change.command} by {change.actor}"


def _percent(basis_points: int) -> str:
    return f"{basis_points / 100:g} %"


# --- worker ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerObservation:
    """What the worker's web port said on /healthz and /metrics."""

    url: str
    error: str | None = None
    status_code: int | None = None
    app: str | None = None
    #: Prometheus samples by metric name, summed over labels (absent: not exposed).
    metrics: Mapping[str, float] = field(default_factory=dict)


def judge_worker(seen: WorkerObservation, thresholds: Thresholds) -> Finding:
    name = "worker"
    if seen.error is not None or seen.status_code != 200:
        why = seen.error or f"/healthz answered HTTP {seen.status_code}"
        return Finding(
            name,
            Status.FAIL,
            f"{seen.url}: {why}",
            "start it (`migration-ledger worker --web-port PORT`) or fix --worker-url; "
            "its log says why it stopped",
        )
    parts = [f"{seen.url} alive" + (f" ({seen.app})" if seen.app else "")]
    lag = seen.metrics.get("ledger_consumer_lag")
    dead = seen.metrics.get("ledger_dead_letters_total")
    pending = seen.metrics.get("ledger_pending_pairs")
    if lag is not None:
        parts.append(f"lag {lag:.0f}")
    if pending is not None:
        parts.append(f"{pending:.0f} pending pair(s)")
    if dead is not None:
        parts.append(f"{dead:.0f} dead letter(s)")
    rollbacks = seen.metrics.get("ledger_health_rollbacks_total")
    if rollbacks:
        parts.append(f"{rollbacks:.0f} automatic rollback(s) since it started")
    figure = ", ".join(parts)
    if rollbacks:
        return Finding(
            name,
            Status.WARN,
            figure,
            "find out why before ramping again: docs/runbooks/automatic-rollback-investigation.md",
        )
    if lag is not None and lag > thresholds.worker_lag:
        return Finding(
            name,
            Status.WARN,
            figure,
            f"lag above {thresholds.worker_lag}: comparisons and health windows trail "
            "reality; wait for it to drain before ramping",
        )
    if lag is None:
        return Finding(
            name,
            Status.WARN,
            figure + ", no lag figure yet",
            "the lag gauge is refreshed every few seconds after partitions are assigned",
        )
    return Finding(name, Status.PASS, figure)


# --- sink / store ------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreObservation:
    """The ledger location and what the store's reader says about the sink's progress."""

    location: str
    exists: bool
    error: str | None = None
    #: False when this build has no store module to ask (only the location was looked at).
    reader_available: bool = True
    last_commit_at: datetime | None = None
    #: Messages published but not yet in the ledger, summed over topics; None if unknown.
    lag: int | None = None
    rows: int | None = None


def judge_store(seen: StoreObservation, thresholds: Thresholds, *, now: datetime) -> Finding:
    name = "sink"
    if not seen.exists:
        return Finding(
            name,
            Status.WARN,
            f"no ledger at {seen.location} yet",
            "start `migration-ledger sink` (or point --duckdb / MIGRATION_LEDGER_DUCKDB at it); "
            "reports, replay and audit read from there",
        )
    if seen.error is not None:
        return Finding(
            name,
            Status.FAIL,
            f"{seen.location} is not a readable ledger: {seen.error}",
            "point --duckdb / MIGRATION_LEDGER_DUCKDB at the sink's ledger folder, or fix its "
            "permissions: report, replay, audit and sql read it",
        )
    if not seen.reader_available:
        return Finding(
            name,
            Status.WARN,
            f"{seen.location} exists; this build has no store reader to ask about the sink",
            "check the sink's own progress output",
        )
    parts = [seen.location]
    if seen.rows is not None:
        parts.append(f"{seen.rows} row(s)")
    if seen.last_commit_at is None:
        return Finding(
            name,
            Status.WARN,
            ", ".join([*parts, "no commit yet"]),
            "start `migration-ledger sink`; it commits a batch every few seconds",
        )
    age = max((now - seen.last_commit_at).total_seconds(), 0.0)
    parts.append(f"last commit {_duration(age)} ago")
    if seen.lag is not None:
        parts.append(f"lag {seen.lag}")
    figure = ", ".join(parts)
    if age > thresholds.sink_age_s:
        return Finding(
            name,
            Status.WARN,
            figure,
            f"no commit for over {_duration(thresholds.sink_age_s)}: is the sink running? "
            "Reports and audits see data only up to its last commit",
        )
    if seen.lag is not None and seen.lag > thresholds.sink_lag:
        return Finding(
            name,
            Status.WARN,
            figure,
            f"sink lag above {thresholds.sink_lag}: it is falling behind the topics",
        )
    return Finding(name, Status.PASS, figure)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
