"""``report post-migration`` over a migration whose latency and errors changed by design."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lastmile_factories import migration_ledger
from report_factories import T0

from reports.catalog import ReportOptions, build_report


def latency(i: int, pool: str) -> float:
    """V1: 20, 21, 22, 23 ms; V2: half of that."""
    base = 20.0 + i % 4
    return base if pool == "v1" else base / 2


def fails(i: int, pool: str) -> bool:
    return pool == "v2" and i % 8 == 0


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = migration_ledger(
        tmp_path_factory.mktemp("post") / "ledger", per_day=24, latency=latency, fails=fails
    )
    return path


def build(path: Path, **options: Any) -> Any:
    from ledger.store import open_reader

    con = open_reader(path)
    try:
        return build_report(con, "post-migration", ReportOptions(**options))
    finally:
        con.close()


def changes(report: Any) -> dict[str, dict[str, Any]]:
    return {r["metric"]: r for r in report.section("changes").records()}


def test_the_periods_are_v1_before_the_ramp_and_v2_since_100_percent(ledger: Path) -> None:
    rows = {r["period"]: r for r in build(ledger, charts=False).section("periods").records()}
    # 24 a day: day 0 is before the ramp (set_percentage on day 1); days 4..19 at 100 %.
    assert rows["baseline"]["operations"] == 24
    assert rows["now"]["operations"] == 16 * 24
    assert rows["now"]["from"] == T0.replace(day=5)


def test_latency_quantiles_and_their_change_are_exact(ledger: Path) -> None:
    got = changes(build(ledger, charts=False))
    v1 = [20.0 + i % 4 for i in range(24)]
    v2 = [(20.0 + i % 4) / 2 for i in range(96, 480)]
    for metric, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        assert got[metric]["baseline"] == round(float(np.quantile(v1, q)), 4)
        assert got[metric]["now"] == round(float(np.quantile(v2, q)), 4)
        assert got[metric]["change"] == pytest.approx(
            np.quantile(v2, q) / np.quantile(v1, q) - 1, abs=1e-4
        )
        assert got[metric]["ci_low"] <= got[metric]["change"] <= got[metric]["ci_high"]
        assert got[metric]["ci_high"] < 0
        assert got[metric]["verdict"] == "improvement"
    assert got["cpu_ms_mean"]["change"] == pytest.approx(-0.5, abs=1e-4)


def test_the_new_errors_are_a_named_regression(ledger: Path) -> None:
    report = build(ledger, charts=False)
    got = changes(report)
    assert got["error_rate"]["baseline"] == 0.0
    assert got["error_rate"]["now"] == 48 / 384  # every 8th operation of 96..479
    assert got["error_rate"]["change_kind"] == "difference"
    assert got["error_rate"]["verdict"] == "regression"
    named = {(r["metric"], r["verdict"]) for r in report.section("named").records()}
    assert ("error_rate", "regression") in named
    assert ("p95_ms", "improvement") in named
    assert got["throughput_per_s"]["verdict"] == "no verdict"


def test_the_same_seed_gives_the_same_intervals(ledger: Path) -> None:
    first = changes(build(ledger, charts=False, extra={"seed": 3}))
    again = changes(build(ledger, charts=False, extra={"seed": 3}))
    assert first == again


def test_html_gets_one_latency_histogram_per_operation(ledger: Path) -> None:
    report = build(ledger)
    assert [c.name for c in report.charts] == ["latency-execute_program"]
    assert sum(report.charts[0].counts["baseline (V1)"]) == 24
    assert sum(report.charts[0].counts["now (V2)"]) == 384
