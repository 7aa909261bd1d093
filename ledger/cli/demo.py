"""``migration-ledger demo``: a whole migration, end to end, on the embedded defaults.

It uses the real parts and nothing else: the local Kafka broker (started if none answers), the
stream worker and the ledger sink as child processes, and the producers' shadow runner driving
simulated V1/V2 pools in this process. The story it plays:

1. shadow mode: V1 answers every caller, V2 runs in the shadow;
2. the switchover controller ramps V2 through the demo plan's stages (seconds, not hours);
3. a V2 incident (error rate x10) starts; the health monitor catches it and rolls V2 back;
4. the sink catches up, and the summary report is printed and written as HTML.

Every run gets its own topic prefix and ledger folder, so the report counts this run only and
can be checked against a direct DuckDB count of the same ledger. Whatever it started, it stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ledger.cli.options import (
    FLAG_LOG_NOT_READ,
    FLAG_LOG_WAIT_S,
    BootstrapOption,
    TopicPrefixOption,
    build_settings,
)
from ledger.errors import LedgerError
from ledger.kafka.admin import ensure_topics
from ledger.kafka.broker import LocalBroker, probe_metadata
from ledger.kafka.log import LogReader
from ledger.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from producers.flag_client import FlagClient
    from producers.publisher import Publisher
    from producers.simulator import Traffic

__all__ = ["demo"]

#: Health windows short enough for a rollback within seconds, long enough for ~200 samples.
HEALTH_WINDOW_S = 4.0
HEALTH_GRACE_S = 1.0
PAIRING_TIMEOUT_S = 3.0
SHADOW_PHASE_S = 12.0
RAMP_LIMIT_S = 90.0
ROLLBACK_LIMIT_S = 40.0
INCIDENT = "v2:error_rate*10"
#: A 4 s window holds ~100 executions per operation: at the simulator's ~1 % base error rate,
#: 3 errors against V1's 0 happen by chance. The demo asks for evidence an x10 incident gives
#: at once and noise does not (production windows are 60 s and hold far more executions).
DEMO_POLICY = """\
error_rate_floor = 0.06
min_error_count = 6
mismatch_rate = 0.08
min_mismatch_count = 6
p99_floor_ms = 50.0
"""
#: The demo plan's stages, with a mismatch gate above the simulator's noise (~2 %: its real
#: value/shape differences plus V2's own base errors); the packaged plan holds at 1 %.
DEMO_PLAN = """\
name = "demo"
min_samples = 20
max_mismatch_rate = 0.05
command_timeout_s = 5.0
""" + "".join(
    f"[[stages]]\npercentage = {p}\nsoak_s = {0 if p == 100 else 6}\n"
    for p in (5, 10, 25, 50, 75, 100)
)


@dataclass
class _Children:
    """Child processes, each with its log file; stopped with SIGTERM, then SIGKILL."""

    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "ledger", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        log.close()

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise _DemoError(
                    f"the {name} stopped unexpectedly (exit {process.returncode}); "
                    f"see {self.logs / (name + '.log')}"
                )

    def stop(self, name: str, timeout: float = 20.0) -> int | None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)


class _DemoError(Exception):
    """The demo cannot go on; the message says where to look."""


def demo(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for this run's ledger, logs and HTML report")
    ] = Path("demo-out"),
    rate: Annotated[float, typer.Option("--rate", min=5, help="Operations per second")] = 40.0,
    sessions: Annotated[int, typer.Option("--sessions", min=1)] = 400,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same traffic")] = 7,
    bootstrap_servers: BootstrapOption = None,
    topic_prefix: TopicPrefixOption = None,
) -> None:
    """Play a whole migration end to end: shadow, ramp, incident, automatic rollback, report."""
    # Deferred: rich loads only when something is printed.
    from rich.console import Console

    console = Console()
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    run_dir = (out / f"run-{stamp}").resolve()
    run_dir.mkdir(parents=True, exist_ok=False)
    policy = run_dir / "health-policy.toml"
    policy.write_text(DEMO_POLICY)
    (run_dir / "demo-plan.toml").write_text(DEMO_PLAN)
    settings = build_settings(
        bootstrap_servers,
        topic_prefix if topic_prefix is not None else f"demo-{stamp}.",
        run_dir / "ledger",
        health_window=HEALTH_WINDOW_S,
        health_grace=HEALTH_GRACE_S,
        pairing_timeout=PAIRING_TIMEOUT_S,
        health_policy=policy,
    )
    started = time.monotonic()
    try:
        _play(console, settings, run_dir, rate=rate, sessions=sessions, seed=seed)
    except _DemoError as exc:
        console.print(f"[red]Demo failed:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"[bold green]Demo finished in {time.monotonic() - started:.0f} s.[/bold green]")


def _play(
    console: Console, settings: Settings, run_dir: Path, *, rate: float, sessions: int, seed: int
) -> None:

    children = _Children(run_dir)
    with contextlib.ExitStack() as cleanup:
        try:
            cleanup.callback(children.stop_all)
            _ensure_broker(console, settings, cleanup)
            _start_pipeline(console, settings, children)
            _migrate(console, settings, children, rate=rate, sessions=sessions, seed=seed)
            _drain(console, settings, children)
        except LedgerError as exc:
            raise _DemoError(str(exc)) from exc
    _report(console, settings, run_dir)


def _ensure_broker(console: Console, settings: Settings, cleanup: contextlib.ExitStack) -> None:
    """Use the broker the settings name; start the local one if nothing answers there."""
    first = settings.bootstrap_servers.split(",")[0]
    host, _, port_text = first.rpartition(":")
    with console.status(f"Looking for Kafka at {settings.bootstrap_servers}"):
        reachable = _answers(probe_metadata, first)
    if reachable:
        console.print(f"Kafka: using the broker at {settings.bootstrap_servers}")
        return
    if host not in {"127.0.0.1", "localhost"}:
        raise _DemoError(f"no Kafka broker answers at {settings.bootstrap_servers}")
    broker = LocalBroker(settings.cache_dir, port=int(port_text))
    with console.status(f"Starting a local Kafka broker on port {port_text}"):
        broker.up()
    cleanup.callback(broker.down)
    console.print(f"Kafka: started a local broker at {broker.bootstrap} (stopped at the end)")


def _answers(probe: Any, bootstrap: str) -> bool:
    try:
        probe(bootstrap, timeout=2.0)
    except (OSError, ValueError, RuntimeError):
        return False
    return True


def _child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MIGRATION_LEDGER_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        MIGRATION_LEDGER_TOPIC_PREFIX=settings.topic_prefix,
        MIGRATION_LEDGER_DUCKDB=str(settings.duckdb),
        MIGRATION_LEDGER_HEALTH_WINDOW=str(settings.health_window),
        MIGRATION_LEDGER_HEALTH_GRACE=str(settings.health_grace),
        MIGRATION_LEDGER_PAIRING_TIMEOUT=str(settings.pairing_timeout),
    )
    if settings.health_policy is not None:
        env["MIGRATION_LEDGER_HEALTH_POLICY"] = str(settings.health_policy)
    return env


def _start_pipeline(console: Console, settings: Settings, children: _Children) -> None:

    with console.status("Creating the topics"):
        ensure_topics(settings, connect_timeout_s=10.0)
    env = _child_env(settings)
    children.start("worker", ["worker", "--without-web", "--loglevel", "info"], env)
    children.start("sink", ["sink", "--quiet"], env)
    with console.status("Waiting for the worker to join its topics"):
        _wait_for_worker(children)
    console.print(
        f"Worker and sink started (topics prefixed {settings.topic_prefix!r}, "
        f"ledger at {settings.duckdb}; logs beside it)"
    )


def _wait_for_worker(children: _Children, timeout: float = 90.0) -> None:
    """Faust logs ``[^Worker]: Ready`` once its agents run and partitions are assigned."""
    log = children.logs / "worker.log"
    deadline = time.monotonic() + timeout
    while b"]: Ready" not in log.read_bytes():
        children.check_alive()
        if time.monotonic() > deadline:
            raise _DemoError(f"the worker was not ready within {timeout:.0f} s; see {log}")
        time.sleep(0.5)


def _command(settings: Settings, *argv: str) -> None:
    """Run one of our own CLI commands (flags, switchover) the way an operator would."""
    done = subprocess.run(
        [sys.executable, "-m", "ledger", *argv],
        env=_child_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise _DemoError(f"`migration-ledger {' '.join(argv)}` failed: {done.stdout}{done.stderr}")


@dataclass
class _Run:
    """What the progress line shows while traffic flows."""

    progress: Progress
    task: TaskID
    client: FlagClient
    publisher: Publisher
    children: _Children
    traffic: Traffic | None = None
    phase: str = ""

    def show(self, phase: str | None = None) -> None:
        if phase is not None:
            self.phase = phase
        state = self.client.state
        pool = f"V2 {'on' if state.v2_pool_enabled else 'off'} {state.v2_rollout_bp / 100:g}%"
        done = self.traffic.completed if self.traffic is not None else 0
        self.progress.update(
            self.task,
            description=self.phase,
            line=f"{pool} · flag v{state.version} · {done:,} ops · "
            f"{self.publisher.stats.delivered:,} events sent",
        )
        self.children.check_alive()

    def wait(self, seconds: float, until: Any = None) -> bool:
        """Keep the display fresh for ``seconds`` or until ``until()`` holds."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.show()
            if until is not None and until():
                return True
            time.sleep(0.25)
        return until is None


