"""OFREP single evaluations per second and their latency, at a target rate, on loopback.

Usage: ``python bench/serve.py [--rate R] [--seconds S] [--url URL] [--bootstrap-servers B]
[--json]`` (defaults: 1000/s for 10 s).

Without ``--url`` a server is started in a child process: the OFREP app of
``migration-ledger serve`` on 127.0.0.1, a flag client fed a fixed state (V2 on, 50 %) and the
real journaled publisher, so every pool evaluation is published as in production. The broker
is ``--bootstrap-servers`` (decisions then reach Kafka) or, by default, an address where
nothing listens (decisions stay in the publisher's journal: the caller's cost is the same
deque append). With ``--url`` (e.g. ``http://127.0.0.1:8016``) a running ``serve`` is measured.

The load is open-loop: request *i* is sent at ``start + i / R`` whatever the earlier ones did,
over 32 keep-alive connections, for 1000 sessions in turn. Two latencies: from the moment the
client issued the request (``p50_ms``, ``p99_ms``; this includes waiting for a free connection),
and from the moment it was due (``*_due_ms``: when the client falls behind its schedule this
shows it, instead of hiding the queueing). The
client runs on the same machine as the server: on a loaded machine both fight for the CPUs,
so the load average is printed beside the figures. The goal is p99 <= 5 ms at 1000/s.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python bench/serve.py`, this folder comes first on sys.path, and a script here
# named like a package (bench/ledger.py) would shadow the package itself.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import tempfile
import time
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from typing import Any

import aiohttp

SESSIONS = 1000
CONNECTIONS = 32


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(port: int, bootstrap: str, journal: str | None) -> None:
    """The child: serve's OFREP app on a fixed flag state (V2 on, 50 %)."""
    from aiohttp import web

    from ledger import flags
    from ledger.settings import Settings
    from producers.flag_client import FlagClient
    from producers.ofrep_server import OfrepService, make_app
    from producers.publisher import Publisher

    settings = Settings(bootstrap_servers=bootstrap, topic_prefix=f"bench{os.getpid()}.")
    state = flags.initial_state(settings.flag)
    client = FlagClient(settings, environ={})
    at = datetime.now(UTC)
    commands: list[dict[str, Any]] = [
        {"command": "enable"},
        {"command": "set_percentage", "percentage_bp": 5_000},
    ]
    for n, command in enumerate(commands):
        fields = {"command_id": f"bench-{n}", "flag": settings.flag, "actor": "bench"}
        decoded = flags.decode_command(json.dumps({**fields, "reason": "bench", **command}))
        event = flags.decide_command(state, decoded, at=at)
        assert event is not None
        state = flags.apply(state, event)
        client.ingest(event)
    publisher = None if journal is None else Publisher(settings, journal_path=Path(journal)).start()
    service = OfrepService(client, publisher, stale_after=1e9)
    web.run_app(make_app(service), host="127.0.0.1", port=port, print=None, access_log=None)


async def _wait_ready(session: aiohttp.ClientSession, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with session.get(f"{url}/ofrep/v1/configuration") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"no OFREP server at {url}")
        await asyncio.sleep(0.2)


async def _load(url: str, rate: float, seconds: float, server_pid: int | None) -> dict[str, Any]:
    total = int(rate * seconds)
    sent: list[float] = [0.0] * total
    done: list[float] = [0.0] * total
    due: list[float] = [0.0] * total
    errors = 0
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    endpoint = f"{url}/ofrep/v1/evaluate/flags/migration-pool"
    bodies = [
        json.dumps({"context": {"targetingKey": f"session-{n}"}}).encode() for n in range(SESSIONS)
    ]
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:
        await _wait_ready(session, url)
        for n in range(200):  # warm up connections and the server's code paths
            async with session.post(endpoint, data=bodies[n % SESSIONS], headers=headers) as r:
                await r.read()

        async def one(i: int) -> None:
            nonlocal errors
            sent[i] = time.perf_counter()
            try:
                async with session.post(
                    endpoint, data=bodies[i % SESSIONS], headers=headers
                ) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            done[i] = time.perf_counter()

        tasks: list[asyncio.Task[None]] = []
        client_cpu = time.process_time()
        server_cpu = _cpu_seconds(server_pid) if server_pid else 0.0
        start = time.perf_counter() + 0.05
        for i in range(total):
            due[i] = start + i / rate
            delay = due[i] - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        elapsed = max(done) - start
        client_cpu = time.process_time() - client_cpu
        server_cpu = _cpu_seconds(server_pid) - server_cpu if server_pid else 0.0
    latency = sorted((d - s) * 1000 for s, d in zip(sent, done, strict=True))
    from_due = sorted((d - u) * 1000 for u, d in zip(due, done, strict=True))
    return {
        "requests": total,
        "errors": errors,
        "target_rate": rate,
        "requests_per_s": round(total / elapsed, 1),
        "p50_ms": round(_quantile(latency, 0.50), 3),
        "p99_ms": round(_quantile(latency, 0.99), 3),
        "max_ms": round(latency[-1], 3),
        "p50_due_ms": round(_quantile(from_due, 0.50), 3),
        "p99_due_ms": round(_quantile(from_due, 0.99), 3),
        "client_cpu_us_per_request": round(client_cpu / total * 1e6, 1),
        **({"server_cpu_us_per_request": round(server_cpu / total * 1e6, 1)} if server_pid else {}),
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--url", help="a running `migration-ledger serve` (default: start one)")
    parser.add_argument(
        "--bootstrap-servers",
        default="127.0.0.1:1",
        help="broker for the child server's publisher (default: none, decisions journaled)",
    )
    parser.add_argument(
        "--no-publish",
        action="store_true",
        help="the child server records nothing (to see what the publisher costs)",
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    options = parser.parse_args()

    child: BaseProcess | None = None
    with tempfile.TemporaryDirectory() as tmp:
        url = options.url
        if url is None:
            port = _free_port()
            journal = None if options.no_publish else str(Path(tmp) / "journal.jsonl")
            spawned = multiprocessing.get_context("spawn").Process(
                target=_serve, args=(port, options.bootstrap_servers, journal), daemon=True
            )
            spawned.start()
            child = spawned
            url = f"http://127.0.0.1:{port}"
        try:
            pid = child.pid if child is not None else None
            figures = asyncio.run(_load(url.rstrip("/"), options.rate, options.seconds, pid))
        finally:
            if child is not None:
                child.terminate()
                child.join(10)
    load = os.getloadavg()
    figures["load_average"] = [round(x, 2) for x in load]
    figures["cpus"] = os.cpu_count()
    print(
        f"OFREP single evaluation at {options.rate:.0f}/s for {options.seconds:.0f} s on {url}:\n"
        f"  {figures['requests_per_s']} requests/s, {figures['errors']} errors\n"
        f"  from issue: p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, "
        f"max {figures['max_ms']} ms\n"
        f"  from due:   p50 {figures['p50_due_ms']} ms, p99 {figures['p99_due_ms']} ms\n"
        f"  CPU per request: server {figures.get('server_cpu_us_per_request', '?')} us, "
        f"client {figures['client_cpu_us_per_request']} us\n"
        f"  load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs"
        f" (client and server share them)"
    )
    if options.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
