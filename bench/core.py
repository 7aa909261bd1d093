"""What the ledger core costs: routing, deciding, bucketing, folding, replaying, verifying.

Usage: ``python -P bench/core.py [--decisions N] [--versions V] [--rounds R]``

Figures, each the best of R rounds in CPU time of this process (the machine is shared):

- ``bucket`` — ``ledger.rollout.bucket`` (MD5 of salt:key);
- ``route`` — ``ledger.rollout.route``: pool, reason and bucket, no event built;
- ``decide`` — ``ledger.rollout.decide``: the same plus the validated ``RolloutDecided``;
- ``decide_command + apply`` — the flag log writer's work per command (hash and check);
- ``fold`` — rebuilding the state from a log of V versions (every hash recomputed);
- ``replay`` — one decision recomputed from that log (fold to its version + decide);
- ``verify_chain`` — the whole log;
- ``SQL bucket`` — the DuckDB expression over N ids (rows per second), if duckdb is there.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ledger import flags, rollout
from ledger.events import CommandRejected, FlagChanged
from ledger.replay import replay, verify_chain

T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
FLAG = "v2_migration"


def best(rounds: int, work: Callable[[], object]) -> float:
    """The smallest CPU time of ``rounds`` runs of ``work``."""
    times = []
    for _ in range(rounds):
        start = time.process_time()
        work()
        times.append(time.process_time() - start)
    return min(times)


def flag_log(versions: int) -> list[FlagChanged | CommandRejected]:
    state = flags.initial_state(FLAG)
    events: list[FlagChanged | CommandRejected] = []
    for i in range(versions):
        if i == 0:
            command: flags.AnyCommand = flags.Enable(
                command_id="c0", flag=FLAG, actor="bench", reason="start"
            )
        elif i % 10 == 0:
            command = flags.SetSessionOverride(
                command_id=f"c{i}",
                flag=FLAG,
                actor="bench",
                reason="pin",
                session_id=f"s{i}",
                pool="v2",
            )
        else:
            command = flags.SetPercentage(
                command_id=f"c{i}",
                flag=FLAG,
                actor="bench",
                reason="ramp",
                percentage_bp=i % 10_001,
            )
        answer = flags.decide_command(state, command, at=T0 + timedelta(seconds=i))
        assert answer is not None
        state = flags.apply(state, answer)
        events.append(answer)
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n, rounds = args.decisions, args.rounds

    log = flag_log(args.versions)
    state = flags.fold(log, FLAG)
    contexts = [
        rollout.DecisionContext(f"session-{i}", f"corr-{i}", "prod" if i % 2 else None)
        for i in range(n)
    ]

    def per_call(label: str, seconds: float, count: int) -> None:
        print(f"{label:<28} {seconds / count * 1e6:9.2f} µs/call  {count / seconds:12,.0f} /s")

    per_call(
        "bucket", best(rounds, lambda: [rollout.bucket(FLAG, c.sticky_key) for c in contexts]), n
    )
    per_call("route", best(rounds, lambda: [rollout.route(state, c) for c in contexts]), n)
    per_call(
        "decide",
        best(rounds, lambda: [rollout.decide(state, c, at=T0, event_id="d") for c in contexts]),
        n,
    )
    commands = min(args.versions, 1000)
    per_call("decide_command + apply", best(rounds, lambda: flag_log(commands)), commands)
    per_call(f"fold ({len(log)} versions)", best(rounds, lambda: flags.fold(log, FLAG)), len(log))
    middle = rollout.decide(
        flags.state_at(log, version=len(log) // 2), contexts[0], at=T0, event_id="d"
    )
    seconds = best(rounds, lambda: replay(log, middle))
    print(f"{'replay (mid-log decision)':<28} {seconds * 1e3:9.2f} ms")
    seconds = best(rounds, lambda: verify_chain(log))
    print(f"{f'verify_chain ({len(log)})':<28} {seconds * 1e3:9.2f} ms")

    try:
        import duckdb
    except ImportError:
        return
    con = duckdb.connect()
    con.execute(f"CREATE TABLE ids AS SELECT 'session-' || i AS k FROM range({n}) t(i)")
    expression = rollout.bucket_sql(rollout.sql_literal(FLAG), "k")
    start = time.perf_counter()
    con.execute(f"SELECT sum({expression}) FROM ids").fetchall()
    elapsed = time.perf_counter() - start
    print(
        f"{'SQL bucket (wall clock)':<28} {elapsed / n * 1e6:9.2f} µs/row   {n / elapsed:12,.0f} /s"
    )


if __name__ == "__main__":
    main()
