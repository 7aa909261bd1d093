"""Cleanup readiness: may V1 be removed? Pure: the figures come in, PASS/FAIL lines go out.

Two steps, because what the adapter must read depends on the flag log:

1. :func:`full_since` finds, in the flag's history, the moment V2 last reached 100 % (enabled,
   10 000 bp) and stayed there up to the end of the log; ``None`` when it is not there now.
2. The adapter counts what happened since that moment (decisions V1 served, rollbacks, dead
   letters, V1 executions) and :func:`judge_cleanup` turns those figures into checks.

The time of judgement (``now``) is passed in; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "CleanupCheck",
    "CleanupFacts",
    "FlagStep",
    "Reference",
    "full_since",
    "judge_cleanup",
]

FULL_BP = 10_000


@dataclass(frozen=True)
class FlagStep:
    """The flag's state after one accepted change (``FlagChanged`` carries the whole state)."""

    version: int
    at: datetime
    command: str
    enabled: bool
    rollout_bp: int
    shadow: bool
    session_overrides: Mapping[str, str] = field(default_factory=dict)
    environment_overrides: Mapping[str, str] = field(default_factory=dict)

    @property
    def full(self) -> bool:
        return self.enabled and self.rollout_bp >= FULL_BP


@dataclass(frozen=True)
class Reference:
    """Something that still points at V1: a session, an environment or an operation."""

    kind: str  # session | environment | operation
    name: str
    detail: str
    count: int = 0


@dataclass(frozen=True)
class CleanupFacts:
    """What the ledger says since V2 reached 100 % (``since``), as of ``now``."""

    now: datetime
    min_days: float
    steps: Sequence[FlagStep]
    since: datetime | None
    v1_decisions: int = 0
    rollbacks: int = 0
    last_rollback_at: datetime | None = None
    dead_letters: int = 0
    #: Sessions / environments / operations V1 served since ``since`` (name -> count).
    v1_sessions: Mapping[str, int] = field(default_factory=dict)
    v1_environments: Mapping[str, int] = field(default_factory=dict)
    v1_operations: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CleanupCheck:
    name: str
    passed: bool
    figure: str
    threshold: str


def full_since(steps: Sequence[FlagStep]) -> datetime | None:
    """When the current unbroken run of 100 % began; None when V2 is not at 100 % now."""
    since: datetime | None = None
    for step in sorted(steps, key=lambda s: s.version):
        holds = step.full and step.command != "rollback"
        since = (since or step.at) if holds else None
    return since


def _pinned(overrides: Mapping[str, str]) -> list[str]:
    return sorted(key for key, pool in overrides.items() if pool == "v1")


def references(facts: CleanupFacts) -> tuple[Reference, ...]:
    """Everything that still points at V1, overrides first."""
    current = max(facts.steps, key=lambda s: s.version) if facts.steps else None
    out: list[Reference] = []
    if current is not None:
        out += [
            Reference("session", s, "session override pinned to v1")
            for s in _pinned(current.session_overrides)
        ]
        out += [
            Reference("environment", e, "environment override pinned to v1")
            for e in _pinned(current.environment_overrides)
        ]
    for kind, counts in (
        ("session", facts.v1_sessions),
        ("environment", facts.v1_environments),
        ("operation", facts.v1_operations),
    ):
        verb = "executions by V1" if kind == "operation" else "decisions served by V1"
        out += [
            Reference(kind, name, f"{verb} since V2 reached 100 %", n)
            for name, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        ]
    return tuple(out)


def judge_cleanup(facts: CleanupFacts) -> tuple[CleanupCheck, ...]:
    """One check per readiness condition, in the order the runbook walks them."""
    current = max(facts.steps, key=lambda s: s.version) if facts.steps else None
    if facts.since is None:
        held = "V2 is not at 100 % now"
        days = 0.0
    else:
        days = (facts.now - facts.since).total_seconds() / 86400
        held = f"{days:.2f} days at 100 % (since {facts.since.isoformat()})"
    pinned_sessions = _pinned(current.session_overrides) if current else []
    pinned_envs = _pinned(current.environment_overrides) if current else []
    pinned = [f"session {s}" for s in pinned_sessions] + [f"environment {e}" for e in pinned_envs]
    rollback = f"{facts.rollbacks} since 100 %"
    if facts.since is None and facts.last_rollback_at is not None:
        rollback = f"last rollback {facts.last_rollback_at.isoformat()}, V2 not back at 100 %"
    return (
        CleanupCheck(
            "v2_at_100_percent",
            facts.since is not None and days >= facts.min_days,
            held,
            f">= {facts.min_days:g} days",
        ),
        CleanupCheck(
            "no_rollback_since",
            facts.since is not None and facts.rollbacks == 0,
            rollback,
            "0",
        ),
        CleanupCheck(
            "no_override_pinned_to_v1",
            not pinned,
            ", ".join(pinned) if pinned else "none",
            "none",
        ),
        CleanupCheck(
            "no_decision_served_by_v1",
            facts.since is not None and facts.v1_decisions == 0,
            f"{facts.v1_decisions} decisions" if facts.since is not None else "V2 not at 100 %",
            "0",
        ),
        CleanupCheck(
            "shadow_off",
            current is not None and not current.shadow,
            "on" if current is None or current.shadow else "off",
            "off",
        ),
        CleanupCheck(
            "no_unresolved_dead_letters",
            facts.dead_letters == 0,
            f"{facts.dead_letters} dead letters",
            "0",
        ),
    )