def _migrate(
    console: Console,
    settings: Settings,
    children: _Children,
    *,
    rate: float,
    sessions: int,
    seed: int,
) -> None:
    # Deferred: rich loads only when something is printed; the producers load kafka-python: only the
    # traffic commands need them.
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from producers.flag_client import FlagClient
    from producers.publisher import Publisher
    from producers.shadow import ShadowRunner
    from producers.simulator import Simulator, Traffic, Workload, parse_incidents

    # kafka-python logs every reconnect; the publisher says once what matters.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    client = FlagClient(settings).start()
    if not client.wait_until_current(timeout=FLAG_LOG_WAIT_S):  # else it decides on defaults
        console.print(FLAG_LOG_NOT_READ)
    publisher = Publisher(settings, journal_path=settings.duckdb.parent / "journal.jsonl").start()
    workload = Workload(seed=seed, sessions=sessions, rate=rate)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description:<34}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[line]}"),
        console=console,
    )
    run: _Run | None = None
    runner: ShadowRunner | None = None
    try:
        with progress:
            run = _Run(progress, progress.add_task("", line=""), client, publisher, children)
            # 1. Shadow mode: the flag's defaults (V2 off, shadow on) need no command at all.
            simulator = Simulator(seed=seed)
            runner = ShadowRunner(simulator.v1, simulator.v2, client, publisher)
            run.traffic = Traffic(runner, workload, simulator=simulator).start()
            run.wait(SHADOW_PHASE_S, lambda: False)
            console.print(f"1. shadow mode: {run.traffic.completed:,} operations answered by V1")

            # 2. The controller ramps through the demo plan's stages.
            run.show("starting the switchover")
            plan = str(settings.duckdb.parent / "demo-plan.toml")
            _command(settings, "switchover", "start", "--plan", plan, "--reason", "demo ramp")
            run.show("ramping V2 through the stages")
            ramped = run.wait(RAMP_LIMIT_S, lambda: client.state.v2_rollout_bp >= 10_000)
            state = client.state
            if not ramped:
                raise _DemoError(
                    f"the ramp stopped at {state.v2_rollout_bp / 100:g}% after {RAMP_LIMIT_S:.0f}"
                    " s; `migration-ledger switchover status` says why"
                )
            console.print(f"2. ramp: V2 serves 100% at flag version {state.version}")

            # 3. A V2 incident from the next operation on; the health monitor must roll back.
            run.traffic.close()
            first = run.traffic.issued
            runner.close()
            at_s = first / rate
            incident = parse_incidents([f"{INCIDENT}@{at_s:.3f}s"])
            simulator = Simulator(seed=seed, incidents=incident)
            runner = ShadowRunner(simulator.v1, simulator.v2, client, publisher)
            run.traffic = Traffic(runner, workload, simulator=simulator, first=first).start()
            run.show(f"V2 incident: {INCIDENT}")
            rolled_back = run.wait(ROLLBACK_LIMIT_S, lambda: not client.state.v2_pool_enabled)
            if not rolled_back:
                raise _DemoError(
                    f"the health monitor did not roll back within {ROLLBACK_LIMIT_S:.0f} s; "
                    f"see {children.logs / 'worker.log'}"
                )
            console.print(
                f"3. incident caught: V2 rolled back automatically at flag version "
                f"{client.state.version}"
            )
            run.wait(3.0, lambda: False)
            run.traffic.close()
            runner.close()
            run.show("delivering the last events")
            if not publisher.flush(30):
                raise _DemoError("events are still waiting in the publisher's journal")
    finally:
        if run is not None and run.traffic is not None:
            run.traffic.close()
        if runner is not None:
            runner.close()
        publisher.close(timeout=5)
        client.close()


