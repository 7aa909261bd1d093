"""Fixtures shared by every test: the real Kafka broker, unique topic names, Settings.

``kafka_bootstrap`` is session-scoped and lazy: a broker is only started when a collected test
asks for it, and then one broker serves the whole run (tests that stop and start a broker stop
and start that one, through ``restartable_broker``). Set ``MIGRATION_LEDGER_BOOTSTRAP_SERVERS``
(e.g. to the team's dev broker at 127.0.0.1:9092) to reuse a running broker instead of starting
one on free ports.

Run in parallel (``pytest -n 2``, pytest-xdist, as ``make test`` does), the run still has one
broker: the controller process starts it before the workers start, when the selection reaches
into tests/integration, and hands its address to them (``SHARED_BROKER_ENV``); a test that
restarts a broker then gets one of its own, since the shared one is not its to stop.

Hypothesis runs under one of two profiles, registered here: ``ci`` (``derandomize=True``: the
same examples on every run and every clone, no example database), loaded unless
``HYPOTHESIS_PROFILE`` names another, so ``make test`` and CI are green on every fresh clone;
and ``explore`` (random, 500 examples) for a developer hunting new failures
(``HYPOTHESIS_PROFILE=explore``). A failure found at random is kept as an explicit
``@example`` or test, so the fixed set grows with what was found.

No test is re-run on failure: pytest-rerunfailures is switched off in pyproject.toml
(``-p no:rerunfailures``), so a test that only passes on its second try fails the run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from ledger.kafka.broker import LocalBroker, free_ports
from ledger.settings import Settings

INTEGRATION_DIR = Path(__file__).parent / "integration"
#: Given to unit tests' Settings: nothing listens on port 1, so a stray connection fails fast.
OFFLINE_BOOTSTRAP = "127.0.0.1:1"
#: How long the broker may take to answer after a (re)start on a loaded 2-core machine.
BROKER_START_TIMEOUT = 120.0
#: Where the controller of a parallel run tells its workers the shared broker's address.
SHARED_BROKER_ENV = "MIGRATION_LEDGER_TEST_SHARED_BROKER"

_SHARED_BROKER = pytest.StashKey[LocalBroker]()

hypothesis_settings.register_profile("explore", derandomize=False, max_examples=500, deadline=None)
hypothesis_settings.register_profile(
    "ci",
    derandomize=True,
    database=None,  # derandomized: nothing to replay, and a fresh clone has no database anyway
    deadline=None,  # a shared CI machine's pauses are not the code's slowness
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _selects_integration_tests(config: pytest.Config) -> bool:
    """Whether the paths asked for (the testpaths when none) reach into tests/integration."""
    for arg in config.args or [str(config.rootpath / "tests")]:
        path = Path(arg.split("::")[0]).resolve()
        if (
            path == INTEGRATION_DIR
            or INTEGRATION_DIR in path.parents
            or path in INTEGRATION_DIR.parents
        ):
            return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    """In a parallel run's controller, start the run's one broker before the workers start."""
    is_controller = getattr(config.option, "numprocesses", None) and not hasattr(
        config, "workerinput"
    )
    if not is_controller or os.environ.get("MIGRATION_LEDGER_BOOTSTRAP_SERVERS"):
        return
    if not _selects_integration_tests(config):
        return
    broker = _new_broker(Path(tempfile.mkdtemp(prefix="ledger-test-broker-")))
    broker.up(timeout=BROKER_START_TIMEOUT, die_with_parent=True)
    config.stash[_SHARED_BROKER] = broker
    os.environ[SHARED_BROKER_ENV] = broker.bootstrap  # the workers inherit it


def pytest_unconfigure(config: pytest.Config) -> None:
    broker = config.stash.get(_SHARED_BROKER, None)
    if broker is not None:
        broker.down()
        shutil.rmtree(broker.state_dir.parent, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration needs the broker; mark it so `-m` can select it."""
    for item in items:
        if INTEGRATION_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


def _external_bootstrap() -> str:
    """A broker this process did not start: the user's, or a parallel run's shared one."""
    return os.environ.get("MIGRATION_LEDGER_BOOTSTRAP_SERVERS") or os.environ.get(
        SHARED_BROKER_ENV, ""
    )


def _new_broker(state_root: Path) -> LocalBroker:
    port, controller_port = free_ports(2)
    return LocalBroker(
        Settings().cache_dir,
        port=port,
        controller_port=controller_port,
        state_root=state_root,
    )


@pytest.fixture(scope="session")
def session_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker | None]:
    """The one broker this run started, or ``None`` when ``MIGRATION_LEDGER_BOOTSTRAP_SERVERS``
    names a running one.

    Started on two free ports, with its state in a temporary folder but the jars from the
    usual cache (``MIGRATION_LEDGER_CACHE_DIR``), and stopped at the end of the session even
    when tests fail. The kernel also stops it if pytest itself is killed.
    """
    if _external_bootstrap():
        yield None
        return
    broker = _new_broker(tmp_path_factory.mktemp("kafka-brokers"))
    broker.up(timeout=BROKER_START_TIMEOUT, die_with_parent=True)
    try:
        yield broker
    finally:
        broker.down()


@pytest.fixture(scope="session")
def kafka_bootstrap(session_broker: LocalBroker | None) -> str:
    """``"127.0.0.1:PORT"`` of a real Kafka 4 broker, for the whole session."""
    if session_broker is None:
        return _external_bootstrap()
    return session_broker.bootstrap


@pytest.fixture
def restartable_broker(
    session_broker: LocalBroker | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalBroker]:
    """A broker the test may stop (``down()``) and start again (``up(...)``).

    It is the session's broker, so a restart test costs a restart, not a broker of its own; the
    topics of earlier tests survive (same state folder) and carry other prefixes. Whatever the
    test did, the broker is up again when it ends. When the session uses a broker it did not
    start (``MIGRATION_LEDGER_BOOTSTRAP_SERVERS``), that one is not ours to stop, so the test
    gets a broker of its own on free ports instead.
    """
    if session_broker is not None:
        try:
            yield session_broker
        finally:
            session_broker.up(timeout=BROKER_START_TIMEOUT, die_with_parent=True)
        return
    broker = _new_broker(tmp_path_factory.mktemp("restartable-broker"))
    broker.up(timeout=BROKER_START_TIMEOUT, die_with_parent=True)
    try:
        yield broker
    finally:
        broker.down()


@pytest.fixture
def topic_prefix() -> str:
    """A prefix no other test uses, such as ``"t1a2b3c4d."``, so topics never collide."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
def settings(request: pytest.FixtureRequest, topic_prefix: str, tmp_path: Path) -> Settings:
    """Settings for this test: its own topic prefix and DuckDB folder.

    In integration tests ``bootstrap_servers`` is the session broker; elsewhere it is an
    address where nothing listens, so unit tests never start a broker nor reach the dev one.
    """
    is_integration = request.node.get_closest_marker("integration") is not None
    bootstrap = request.getfixturevalue("kafka_bootstrap") if is_integration else OFFLINE_BOOTSTRAP
    return Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=topic_prefix,
        duckdb=tmp_path / "ledger",
    )
