"""The pipeline tests' messy stream at size: one comparison per pair, with a kill mid-stream.

    .venv/bin/python bench/messy_stream.py [--pairs 10000] [--no-kill] [--json]
        [--bootstrap-servers 127.0.0.1:9092]

tests/integration/test_pipeline.py runs this scenario at 1,000 pairs, which has every kind
of mess in it (pairs out of order, retried duplicates, missing shadows, malformed input) and a
kill a quarter of the way through; what 10,000 pairs add is time. This script is that run at
the size the suite used to pay on every change: it publishes the stream, runs
``migration-ledger worker`` (killed with SIGKILL after a quarter of the comparisons and started
again, unless ``--no-kill``), and prints how long the stream took and whether each pair got
exactly one comparison (copies after the kill must be identical). Without ``--bootstrap-servers``
it starts a broker of its own on free ports.

Figures only, nothing here asserts timing; the exit code is 1 when a pair has no comparison,
two different ones, or a category other than the one expected.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

# bench/ holds a ledger.py of its own; the script's folder must not shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "integration"))

from pipeline_support import TopicReader, Worker, messy_stream, publish  # noqa: E402

from ledger.kafka.admin import ensure_topics  # noqa: E402
from ledger.kafka.broker import LocalBroker, free_ports  # noqa: E402
from ledger.settings import Settings  # noqa: E402


def run(bootstrap: str, pairs: int, *, kill: bool, workdir: Path) -> dict[str, object]:
    settings = Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
        duckdb=workdir / "ledger",
    )
    ensure_topics(settings)
    stream = messy_stream(pairs, seed=11)
    worker = Worker(settings, workdir, pairing_timeout=3.0)
    comparisons = TopicReader(bootstrap, settings.topic("comparisons"))
    killed_at: int | None = None

    def distinct() -> int:
        return len({value["correlation_id"] for value in comparisons.values})

    started = time.monotonic()
    worker.start()
    try:
        publish(bootstrap, settings.topic("operations"), stream.messages)
        published = time.monotonic()
        if kill:
            comparisons.until(lambda: distinct() >= pairs // 4, timeout=1800, worker=worker)
            worker.kill()
            killed_at = distinct()
            worker.start()
        comparisons.until(lambda: distinct() >= pairs, timeout=3600, worker=worker)
        done = time.monotonic()
        comparisons.poll(6.0)  # anything more would be a comparison too many
        worker.stop()
    finally:
        worker.stop()
        comparisons.close()

    categories: dict[str, set[str]] = {}
    for value in comparisons.values:
        categories.setdefault(value["correlation_id"], set()).add(value["category"])
    got = {cid: next(iter(c)) for cid, c in categories.items() if len(c) == 1}
    return {
        "pairs": pairs,
        "messages": len(stream.messages),
        "kill": kill,
        "killed_at": killed_at,
        "comparisons": len(comparisons.values),
        "copies": len(comparisons.values) - len(categories),
        "publish_s": round(published - started, 2),
        "stream_s": round(done - started, 2),
        "pairs_per_s": round(pairs / (done - started), 1),
        "exactly_one_each": got == stream.expected and len(got) == len(categories),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--no-kill", action="store_true", help="one worker, never killed")
    parser.add_argument("--bootstrap-servers", default=None)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-messy-") as folder:
        workdir = Path(folder)
        broker: LocalBroker | None = None
        bootstrap = args.bootstrap_servers
        if bootstrap is None:
            port, controller_port = free_ports(2)
            broker = LocalBroker(
                Settings().cache_dir,
                port=port,
                controller_port=controller_port,
                state_root=workdir / "broker",
            )
            broker.up(timeout=120.0, die_with_parent=True)
            bootstrap = broker.bootstrap
        try:
            result = run(bootstrap, args.pairs, kill=not args.no_kill, workdir=workdir)
        finally:
            if broker is not None:
                broker.down()
    print(
        f"{result['pairs']:,} pairs ({result['messages']:,} messages), "
        f"{'killed at ' + str(result['killed_at']) if result['kill'] else 'no kill'}: "
        f"{result['stream_s']} s to the last comparison ({result['pairs_per_s']} pairs/s, "
        f"publishing {result['publish_s']} s of it); {result['comparisons']:,} comparisons, "
        f"{result['copies']} identical copies; exactly one each: {result['exactly_one_each']}"
    )
    if args.json:
        print(json.dumps(result))
    return 0 if result["exactly_one_each"] else 1


if __name__ == "__main__":
    sys.exit(main())