def _drain(console: Console, settings: Settings, children: _Children) -> None:
    """Let the worker close its pairs, then wait until the sink holds every event."""
    with console.status("Closing the last pairs and health windows"):
        time.sleep(settings.pairing_timeout + settings.health_window + settings.health_grace)
        children.check_alive()
        children.stop("worker")
    with console.status("Waiting for the sink to store every event"):
        ends = _end_offsets(settings)
        deadline = time.monotonic() + 60
        while _stored_offsets(settings) != ends:
            children.check_alive()
            if time.monotonic() > deadline:
                raise _DemoError("the sink did not catch up within 60 s; see sink.log")
            time.sleep(0.5)
        children.stop("sink")
    console.print(f"4. sink caught up: {sum(ends.values()):,} events stored")


def _end_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    """The next offset of every non-empty partition of every topic the sink stores."""
    # Deferred: the faust app loads only when the worker or the sink runs.
    from streams.sink import LEDGER_TOPICS

    topics = [settings.topic(name) for name in LEDGER_TOPICS]
    with LogReader(settings, topics) as reader:
        ends = reader.end_offsets()
    return {partition: end for partition, end in ends.items() if end > 0}


def _stored_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    # Deferred: DuckDB loads only when the ledger is read or written.
    from ledger.store import take_snapshot

    if not (settings.duckdb / "segments").exists():
        return {}
    committed = take_snapshot(settings.duckdb).committed_offsets()
    return {key: last + 1 for key, last in committed.items()}


def _report(console: Console, settings: Settings, run_dir: Path) -> None:
    html = run_dir / "report.html"
    env = _child_env(settings)
    for argv in (
        ["report", "summary", "--format", "table"],
        ["report", "summary", "--format", "html", "--out", str(html)],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "ledger", *argv], env=env, check=False, timeout=120
        )
        if done.returncode != 0:
            raise _DemoError(f"`migration-ledger {' '.join(argv)}` failed")
    console.print(f"HTML report: {html}")
    console.print(
        f"Ledger: {settings.duckdb} (try `migration-ledger sql --duckdb {settings.duckdb}`)"
    )
