"""Speed of the first- and last-mile reports (compatibility, cleanup, post-migration) and of
``archive``, on ``bench/reports.py``'s synthetic ledger.

Prints each figure (wall and CPU seconds of the fastest round) and, with ``--json``, one JSON
line at the end. The machine is shared: note the load average printed beside the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as a script, this folder comes first on sys.path and bench/reports.py would hide the
# ``reports`` package; load it under another name instead.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)


def _bench_reports() -> Any:
    spec = importlib.util.spec_from_file_location(
        "bench_reports", Path(__file__).with_name("reports.py")
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    bench = _bench_reports()
    from ledger.store import archive_before, open_reader
    from reports.catalog import ReportOptions, build_report

    root = Path(tempfile.mkdtemp(prefix="bench-lastmile-"))
    figures: dict[str, float] = {}
    try:
        path = root / "ledger"
        rows = bench.build(path, args.events)
        print(f"built {sum(rows.values()):,} events: {rows}")
        con = open_reader(path)
        runs = {
            "compatibility": ReportOptions(
                flag=bench.FLAG, charts=False, extra={"pair_limit": 100_000}
            ),
            "cleanup": ReportOptions(
                flag=bench.FLAG, charts=False, extra={"now": datetime(2025, 4, 1, tzinfo=UTC)}
            ),
            "post-migration": ReportOptions(flag=bench.FLAG, charts=False),
        }
        for name, options in runs.items():
            wall, cpu = bench.timed(args.rounds, lambda n=name, o=options: build_report(con, n, o))
            figures[f"report {name} wall_s"] = wall
            figures[f"report {name} cpu_s"] = cpu
        con.close()
        start, cpu0 = time.perf_counter(), time.process_time()
        result = archive_before(path, datetime(2025, 3, 5, tzinfo=UTC), root / "archive")
        figures["archive wall_s"] = time.perf_counter() - start
        figures["archive cpu_s"] = time.process_time() - cpu0
        # The synthetic ledger has one segment per (topic, partition): each is its partition's
        # newest, which archive keeps; so this times the scan and the decisions, not copying.
        figures["archive rows"] = float(sum(result.rows.values()))
        figures["archive segments kept"] = float(len(result.kept))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load = Path("/proc/loadavg").read_text().strip() if os.path.exists("/proc/loadavg") else "?"
    for key, value in figures.items():
        print(f"  {key:<36} {value:>12,.3f}")
    print(f"  loadavg {load}")
    if args.json:
        print(json.dumps({"events": args.events, "loadavg": load, **figures}))


if __name__ == "__main__":
    main()
