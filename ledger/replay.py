"""Replay: recompute a recorded decision from the flag log, and verify the log's hash chain.

``replay(flag_events, decision)`` folds the flag log up to the decision's ``flag_version``
and runs the same ``ledger.rollout`` code on the decision's own context, then says whether
the result matches and why (the rule that fired, the bucket, the threshold).

``chain_report(flag_events)`` walks the log and names the first version that is wrong and
how: ``changed`` (its content no longer matches its hash, or it was rewritten with a new
hash so that its successor no longer links to it), ``missing`` (a gap), ``reordered`` (a
version appears after a later one) or ``inserted`` (an event that is not part of the chain).
``verify_chain`` does the same and raises ``BrokenChainError`` (a ``ChainError``) on the
first problem. Two things no chain can show on its own: the last events removed, and a
whole suffix rewritten with recomputed hashes; rejections recorded after the end
(``CommandRejected.current_version``) reveal the former.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from ledger.errors import ChainError
from ledger.events import CommandRejected, DecisionReason, FlagChanged, Pool, RolloutDecided
from ledger.flags import GENESIS_HASH, FlagState, flag_event_hash, format_bp, state_at
from ledger.rollout import HASH_VERSIONS, DecisionContext, route

__all__ = [
    "BrokenChainError",
    "ChainProblem",
    "ChainReport",
    "Explanation",
    "chain_report",
    "replay",
    "verify_chain",
]

FlagEvent = FlagChanged | CommandRejected


# --- decisions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Explanation:
    """A recorded decision beside its recomputation from the flag log.

    ``rule`` is the precedence rule that fired (``ENVIRONMENT_OVERRIDE``, ``SESSION_OVERRIDE``,
    ``DISABLED`` or ``SPLIT``); ``reason`` is the recomputed reason, which is ``CIRCUIT_OPEN``
    when the breaker turned a V2 answer into V1. The breaker's state is not in the flag log:
    a decision recorded with ``CIRCUIT_OPEN`` is replayed with the breaker open, any other with
    it closed. ``problem`` says why nothing could be recomputed (then ``matches`` is False).
    """

    decision_id: str
    flag: str
    flag_version: int
    matches: bool
    sticky_key: str
    recorded_pool: Pool
    recorded_reason: DecisionReason
    recorded_bucket: int | None
    recorded_threshold_bp: int | None
    breaker_open: bool
    pool: Pool | None = None
    reason: DecisionReason | None = None
    rule: DecisionReason | None = None
    bucket: int | None = None
    threshold_bp: int | None = None
    v2_pool_enabled: bool | None = None
    state: str | None = None
    differences: tuple[str, ...] = ()
    problem: str | None = None

    def describe(self) -> str:
        """A few lines for people: verdict, flag version, rule, bucket against threshold."""
        verdict = "MATCHES" if self.matches else "DIFFERS"
        lines = [f"decision {self.decision_id}: {verdict}"]
        lines.append(f"  flag {self.flag} at version {self.flag_version}: {self.state or '?'}")
        if self.problem is not None:
            lines.append(f"  cannot recompute: {self.problem}")
        else:
            lines.append(f"  rule fired: {self.rule}; breaker open: {self.breaker_open}")
            if self.bucket is not None and self.threshold_bp is not None:
                side = "<" if self.bucket < self.threshold_bp else ">="
                lines.append(
                    f"  bucket of {self.sticky_key!r}: {self.bucket} {side} threshold "
                    f"{self.threshold_bp} ({format_bp(self.threshold_bp)})"
                )
            lines.append(f"  recomputed: {self.pool} ({self.reason})")
        lines.append(f"  recorded:   {self.recorded_pool} ({self.recorded_reason})")
        lines.extend(f"  differs in {difference}" for difference in self.differences)
        return "\n".join(lines)


def replay(flag_events: Iterable[FlagEvent], decision: RolloutDecided) -> Explanation:
    """Recompute ``decision`` from the flag state at its ``flag_version`` and compare.

    Events of other flags are ignored. A broken chain before that version, a version the
    log does not reach or an unknown ``hash_version`` give an explanation with ``problem``.
    """
    context = DecisionContext(
        session_id=decision.session_id,
        correlation_id=decision.correlation_id,
        environment=decision.environment,
        breaker_open=decision.reason == DecisionReason.CIRCUIT_OPEN,
    )
    recorded = Explanation(
        decision_id=decision.event_id,
        flag=decision.flag,
        flag_version=decision.flag_version,
        matches=False,
        sticky_key=context.sticky_key,
        recorded_pool=decision.pool,
        recorded_reason=decision.reason,
        recorded_bucket=decision.bucket,
        recorded_threshold_bp=decision.threshold_bp,
        breaker_open=context.breaker_open,
    )
    if decision.hash_version not in HASH_VERSIONS:
        return _with(
            recorded,
            problem=f"hash version {decision.hash_version} is unknown to this build "
            f"(it knows {', '.join(str(v) for v in HASH_VERSIONS)})",
        )
    events = [event for event in flag_events if event.flag == decision.flag]
    try:
        state = state_at(events, version=decision.flag_version, flag=decision.flag)
    except (ChainError, ValueError) as exc:
        return _with(recorded, problem=str(exc))
    return explain(state, decision, context, recorded)


def explain(
    state: FlagState, decision: RolloutDecided, context: DecisionContext, recorded: Explanation
) -> Explanation:
    """The comparison itself, once the state at the decision's version is known."""
    # The rule that fired before the breaker had its say (CIRCUIT_OPEN hides it).
    version = decision.hash_version
    rule = route(state, replace(context, breaker_open=False), version)[1]
    pool, reason, slot = route(state, context, version)
    threshold = state.values.v2_rollout_bp
    differences = []
    if pool != decision.pool:
        differences.append(f"pool: recorded {decision.pool}, recomputed {pool}")
    if reason != decision.reason:
        differences.append(f"reason: recorded {decision.reason}, recomputed {reason}")
    # A record without its bucket or threshold cannot be checked: it does not match (audit
    # judges it the same way; the wire contract refuses such decisions at the door).
    if slot != decision.bucket:
        recorded_bucket = "nothing" if decision.bucket is None else decision.bucket
        differences.append(f"bucket: recorded {recorded_bucket}, recomputed {slot}")
    if threshold != decision.threshold_bp:
        recorded_threshold = "nothing" if decision.threshold_bp is None else decision.threshold_bp
        differences.append(f"threshold: recorded {recorded_threshold}, recomputed {threshold}")
    evidence = state.last_hash if state.version > 0 else None
    if decision.flag_event_hash is not None and decision.flag_event_hash != evidence:
        differences.append(
            f"flag event hash: recorded {decision.flag_event_hash[:12]}…, "
            f"version {state.version} has {str(evidence)[:12]}…"
        )
    return _with(
        recorded,
        matches=not differences,
        pool=pool,
        reason=reason,
        rule=rule,
        bucket=slot,
        threshold_bp=threshold,
        v2_pool_enabled=state.values.v2_pool_enabled,
        state=state.values.describe(),
        differences=tuple(differences),
    )


