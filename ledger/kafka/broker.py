"""A real Apache Kafka broker (KRaft, single node, loopback only) run from Maven-fetched jars.

No Docker engine and no broker package exist on these machines, but Maven serves Kafka's own
jars and the machine has Java 17, so the broker is assembled here: the jars are copied once
into a cache outside the git tree, each broker gets its own state folder keyed by its client
port (so brokers on different ports coexist), and the JVM runs detached in its own session so
it outlives the command that started it.

Layout under ``cache_dir`` (``Settings.cache_dir``, env ``MIGRATION_LEDGER_CACHE_DIR``)::

    kafka-<version>/lib/          jars, complete once ``.complete`` exists
    kafka-<version>/pom.xml       what Maven fetched them from
    brokers/<port>/               one broker: server.properties, log4j2.properties,
                                  data/, logs/, broker.json (pid, ports, dirs)

This module is an adapter: it imports no Kafka client library. Readiness is proven with a
Metadata request spoken over a raw socket, which needs nothing but the standard library.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from ledger.errors import BrokerError
from ledger.kafka.frames import read_exactly
from ledger.kafka.secure import (
    PRINCIPALS,
    SINGLE_NODE_PROPERTIES,
    format_arguments,
    prepare_secure,
    secure_properties,
)

__all__ = [
    "KAFKA_VERSION",
    "LOG4J_VERSION",
    "SLF4J_VERSION",
    "BrokerState",
    "LocalBroker",
    "StepReporter",
    "ensure_jars",
    "find_java",
    "free_ports",
    "new_cluster_id",
    "probe_metadata",
    "probe_tls",
]

#: The broker's version. Kafka 4.x needs Java 17; 4.4.0 is the newest Maven serves here.
KAFKA_VERSION = "4.4.0"
#: log4j2 and its slf4j binding ship only in Kafka's tarball, not its POM, so we add them.
LOG4J_VERSION = "2.26.1"
#: log4j-slf4j2-impl binds slf4j 2.x; declared so Maven does not mediate to an older API.
SLF4J_VERSION = "2.0.17"
#: Pinned so the fetch does not depend on the plugin version Maven's super-POM happens to bind.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

HOST = "127.0.0.1"
MIN_JAVA = 17

#: Opens a progress display for one long step; the CLI passes a rich spinner, tests nothing.
StepReporter = Callable[[str], AbstractContextManager[object]]


def _quiet(_message: str) -> AbstractContextManager[object]:
    return contextlib.nullcontext()


POM_TEMPLATE = """\
<?xml version="1.0" encoding="UTF-8"?>
<!-- The runtime of a Kafka {kafka} broker; written by ledger.kafka.broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.migration-ledger</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>{slf4j}</version>
    </dependency>
  </dependencies>
</project>
"""

LOG4J2_PROPERTIES = """\
# Written by ledger.kafka.broker: everything to one rolling file, nothing to the console.
name = migration-ledger-kafka
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
# The state-change and request loggers are chatty at INFO and say nothing we need.
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""

SERVER_PROPERTIES_TEMPLATE = (
    """\
# Written by ledger.kafka.broker: single-node KRaft broker+controller, loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{controller_port}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data_dir}
"""
    + SINGLE_NODE_PROPERTIES
    + """\
# Tests start consumer groups constantly; the default 3 s delay would dominate their run time.
group.initial.rebalance.delay.ms=0
# Kafka's default, as in the compose image; code should still create its topics explicitly
# (with Settings.partitions), since an auto-created topic gets num.partitions=1.
auto.create.topics.enable=true
log.retention.hours=168
"""
)

