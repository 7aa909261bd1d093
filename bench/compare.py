"""Pairs per second of the comparison engine beside deepdiff configured for the same rules.

Usage: ``python bench/compare.py [--seconds S] [--rounds R] [--pairs N]``

Two result sizes (about 25 and about 400 leaves). Each case cycles over N seeded V1/V2 pairs:
most equal under the rules (ignored ids and timestamps differ, floats differ below the
tolerance, tag lists come back in another order, ints come back as floats, strings in another
case), some with a real value difference, some with a missing key. Three figures per case:

- ``ledger`` — ``compare_operations``: normalizers, rules, differences, fingerprint and the
  ``ComparisonRecorded`` event, i.e. what the stream processor pays per pair;
- ``differ`` — the same without building the pydantic event;
- ``deepdiff`` — ``DeepDiff`` with the same rules (exclude_regex_paths, ignore_order_func,
  math_epsilon, ignore_string_case, ignore_numeric_type_changes) on the same results.

Each figure runs for about S seconds in R interleaved rounds and keeps its best round, counted
in CPU time of this one process: the machine is shared, so read the ratios, measured side by
side within one run.
"""

from __future__ import annotations

import argparse
import copy
import random
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from deepdiff import DeepDiff

from ledger.comparison import compare_operations, parse_rules
from ledger.comparison.diff import DifferenceSink, diff_results
from ledger.comparison.rules import RuleSet
from ledger.events import OperationRecorded

RULES = """
version = "bench-1"

[compare]
ignore = ["**.created_at", "**.request_id"]
unordered = ["**.tags"]
abs_tolerance = 1e-9
rel_tolerance = 0.0
strings = ["casefold"]
int_float_equal = true
"""

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _record(rng: random.Random, index: int) -> dict[str, Any]:
    return {
        "id": index,
        "name": f"row-{index}",
        "value": round(rng.uniform(0, 1000), 6),
        "count": rng.randint(0, 10_000),
        "valid": rng.random() > 0.1,
        "unit": rng.choice(["ms", "kb", "rows"]),
        "created_at": f"2026-01-01T00:{index % 60:02d}:00Z",
    }


def make_result(rng: random.Random, records: int) -> dict[str, Any]:
    """A realistic V2 result; ``records`` rows of 7 leaves each, plus 25 leaves around them."""
    return {
        "request_id": f"req-{rng.getrandbits(64):016x}",
        "created_at": "2026-01-01T00:00:00Z",
        "status": "completed",
        "exit_code": 0,
        "success": True,
        "program": {
            "name": f"etl-{rng.randint(1, 99)}",
            "language": "python",
            "version": "3.11",
            "args": ["--fast", f"--retry={rng.randint(1, 5)}"],
        },
        "output": {"stdout": "done\n", "lines": rng.randint(1, 500), "encoding": "utf-8"},
        "metrics": {
            "rows": rng.randint(1, 10**6),
            "score": rng.random(),
            "ratio": rng.random(),
            "bytes": rng.randint(1, 10**9),
        },
        "tags": rng.sample(["etl", "nightly", "eu", "batch", "gold", "retry"], 3),
        "items": [_record(rng, index) for index in range(records)],
        "note": None,
        "placement": {"region": "eu-west-1", "zone": "b"},
        "attempt": rng.randint(1, 3),
        "cached": False,
    }


def make_v1(rng: random.Random, v2: dict[str, Any], variant: str) -> dict[str, Any]:
    """The V1 answer to the same operation: noise the rules absorb, plus maybe a real change."""
    v1 = copy.deepcopy(v2)
    v1["request_id"] = f"req-{rng.getrandbits(64):016x}"
    v1["created_at"] = "2026-01-01T00:00:01Z"
    v1["status"] = "Completed"
    v1["metrics"]["score"] = v2["metrics"]["score"] + 1e-12
    v1["metrics"]["rows"] = float(v2["metrics"]["rows"])
    v1["tags"] = list(reversed(v2["tags"]))
    for item in v1["items"]:
        item["created_at"] = "2026-01-01T01:00:00Z"
    if variant == "value":
        v1["metrics"]["ratio"] += 0.5
    elif variant == "shape":
        del v1["output"]["encoding"]
    return v1


def count_leaves(value: Any) -> int:
    if isinstance(value, dict):
        return sum(count_leaves(inner) for inner in value.values())
    if isinstance(value, list):
        return sum(count_leaves(inner) for inner in value)
    return 1