def _with(explanation: Explanation, **changes: object) -> Explanation:
    return replace(explanation, **changes)  # type: ignore[arg-type]


# --- the hash chain --------------------------------------------------------------------------


class ChainProblem(StrEnum):
    CHANGED = "changed"
    MISSING = "missing"
    REORDERED = "reordered"
    INSERTED = "inserted"


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The verdict on one flag's log: fine, or the first bad version and what is wrong."""

    flag: str | None
    #: Versions checked and found sound (all of them when ``ok``).
    versions: int
    #: The hash of the last sound version (the genesis hash for an empty log).
    head_hash: str
    first_bad_version: int | None = None
    problem: ChainProblem | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        if self.ok:
            return f"flag {self.flag}: {self.versions} version(s), hash chain verified"
        return f"flag {self.flag}: version {self.first_bad_version} {self.problem}: {self.detail}"


class BrokenChainError(ChainError):
    """A flag log whose chain does not verify; ``report`` says where and how."""

    def __init__(self, report: ChainReport) -> None:
        super().__init__(report.describe())
        self.report = report


def verify_chain(flag_events: Iterable[FlagEvent], *, flag: str | None = None) -> ChainReport:
    """The report of a sound log; raises ``BrokenChainError`` naming the first bad version."""
    report = chain_report(flag_events, flag=flag)
    if not report.ok:
        raise BrokenChainError(report)
    return report


