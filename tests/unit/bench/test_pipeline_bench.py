"""bench/pipeline.py fails loudly instead of hanging when a phase cannot finish."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "pipeline.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_pipeline", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)  # the script trims its own folder from sys.path
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


class Worker:
    """Enough of ``subprocess.Popen`` for ``wait_for``: alive, or exited with a code."""

    def __init__(self, returncode: int | None) -> None:
        self.returncode = returncode

    def poll(self) -> int | None:
        return self.returncode


def clock(bench: ModuleType, arrived: int) -> Any:
    reader = bench.ComparisonClock.__new__(bench.ComparisonClock)  # no consumer: nothing read
    reader.arrived = {f"c{n}".encode(): 0.0 for n in range(arrived)}
    reader.records = arrived + 3
    return reader


def test_no_new_comparison_for_the_stall_time_fails_with_the_count(tmp_path: Path) -> None:
    bench = load_bench()
    stuck = clock(bench, 7)
    with pytest.raises(bench.BenchFailed) as failed:
        asyncio.run(
            stuck.wait_for(10, [Worker(None), Worker(None)], stall=0.2, limit=60, logs=tmp_path)
        )
    text = str(failed.value)
    assert "no new comparison" in text
    assert "7/10" in text
    assert "10 comparison records" in text
    assert str(tmp_path) in text


def test_any_worker_that_exits_fails_the_phase_not_only_the_first(tmp_path: Path) -> None:
    bench = load_bench()
    with pytest.raises(bench.BenchFailed, match=r"\(1, -9\)"):
        asyncio.run(
            clock(bench, 0).wait_for(
                10, [Worker(None), Worker(-9)], stall=60, limit=60, logs=tmp_path
            )
        )


def test_a_phase_already_complete_returns(tmp_path: Path) -> None:
    bench = load_bench()
    done = clock(bench, 10)
    asyncio.run(done.wait_for(10, [Worker(None)], stall=0.1, limit=0.1, logs=tmp_path))
    assert len(done.arrived) == 10
