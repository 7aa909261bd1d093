"""OFREP single evaluations per second and their latency, at a target rate, on loopback.

Usage: ``python bench/serve.py [--rate R] [--seconds S] [--url URL] [--bootstrap-servers B]
[--json]`` (defaults: 1000/s for 10 s).

Without ``--url`` a server is started in a child process: the OFREP app of
``migration-ledger serve`` on 127.0.0.1, a flag client fed a fixed state (V2 on, 50 %) and the
real journaled publisher, so every pool evaluation is published as in production. The broker
is ``--bootstrap-servers`` (decisions then reach Kafka) or, by default, an address where
nothing listens (decisions stay in the publisher's journal: the caller's cost is the same
deque append). With ``--url`` (e.g. ``http://127.0.0.1:8016``) a running ``serve`` is measured.

The load is open-loop: request *i* is due at ``start + i / R`` whatever the earlier ones did,
and goes out on the first free one of 32 keep-alive connections, for 1000 sessions in turn.
The client writes HTTP/1.1 by hand on asyncio streams (an HTTP client library costs more CPU
per request than the server does, and both share the machine). Two latencies: from the moment
the request was written (``p50_ms``, ``p99_ms``), and from the moment it was due
(``*_due_ms``: includes waiting for a free connection, so falling behind shows). The
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
from urllib.parse import urlsplit

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
    address = urlsplit(url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    requests = [_request(host, f"session-{n}") for n in range(SESSIONS)]
    async with aiohttp.ClientSession() as session:
        await _wait_ready(session, url)
    queue: asyncio.Queue[int | None] = asyncio.Queue()

    async def connection() -> None:
        """One keep-alive connection: send, read the whole answer, take the next."""
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (i := await queue.get()) is not None:
                sent[i] = time.perf_counter()
                writer.write(requests[i % SESSIONS])
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
                done[i] = time.perf_counter()
        finally:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(CONNECTIONS)]
    warm = min(total, 200)  # warm up the connections and the server's code paths
    for i in range(warm):
        queue.put_nowait(i)
    while any(d == 0.0 for d in done[:warm]):
        await asyncio.sleep(0.01)
    done[:warm] = [0.0] * warm
    client_cpu = time.process_time()
    server_cpu = _cpu_seconds(server_pid) if server_pid else 0.0
    start = time.perf_counter() + 0.05
    for i in range(total):
        due[i] = start + i / rate
        delay = due[i] - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(i)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
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


def _request(host: str, session: str) -> bytes:
    body = json.dumps({"context": {"targetingKey": session}}).encode()
    head = (
        "POST /ofrep/v1/evaluate/flags/migration-pool HTTP/1.1\r\n"
        f"Host: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


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
        f"  from send: p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, "
        f"max {figures['max_ms']} ms\n"
        f"  from due:  p50 {figures['p50_due_ms']} ms, p99 {figures['p99_due_ms']} ms\n"
        f"  CPU per request: server {figures.get('server_cpu_us_per_request', '?')} us, "
        f"client {figures['client_cpu_us_per_request']} us\n"
        f"  load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs"
        f" (client and server share them)"
    )
    if options.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
