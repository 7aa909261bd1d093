"""What the health monitor costs: executions per second into windows, and judging a window.

Usage: ``python bench/health.py [--executions N] [--rounds R]``

Figures, each the best of R rounds in CPU time of this process (the machine is shared):

- ``accumulate`` — ``HealthWindows.add_operation`` on decoded executions (operation window
  and the pool's ``"*"`` window, DDSketch bins, bottom-k sample);
- ``decode+accumulate`` — the same from the wire bytes, what the agent pays per message;
- ``table round trip`` — ``to_dict`` + JSON + ``from_dict`` of one full window;
- ``assess`` — ``ledger.policy.assess`` of one V2 window against V1's (triggers, warnings,
  Mann-Whitney judge on 256 + 256 samples);
- ``merge`` — merging the partial windows of 4 partitions.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ledger.events import OperationRecorded, decode_event, encode_event
from ledger.health import HealthWindow, HealthWindows, merge_windows
from ledger.policy import HealthPolicy, assess

T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def executions(n: int, seed: int = 1) -> list[OperationRecorded]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        failed = rng.random() < 0.02
        out.append(
            OperationRecorded(
                event_id=f"e{i}",
                correlation_id=f"c{i}",
                session_id=f"s{i % 100}",
                pool="v2" if i % 2 else "v1",
                role="shadow" if i % 2 else "primary",
                operation=f"op{i % 5}",
                outcome="error" if failed else "ok",
                result=None if failed else {"rows": i % 9},
                error={"type": "timeout", "message": "slow"} if failed else None,  # type: ignore[arg-type]
                started_at=T0 + timedelta(milliseconds=i % 60_000),
                duration_ms=rng.lognormvariate(3, 0.5),
            )
        )
    return out


def best(rounds: int, run: Callable[[], int]) -> float:
    """Items per CPU second, best of ``rounds``."""
    figures = []
    for _ in range(rounds):
        start = time.process_time()
        items = run()
        figures.append(items / max(time.process_time() - start, 1e-9))
    return max(figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ops = executions(args.executions)
    wire = [encode_event(op) for op in ops]

    def accumulate() -> int:
        windows = HealthWindows()
        for op in ops:
            windows.add_operation(op)
        return len(ops)

    def decode_accumulate() -> int:
        windows = HealthWindows()
        for raw in wire:
            op = decode_event(raw, OperationRecorded)
            assert isinstance(op, OperationRecorded)
            windows.add_operation(op)
        return len(wire)

    full = HealthWindows()
    for op in ops:
        full.add_operation(op)
    star = {w.pool: w for w in full.open.values() if w.operation == "*"}

    def round_trip() -> int:
        for _ in range(50):
            HealthWindow.from_dict(json.loads(json.dumps(star["v2"].to_dict())))
        return 50

    v1, v2 = star["v1"].assessed(at=T0), star["v2"].assessed(at=T0)
    policy = HealthPolicy()
    assess(v1, v2, policy, {}, T0)  # load scipy outside the measurement

    def judge() -> int:
        for _ in range(20):
            assess(v1, v2, policy, {}, T0)
        return 20

    parts: list[HealthWindows] = [HealthWindows() for _ in range(4)]
    for i, op in enumerate(ops):
        parts[(i // 2) % 4].add_operation(op)
    key = star["v2"].key

    def merge() -> int:
        for _ in range(50):
            merge_windows(p.open[key] for p in parts)
        return 50

    print(f"{len(ops)} executions, {sum(w.count for w in star.values())} in the '*' windows")
    print(f"accumulate          {best(args.rounds, accumulate):>12,.0f} executions/s")
    print(f"decode+accumulate   {best(args.rounds, decode_accumulate):>12,.0f} executions/s")
    print(f"table round trip    {best(args.rounds, round_trip):>12,.0f} windows/s")
    print(f"assess              {best(args.rounds, judge):>12,.0f} window pairs/s")
    print(f"merge 4 partitions  {best(args.rounds, merge):>12,.0f} windows/s")
    print(f"window as JSON      {len(json.dumps(star['v2'].to_dict())):>12,} bytes")
    print(f"HealthAssessed      {len(encode_event(v2)):>12,} bytes")


if __name__ == "__main__":
    main()