def chain_report(flag_events: Iterable[FlagEvent], *, flag: str | None = None) -> ChainReport:
    """Check versions, links and hashes of one flag's log, in the order given.

    ``flag`` may be left out when the events are of one flag only.
    """
    items = list(flag_events)
    if flag is None:
        present = sorted({event.flag for event in items})
        if len(present) > 1:
            raise ValueError(f"events of several flags ({', '.join(present)}): pass flag=")
        flag = present[0] if present else None
    changes = [e for e in items if isinstance(e, FlagChanged) and e.flag == flag]
    report = _first_problem(flag, changes)
    if report is not None:
        return report
    head = changes[-1].hash if changes else GENESIS_HASH
    last = len(changes)
    beyond = [
        e
        for e in items
        if isinstance(e, CommandRejected) and e.flag == flag and e.current_version > last
    ]
    if beyond:
        first = beyond[0]
        return ChainReport(
            flag,
            last,
            head,
            last + 1,
            ChainProblem.MISSING,
            f"the log ends at version {last}, but command {first.command_id} was rejected "
            f"when the flag was at version {first.current_version}",
        )
    return ChainReport(flag, last, head)


def _first_problem(flag: str | None, changes: Sequence[FlagChanged]) -> ChainReport | None:
    count = len(changes)

    def bad(index: int, version: int, problem: ChainProblem, detail: str) -> ChainReport:
        head = changes[index - 1].hash if index > 0 else GENESIS_HASH
        return ChainReport(flag, index, head, version, problem, detail)

    for i, event in enumerate(changes):
        expected = i + 1
        prev_hash = changes[i - 1].hash if i else GENESIS_HASH
        if event.version > expected:
            later = next((j for j in range(i + 1, count) if changes[j].version == expected), None)
            if later is not None:
                return bad(
                    i,
                    expected,
                    ChainProblem.REORDERED,
                    f"version {expected} is at position {later + 1}, after version "
                    f"{event.version} (position {i + 1})",
                )
            return bad(
                i,
                expected,
                ChainProblem.MISSING,
                f"version {expected} is missing: version {event.version} follows "
                f"version {expected - 1}",
            )
        if event.version < expected:
            return bad(i, event.version, ChainProblem.INSERTED, _twin(changes, i))
        if event.prev_hash != prev_hash:
            if i + 1 < count and changes[i + 1].prev_hash == prev_hash:
                return bad(
                    i,
                    event.version,
                    ChainProblem.INSERTED,
                    f"event {event.event_id} is not part of the chain: version "
                    f"{changes[i + 1].version} links past it to version {expected - 1}",
                )
            before_previous = changes[i - 2].hash if i >= 2 else GENESIS_HASH
            if i >= 1 and event.prev_hash == before_previous:
                inserted = changes[i - 1]
                return bad(
                    i - 1,
                    inserted.version,
                    ChainProblem.INSERTED,
                    f"event {inserted.event_id} is not part of the chain: the next event "
                    f"({event.event_id}) links past it to version {expected - 2}",
                )
            if flag_event_hash(event) != event.hash or i == 0:
                return bad(
                    i,
                    event.version,
                    ChainProblem.CHANGED,
                    f"version {event.version}'s prev_hash is not version {expected - 1}'s "
                    "hash, and its own content was edited",
                )
            return bad(
                i - 1,
                expected - 1,
                ChainProblem.CHANGED,
                f"version {expected - 1} was rewritten: version {event.version} recorded "
                f"prev_hash {event.prev_hash[:12]}..., it now hashes to {prev_hash[:12]}...",
            )
        if flag_event_hash(event) != event.hash:
            return bad(
                i,
                event.version,
                ChainProblem.CHANGED,
                f"version {event.version}'s content no longer matches its hash",
            )
    return None


def _twin(changes: Sequence[FlagChanged], i: int) -> str:
    """Which of two events claiming one version is not part of the chain, in words."""
    event = changes[i]
    version = event.version
    twin = changes[version - 1]
    if event == twin:
        return f"version {version} appears twice (a second copy at position {i + 1})"
    # The prefix up to i is sound, so the event after the twin (if any) links to the twin.
    twin_followed = version < i
    event_followed = i + 1 < len(changes) and changes[i + 1].prev_hash == event.hash
    if event_followed and not twin_followed:
        impostor, genuine = twin, event
    elif twin_followed and not event_followed:
        impostor, genuine = event, twin
    else:
        return (
            f"two events claim version {version} ({twin.event_id}, {event.event_id}) and "
            "nothing after them tells which one was inserted"
        )
    return (
        f"two events claim version {version}: {impostor.event_id} is not part of the chain "
        f"(the log goes on from {genuine.event_id})"
    )