def make_pairs(records: int, count: int, seed: int) -> list[tuple[Any, Any]]:
    rng = random.Random(seed)
    pairs = []
    for index in range(count):
        v2 = make_result(rng, records)
        variant = "value" if index % 10 == 7 else "shape" if index % 10 == 9 else "equal"
        pairs.append((make_v1(rng, v2, variant), v2))
    return pairs


def operations(pairs: list[tuple[Any, Any]]) -> list[tuple[OperationRecorded, OperationRecorded]]:
    result = []
    for index, (v1, v2) in enumerate(pairs):
        halves = []
        for pool, role, value in (("v1", "primary", v1), ("v2", "shadow", v2)):
            halves.append(
                OperationRecorded(
                    event_id=f"{pool}-{index}",
                    correlation_id=f"corr-{index}",
                    session_id=f"s-{index % 7}",
                    pool=pool,
                    role=role,
                    operation="execute_program",
                    outcome="ok",
                    result=value,
                    started_at=AT + timedelta(seconds=index),
                    duration_ms=12.5 if pool == "v1" else 9.0,
                )
            )
        result.append((halves[0], halves[1]))
    return result


def rate(seconds: float, items: list[Any], run: Callable[[Any], object]) -> float:
    """Pairs per CPU second of ``run`` over ``items`` (cycled) for about ``seconds``.

    CPU time, not wall time: on a shared machine another process's burst then costs us
    nothing but wall-clock delay.
    """
    done = 0
    start_cpu = time.process_time()
    deadline = time.perf_counter() + seconds
    while True:
        for item in items:
            run(item)
        done += len(items)
        if time.perf_counter() >= deadline:
            return done / max(time.process_time() - start_cpu, 1e-9)


def best_rates(
    seconds: float, rounds: int, runs: dict[str, tuple[list[Any], Callable[[Any], object]]]
) -> dict[str, float]:
    """The best rate of each run over ``rounds`` interleaved rounds (noise only slows down)."""
    best = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, (items, run) in runs.items():
            best[name] = max(best[name], rate(seconds / rounds, items, run))
    return best


_IGNORED = re.compile(r".*\['(created_at|request_id)'\]$")


def deepdiff_run(pair: tuple[Any, Any]) -> object:
    return DeepDiff(
        pair[0],
        pair[1],
        exclude_regex_paths=[_IGNORED],
        ignore_order_func=lambda level: level.path().endswith("['tags']"),
        math_epsilon=1e-9,
        ignore_string_case=True,
        ignore_numeric_type_changes=True,
    )


def bench_case(
    name: str, records: int, rules: RuleSet, seconds: float, rounds: int, count: int
) -> None:
    ops = operations(make_pairs(records, count, seed=records))
    # Everyone compares the results as the stream processor has them: decoded from JSON.
    pairs = [(v1.result, v2.result) for v1, v2 in ops]
    compiled = rules.for_operation("execute_program")
    root = compiled.root

    def ledger_run(pair: tuple[OperationRecorded, OperationRecorded]) -> object:
        return compare_operations(pair[0], pair[1], rules, at=AT)

    def differ_run(pair: tuple[Any, Any]) -> object:
        sink = DifferenceSink(compiled.max_differences)
        diff_results(pair[0], pair[1], root, sink)
        return sink

    categories: dict[str, int] = {}
    for pair in ops:
        category = compare_operations(pair[0], pair[1], rules, at=AT).category
        categories[category] = categories.get(category, 0) + 1
    rates = best_rates(
        seconds,
        rounds,
        {
            "ledger": (ops, ledger_run),
            "differ": (pairs, differ_run),
            "deepdiff": (pairs[: max(4, count // 10)], deepdiff_run),
        },
    )
    theirs = rates["deepdiff"]
    leaves = count_leaves(pairs[0][1])
    print(f"{name}: {leaves} leaves, {count} pairs cycled, categories {categories}")
    for figure in ("ledger", "differ"):
        ours = rates[figure]
        print(f"  {figure:<8} {ours:>10,.0f} pairs/s   ({ours / theirs:,.0f}x deepdiff)")
    print(f"  deepdiff {theirs:>10,.0f} pairs/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="per figure (default 1.5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, best kept")
    parser.add_argument("--pairs", type=int, default=200, help="distinct pairs per case")
    args = parser.parse_args()
    rules = parse_rules(RULES, "bench rules")
    print("pairs per CPU second on one core, best of interleaved rounds")
    bench_case("small", 0, rules, args.seconds, args.rounds, args.pairs)
    bench_case("large", 53, rules, args.seconds, args.rounds, args.pairs)


if __name__ == "__main__":
    main()