JVM_FLAGS = (
    "-Xms256m",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


# --- tools -------------------------------------------------------------------------------


def find_java() -> Path:
    """The ``java`` to run the broker with: ``$JAVA_HOME/bin/java``, else ``java`` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("java")
    if found is None:
        hint = f" (JAVA_HOME={java_home} has no bin/java)" if java_home else ""
        raise BrokerError(
            f"Java was not found{hint}: Kafka {KAFKA_VERSION} needs Java {MIN_JAVA} or newer. "
            "Install a JDK (e.g. `apt-get install openjdk-17-jre-headless`) or set JAVA_HOME."
        )
    return Path(found)


def check_java_version(java: Path) -> int:
    """The major version of ``java``; refuses anything older than Kafka 4 supports."""
    try:
        done = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"{java} -version could not run: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if done.returncode != 0 or match is None:
        raise BrokerError(f"{java} -version failed: {(done.stderr or done.stdout).strip()}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise BrokerError(
            f"{java} is Java {major}, but Kafka {KAFKA_VERSION} needs Java {MIN_JAVA} or newer. "
            "Install a JDK 17 (e.g. `apt-get install openjdk-17-jre-headless`) and put it on "
            "PATH or in JAVA_HOME."
        )
    return major


def find_maven() -> Path:
    found = shutil.which("mvn")
    if found is None:
        raise BrokerError(
            f"Maven (`mvn`) was not found on PATH; it is needed once to fetch the Kafka "
            f"{KAFKA_VERSION} jars. Install it (e.g. `apt-get install maven`) and run again."
        )
    return Path(found)


# --- jars --------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """Serialise fetches and starts across processes (CLI, parallel test sessions)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def kafka_home(cache_dir: Path, version: str = KAFKA_VERSION) -> Path:
    return cache_dir / f"kafka-{version}"


def ensure_jars(
    cache_dir: Path, *, version: str = KAFKA_VERSION, step: StepReporter = _quiet
) -> Path:
    """The folder holding a complete broker runtime, fetched with Maven only if not there yet.

    Maven copies into a scratch folder that is renamed into place and marked complete only
    after the copy succeeded, so an interrupted fetch is never mistaken for a runtime.
    """
    home = kafka_home(cache_dir, version)
    lib = home / "lib"
    marker = lib / ".complete"
    if marker.exists():
        return lib
    with _locked(home / ".fetch.lock"):
        if marker.exists():  # another process fetched while we waited for the lock
            return lib
        mvn = find_maven()
        pom = home / "pom.xml"
        pom.write_text(POM_TEMPLATE.format(kafka=version, log4j=LOG4J_VERSION, slf4j=SLF4J_VERSION))
        scratch = home / "lib.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        command = [
            str(mvn),
            "-B",
            "-q",
            "-f",
            str(pom),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={scratch}",
        ]
        with step(f"Fetching Kafka {version} jars with Maven into {lib} (once)"):
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, timeout=900, check=False
                )
            except subprocess.TimeoutExpired as exc:
                raise BrokerError(
                    f"Maven did not finish fetching Kafka {version} within 15 minutes; "
                    "check the network to the Maven repository and run again."
                ) from exc
        if done.returncode != 0 or not any(scratch.glob(f"kafka_2.13-{version}.jar")):
            output = _tail(done.stdout + done.stderr, 25)
            raise BrokerError(
                f"Maven could not fetch the Kafka {version} jars (exit {done.returncode}); "
                f"check the network and ~/.m2/settings.xml, then run again. Maven said:\n"
                f"{output}"
            )
        shutil.rmtree(lib, ignore_errors=True)
        scratch.rename(lib)
        marker.write_text(f"kafka {version}, log4j {LOG4J_VERSION}, slf4j {SLF4J_VERSION}\n")
    return lib


# --- ports and the readiness probe -------------------------------------------------------


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a listener could bind ``host:port`` now (as Kafka will, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, host: str = HOST) -> list[int]:
    """``count`` distinct ports the kernel says are free right now (all held until chosen)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _exchange(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(struct.pack(">i", len(request)) + request)
    (size,) = struct.unpack(">i", read_exactly(sock, 4))
    return read_exactly(sock, size)


def _read_uvarint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7


_CLIENT_ID = b"migration-ledger-probe"
_API_VERSIONS, _METADATA = 18, 3


def probe_metadata(bootstrap: str, timeout: float = 3.0) -> int:
    """Send a Metadata request and return how many live brokers the answer lists.

    Spoken over a raw socket so that ``up`` needs no client library: ApiVersions v0 (which
    every broker answers) picks a Metadata version, then Metadata for no topics. Raises
    ``OSError`` (or ``ConnectionError``) while the broker is not answering yet.
    """
    host, _, port_text = bootstrap.rpartition(":")
    with socket.create_connection((host, int(port_text)), timeout=timeout) as sock:
        header = struct.pack(">hhih", _API_VERSIONS, 0, 1, len(_CLIENT_ID)) + _CLIENT_ID
        answer = _exchange(sock, header)
        (_correlation, error, count) = struct.unpack_from(">ihi", answer, 0)
        if error != 0:
            raise ConnectionError(f"ApiVersions answered error {error}")
        versions: dict[int, tuple[int, int]] = {}
        for index in range(count):
            key, low, high = struct.unpack_from(">hhh", answer, 10 + 6 * index)
            versions[key] = (low, high)
        low, high = versions.get(_METADATA, (0, -1))
        if low <= 12 <= high:
            # Flexible version: request header v2 (tagged fields), compact arrays.
            request = (
                struct.pack(">hhih", _METADATA, 12, 2, len(_CLIENT_ID))
                + _CLIENT_ID
                + b"\x00"  # header tagged fields
                + b"\x01"  # topics: compact array of length 0 (none, just the brokers)
                + b"\x00\x00"  # allow auto creation, include topic authorized operations
                + b"\x00"  # body tagged fields
            )
            answer = _exchange(sock, request)
            _tags, offset = _read_uvarint(answer, 4)  # after correlation id
            brokers_plus_one, _ = _read_uvarint(answer, offset + 4)  # after throttle time
            return max(brokers_plus_one - 1, 0)
        if low <= 4 <= high:
            request = (
                struct.pack(">hhih", _METADATA, 4, 2, len(_CLIENT_ID))
                + _CLIENT_ID
                + struct.pack(">ib", 0, 0)  # topics: empty array; no auto creation
            )
            answer = _exchange(sock, request)
            (brokers,) = struct.unpack_from(">i", answer, 8)  # after correlation, throttle
            return int(brokers)
        raise ConnectionError(f"broker offers Metadata versions {low}..{high} only")


def probe_tls(bootstrap: str, cafile: Path, timeout: float = 3.0) -> None:
    """Prove a TLS listener answers: handshake (verifying the CA) then ApiVersions v0, which a
    SASL listener answers before authentication. Raises ``OSError`` until it does."""
    host, _, port_text = bootstrap.rpartition(":")
    context = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection((host, int(port_text)), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host) as sock,
    ):
        header = struct.pack(">hhih", _API_VERSIONS, 0, 1, len(_CLIENT_ID)) + _CLIENT_ID
        answer = _exchange(sock, header)
        (_correlation, error) = struct.unpack_from(">ih", answer, 0)
        if error != 0:
            raise ConnectionError(f"ApiVersions answered error {error}")


# --- one broker --------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerState:
    """What ``up`` records in ``broker.json`` and ``status`` reports."""

    pid: int
    port: int
    controller_port: int
    state_dir: str
    data_dir: str
    log_dir: str
    kafka_version: str
    cluster_id: str
    #: The client listener's protocol; SASL_SSL for ``up --secure``.
    listener: str = "PLAINTEXT"
    #: SCRAM users created at format time (none on a plaintext broker).
    principals: tuple[str, ...] = ()
    #: Where each principal's env file is (secure brokers only).
    credentials_dir: str | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in base64url without padding (as Kafka's own)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _process_is_alive(pid: int) -> bool:
    """Still running; reaps the process if it has exited and is our own child (test fixture).

    A JVM's main thread can exit before its other threads: /proc then shows the process as a
    zombie while it is still shutting down, so "Z" alone does not mean gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[0] != "Z":
        return True
    try:
        reaped, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child: its parent reaps it; are threads still running?
        try:
            return sum(1 for _ in Path(f"/proc/{pid}/task").iterdir()) > 1
        except OSError:
            return False
    return reaped == 0


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _set_parent_death_signal() -> None:
    """Runs in the child before exec: SIGTERM the broker if the process that started it dies."""
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class LocalBroker:
    """The broker on one client port: its state folder, and ``up`` / ``down`` / ``status``.

    ``cache_dir`` holds the jars (shared by every broker); ``state_root`` holds the brokers'
    state folders and defaults to ``cache_dir / "brokers"`` (tests pass a temporary one).
    """

    def __init__(
        self,
        cache_dir: Path,
        *,
        port: int = 9092,
        controller_port: int | None = None,
        state_root: Path | None = None,
        kafka_version: str = KAFKA_VERSION,
        secure: bool = False,
    ) -> None:
        self.secure = secure
        self.cache_dir = cache_dir.expanduser().resolve()
        self.port = port
        self.controller_port = port + 1 if controller_port is None else controller_port
        root = (state_root or self.cache_dir / "brokers").expanduser().resolve()
        self.state_dir = root / str(port)
        self.kafka_version = kafka_version
        self._process: subprocess.Popen[bytes] | None = None
        for name, value in (("port", self.port), ("controller port", self.controller_port)):
            if not 1 <= value <= 65535:
                raise BrokerError(f"The {name} must be between 1 and 65535, not {value}.")
        if self.port == self.controller_port:
            raise BrokerError(
                f"The client port and the controller port must differ (both are {port}); "
                "pass another --controller-port."
            )

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "broker.json"

    # -- reading ----------------------------------------------------------------------

    def status(self) -> BrokerState | None:
        """The recorded broker if its process still runs, else ``None`` (stale records go)."""
        try:
            fields = json.loads(self._state_file.read_text())
            fields["principals"] = tuple(fields.get("principals", ()))
            recorded = BrokerState(**fields)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            self._state_file.unlink(missing_ok=True)  # unreadable: nothing can be done with it
            return None
        if self._is_ours(recorded.pid):
            return recorded
        self._state_file.unlink(missing_ok=True)
        return None

    def _is_ours(self, pid: int) -> bool:
        """Guards against pid reuse: the process must be a broker run from our state folder."""
        if not _process_is_alive(pid):
            return False
        argv = _cmdline(pid)
        return "kafka.Kafka" in argv and str(self.state_dir / "server.properties") in argv

    def server_log(self) -> Path:
        return self.state_dir / "logs" / "server.log"

    # -- starting ---------------------------------------------------------------------

    def up(
        self,
        *,
        timeout: float = 90.0,
        step: StepReporter = _quiet,
        die_with_parent: bool = False,
    ) -> tuple[BrokerState, bool]:
        """Start the broker unless it already runs; returns its state and whether we started it.

        Ports are checked before anything slow happens so a clash fails fast. With
        ``die_with_parent`` the kernel stops the broker if the starting process dies
        (the test fixture uses it so a killed pytest leaves no JVM behind).
        """
        with _locked(self.state_dir / ".lock"):
            running = self.status()
            if running is not None:
                return running, False
            for name, port in (("port", self.port), ("controller port", self.controller_port)):
                if not port_is_free(port):
                    raise BrokerError(
                        f"The {name} {HOST}:{port} is already in use by another process, so "
                        f"no broker can listen there. Pick free ports with --port/"
                        f"--controller-port, or stop whatever holds it (`ss -ltnp | grep "
                        f":{port}` shows it)."
                    )
            java = find_java()
            check_java_version(java)
            lib = ensure_jars(self.cache_dir, version=self.kafka_version, step=step)
            state = self._prepare(java, lib)
            process = self._launch(java, lib, state, die_with_parent=die_with_parent)
            self._process = process  # held so a broker we started is reaped, not left a zombie
            state = BrokerState(**{**asdict(state), "pid": process.pid})
            try:
                with step(f"Waiting for the Kafka broker at {self.bootstrap}"):
                    self._wait_until_ready(process, timeout)
            except BaseException:
                self._stop_pid(process.pid, timeout=15.0)
                raise
            tmp = self._state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
            tmp.replace(self._state_file)
            return state, True

    def _prepare(self, java: Path, lib: Path) -> BrokerState:
        """Write the configuration and format storage (once per state folder)."""
        data_dir, log_dir = self.state_dir / "data", self.state_dir / "logs"
        data_dir.mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)
        properties = self.state_dir / "server.properties"
        mode = "secure" if self.secure else "plaintext"
        mode_file = self.state_dir / "mode"
        if mode_file.exists() and mode_file.read_text().strip() != mode:
            raise BrokerError(
                f"The broker state in {self.state_dir} was made {mode_file.read_text().strip()}, "
                f"not {mode}; its storage cannot change mode. Remove {self.state_dir} (its data "
                "goes) or use another --port."
            )
        scram: list[str] = []
        credentials_dir: str | None = None
        if self.secure:
            files = prepare_secure(
                self.state_dir, host=HOST, bootstrap=self.bootstrap, now=datetime.now(UTC)
            )
            credentials_dir = str(files.credentials_dir)
            text = secure_properties(
                files,
                host=HOST,
                port=self.port,
                controller_port=self.controller_port,
                data_dir=data_dir,
            )
            # The passwords are in it (the JAAS lines): owner-only, like the env files.
            properties.touch(mode=0o600)
            properties.chmod(0o600)
            properties.write_text(text)
            scram = format_arguments(files)
        else:
            properties.write_text(
                SERVER_PROPERTIES_TEMPLATE.format(
                    host=HOST,
                    port=self.port,
                    controller_port=self.controller_port,
                    data_dir=data_dir,
                )
            )
        (self.state_dir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        cluster_file = self.state_dir / "cluster.id"
        if not cluster_file.exists():
            cluster_file.write_text(new_cluster_id() + "\n")
        cluster_id = cluster_file.read_text().strip()
        command = [
            str(java),
            *self._jvm_flags(log_dir),
            "-cp",
            f"{lib}/*",
            "kafka.tools.StorageTool",
            "format",
            # One argument: an id may begin with "-" (1 in 64 do), which argparse would take
            # for an option and refuse ("expected one argument").
            f"--cluster-id={cluster_id}",
            "-c",
            str(properties),
            "--ignore-formatted",
            *scram,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            said = _tail(done.stdout + done.stderr, 15)
            if self.secure:
                for password in files.passwords.values():
                    said = said.replace(password, "**********")
            raise BrokerError(
                f"Formatting the broker storage in {data_dir} failed (exit {done.returncode}). "
                f"If the folder is from another cluster, remove {self.state_dir} and run "
                f"again. The tool said:\n{said}"
            )
        mode_file.write_text(mode + "\n")
        return BrokerState(
            pid=0,
            port=self.port,
            controller_port=self.controller_port,
            state_dir=str(self.state_dir),
            data_dir=str(data_dir),
            log_dir=str(log_dir),
            kafka_version=self.kafka_version,
            cluster_id=cluster_id,
            listener="SASL_SSL" if self.secure else "PLAINTEXT",
            principals=PRINCIPALS if self.secure else (),
            credentials_dir=credentials_dir,
        )

    def _jvm_flags(self, log_dir: Path) -> list[str]:
        return [
            *JVM_FLAGS,
            f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={log_dir}",
        ]

    def _launch(
        self, java: Path, lib: Path, state: BrokerState, *, die_with_parent: bool
    ) -> subprocess.Popen[bytes]:
        console = Path(state.log_dir) / "console.log"
        with console.open("ab") as out:
            return subprocess.Popen(
                [
                    str(java),
                    *self._jvm_flags(Path(state.log_dir)),
                    "-cp",
                    f"{lib}/*",
                    "kafka.Kafka",
                    str(self.state_dir / "server.properties"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=True,  # not stopped by the terminal's Ctrl-C or hang-up
                preexec_fn=_set_parent_death_signal if die_with_parent else None,
            )

    def _wait_until_ready(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                raise BrokerError(
                    f"The Kafka broker on port {self.port} exited during start-up (exit {code})."
                    f" Last lines of {self.server_log()}:\n{self._log_tail()}"
                )
            try:
                if self.secure:
                    probe_tls(self.bootstrap, self.state_dir / "tls" / "ca.pem", timeout=2.0)
                    return
                if probe_metadata(self.bootstrap, timeout=2.0) >= 1:
                    return
                last_error = "metadata lists no live broker yet"
            except (OSError, struct.error, IndexError) as exc:  # ssl.SSLError is an OSError
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.25)
        raise BrokerError(
            f"The Kafka broker on port {self.port} did not answer a metadata request within "
            f"{timeout:.0f} s ({last_error}); it was stopped. Last lines of "
            f"{self.server_log()}:\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        texts = []
        for name in ("console.log", "server.log"):
            with contextlib.suppress(OSError):
                texts.append(_tail((self.state_dir / "logs" / name).read_text(), 10))
        return "\n".join(text for text in texts if text) or "(no log output)"

    # -- stopping ---------------------------------------------------------------------

    def down(self, *, timeout: float = 30.0) -> BrokerState | None:
        """Stop the broker with SIGTERM (SIGKILL after ``timeout``); ``None`` if none ran."""
        if not self._state_file.exists():  # nothing to stop: leave no lock file behind either
            return None
        with _locked(self.state_dir / ".lock"):
            running = self.status()
            if running is None:
                return None
            self._stop_pid(running.pid, timeout=timeout)
            self._state_file.unlink(missing_ok=True)
            if self._process is not None and self._process.pid == running.pid:
                self._process.wait(timeout=5)
                self._process = None
            return running

    @staticmethod
    def _stop_pid(pid: int, *, timeout: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _process_is_alive(pid):
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        for _ in range(50):
            if not _process_is_alive(pid):
                return
            time.sleep(0.1)
        raise BrokerError(f"The Kafka broker (pid {pid}) did not stop even after SIGKILL.")
