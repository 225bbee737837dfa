"""A real single-node Apache Kafka broker (KRaft mode) run from its Maven Central jars, no Docker.

:func:`install_jars` fetches the broker's jars once with ``mvn dependency:copy-dependencies``
(using the ``kafka/pom.xml`` shipped in this package) into ``$PROCVAULT_HOME/kafka-<version>/libs``;
after that, starting a broker needs no network. :class:`LocalKafka` writes a
``server.properties`` and a log4j2 configuration into its data directory, formats the storage
once, launches ``kafka.Kafka`` detached in its own process group and waits until the broker
answers metadata requests (:func:`wait_ready`).

>>> kafka = LocalKafka(data_dir=Path("/tmp/pv-kafka"), port=29092, controller_port=29093)
>>> kafka.bootstrap
'127.0.0.1:29092'
>>> kafka.status()["running"]
False

Typical use (needs ``java`` and, for the first install, ``mvn``)::

    with LocalKafka(data_dir=Path("/tmp/pv-kafka")) as kafka:
        publish_to(kafka.bootstrap)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import importlib.resources
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar

from procvault.monitor.errors import ConfigError, KafkaSetupError

__all__ = [
    "LocalKafka",
    "default_home",
    "free_port",
    "install_jars",
    "kafka_version",
    "wait_ready",
    "wait_ready_async",
]

#: Host every local broker listens on; it is never exposed beyond the loopback interface.
HOST: Final = "127.0.0.1"
#: Marker written (with the pom's SHA-256) once every jar of an install is in place.
_MARKER: Final = ".procvault-complete"
_POM_NS: Final = "{http://maven.apache.org/POM/4.0.0}"
_HEAP_RE: Final = re.compile(r"[1-9][0-9]*[kKmMgG]?")
_LOG_TAIL_LINES: Final = 8
_T = TypeVar("_T")


def default_home() -> Path:
    """Where procvault keeps downloaded tools: ``$PROCVAULT_HOME`` or ``~/.cache/procvault``."""
    env = os.environ.get("PROCVAULT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "procvault"


def _pom_bytes() -> bytes:
    return (importlib.resources.files("procvault.streams") / "kafka" / "pom.xml").read_bytes()


@cache
def kafka_version() -> str:
    """The Kafka version pinned by the shipped pom (its ``kafka.version`` property)."""
    node = ET.fromstring(_pom_bytes()).find(f"{_POM_NS}properties/{_POM_NS}kafka.version")
    if node is None or not (node.text or "").strip():
        raise KafkaSetupError(
            "the shipped kafka/pom.xml has no kafka.version property; reinstall procvault"
        )
    return (node.text or "").strip()


def _find_tool(name: str, hint: str) -> str:
    """The path of executable ``name`` (``java`` honours ``$JAVA_HOME``), or a clear error."""
    if name == "java" and (java_home := os.environ.get("JAVA_HOME")):
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise KafkaSetupError(f"`{name}` was not found on PATH; {hint}")
    return found


def _java() -> str:
    return _find_tool(
        "java", "install a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless)"
    )


def install_jars(home: Path | None = None, *, quiet: bool = True) -> Path:
    """Fetch the broker's jars from Maven Central once; return their directory.

    The jars land in ``home/kafka-<version>/libs`` (``home`` defaults to :func:`default_home`).
    When an install is already complete (its marker file matches the shipped pom), this returns
    at once without touching the network. Otherwise Maven copies the runtime dependencies into
    a temporary directory next to the target, which is then renamed into place, so an
    interrupted download never looks complete.

    Parameters
    ----------
    home
        The procvault home directory.
    quiet
        Pass ``-q`` to Maven and keep its output unless it fails; ``False`` streams it.
    """
    home = (home or default_home()).expanduser().resolve()
    target = home / f"kafka-{kafka_version()}"
    pom = _pom_bytes()
    digest = hashlib.sha256(pom).hexdigest()
    if _install_complete(target, digest):
        return target / "libs"

    mvn = _find_tool("mvn", "install Maven (e.g. apt-get install maven) to fetch the Kafka jars")
    _java()  # Maven needs it too; fail with the clearer message
    home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=home))
    staging.chmod(0o755)  # mkdtemp makes it private; the install is shared like any cache
    try:
        pom_path = staging / "pom.xml"
        pom_path.write_bytes(pom)
        cmd = [
            mvn,
            "-B",
            "-Dstyle.color=never",
            *(["-q"] if quiet else []),
            "-f",
            str(pom_path),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging / 'libs'}",
        ]
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=quiet,
                text=True,
                timeout=900,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise KafkaSetupError(
                "fetching the Kafka jars with Maven took over 15 minutes; check network access "
                "to Maven Central (or a mirror in ~/.m2/settings.xml) and retry"
            ) from None
        if proc.returncode != 0:
            tail = _one_line_tail((proc.stdout or "") + (proc.stderr or ""))
            raise KafkaSetupError(
                f"Maven could not fetch the Kafka {kafka_version()} jars (exit {proc.returncode})"
                f"; check network access to Maven Central and retry. Maven said: {tail}"
            )
        if not any((staging / "libs").glob("kafka_*.jar")):
            raise KafkaSetupError(
                f"Maven finished but no kafka_*.jar is in {staging / 'libs'}; retry the install"
            )
        pom_path.unlink()
        (staging / _MARKER).write_text(digest + "\n")
        _move_into_place(staging, target, digest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target / "libs"


def _install_complete(target: Path, digest: str) -> bool:
    try:
        return (target / _MARKER).read_text().strip() == digest
    except OSError:
        return False


def _move_into_place(staging: Path, target: Path, digest: str) -> None:
    """Rename ``staging`` to ``target``; a stale ``target`` is moved aside first."""
    for _ in range(3):
        try:
            staging.rename(target)
            return
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise KafkaSetupError(f"cannot move the Kafka jars into {target}: {exc}") from None
        if _install_complete(target, digest):
            return  # another process finished the same install first
        stale = Path(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
        with contextlib.suppress(OSError):
            target.rename(stale / "old")
        shutil.rmtree(stale, ignore_errors=True)
    raise KafkaSetupError(f"cannot replace the outdated Kafka install in {target}; delete it")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_in_use(port: int) -> bool:
    """True if something listens on (or otherwise holds) ``127.0.0.1:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as the broker sets it: TIME_WAIT leftovers do not count as "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
        return False


def _one_line_tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    """The last meaningful ``lines`` of ``text`` joined into one line (stack frames dropped)."""
    kept = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith(("at ", "..."))
    ]
    tail = " | ".join(line[:300] for line in kept[-lines:])
    return tail or "(no output)"


def _run_sync(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion from synchronous code, even inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="procvault-kafka") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


async def _probe(bootstrap: str, timeout: float) -> str | None:
    """One readiness probe: ``None`` if the broker answers metadata, else why it did not."""
    from aiokafka.admin import AIOKafkaAdminClient

    ms = max(int(timeout * 1000), 500)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="procvault-ready-probe",
        request_timeout_ms=ms,
        retry_backoff_ms=50,
    )
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            cluster = await admin.describe_cluster()
        if not cluster.get("brokers"):
            return "the broker reports no live brokers yet"
        return None
    except Exception as exc:  # any failure only means "not ready yet"
        return f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def _tcp_open(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=0.5):
            return True
    except (OSError, ValueError):
        return False


async def _wait_ready(
    bootstrap: str, timeout: float, check: Callable[[], None] | None = None
) -> None:
    if timeout <= 0:
        raise ConfigError(f"readiness timeout must be positive, got {timeout}")
    deadline = time.monotonic() + timeout
    why = "no answer yet"
    while True:
        if check is not None:
            check()
        left = deadline - time.monotonic()
        if left <= 0:
            raise KafkaSetupError(
                f"Kafka at {bootstrap} was not ready within {timeout:g} s ({why}); "
                "check that the broker runs there, or raise the timeout"
            )
        # A plain TCP connect first keeps aiokafka from logging a bootstrap error per attempt.
        if await asyncio.to_thread(_tcp_open, bootstrap):
            failure = await _probe(bootstrap, min(left, 5.0))
            if failure is None:
                return
            why = failure
        else:
            why = "connection refused"
        await asyncio.sleep(min(0.1, max(deadline - time.monotonic(), 0)))


async def wait_ready_async(bootstrap: str, *, timeout: float) -> None:
    """Wait until the broker at ``bootstrap`` answers metadata requests.

    Raises :class:`KafkaSetupError` if it does not within ``timeout`` seconds.
    """
    await _wait_ready(bootstrap, timeout)


def wait_ready(bootstrap: str, *, timeout: float) -> None:
    """Synchronous :func:`wait_ready_async` (usable inside a running event loop too)."""
    _run_sync(lambda: _wait_ready(bootstrap, timeout))


class LocalKafka:
    """A single-node KRaft broker+controller that runs from the jars of :func:`install_jars`.

    All files live in ``data_dir``: ``server.properties``, ``log4j2.properties``, the log
    directory ``kraft-logs/``, the broker's log ``server.log``, its stdout/stderr ``kafka.out``
    and ``kafka.pid``. Data survives :meth:`stop` and a later :meth:`start`. A broker started
    by another process from the same ``data_dir`` is found through the pid file, so
    :meth:`status` and :meth:`stop` work across processes.

    Parameters
    ----------
    data_dir
        Directory for configuration, data and logs (created if missing).
    port
        Client (PLAINTEXT) port on 127.0.0.1.
    controller_port
        KRaft controller port on 127.0.0.1.
    heap
        JVM maximum heap, as for ``-Xmx`` (e.g. ``"512m"``, ``"1g"``).
    home
        procvault home holding the jars (default :func:`default_home`).
    """

    def __init__(
        self,
        *,
        data_dir: Path,
        port: int = 19092,
        controller_port: int = 19093,
        heap: str = "512m",
        home: Path | None = None,
    ) -> None:
        for name, value in (("port", port), ("controller_port", controller_port)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
                raise ConfigError(f"{name} must be an integer in 1..65535, got {value!r}")
        if port == controller_port:
            raise ConfigError(f"port and controller_port must differ (both are {port})")
        if not isinstance(heap, str) or not _HEAP_RE.fullmatch(heap):
            raise ConfigError(f"heap must look like 512m or 1g (a -Xmx size), got {heap!r}")
        self._data_dir = Path(data_dir).expanduser().resolve()
        self._port = port
        self._controller_port = controller_port
        self._heap = heap
        self._home = home
        self._proc: subprocess.Popen[bytes] | None = None

    # -- read-only settings -------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        """Directory holding configuration, data and logs."""
        return self._data_dir

    @property
    def port(self) -> int:
        """Client port."""
        return self._port

    @property
    def controller_port(self) -> int:
        """KRaft controller port."""
        return self._controller_port

    @property
    def bootstrap(self) -> str:
        """The ``host:port`` clients connect to."""
        return f"{HOST}:{self._port}"

    @property
    def log_file(self) -> Path:
        """The broker's log4j log (WARN, plus INFO for start-up and shut-down)."""
        return self._data_dir / "server.log"

    @property
    def _out_file(self) -> Path:
        return self._data_dir / "kafka.out"

    @property
    def _pid_file(self) -> Path:
        return self._data_dir / "kafka.pid"

    @property
    def _properties_file(self) -> Path:
        return self._data_dir / "server.properties"

    @property
    def _log_dir(self) -> Path:
        return self._data_dir / "kraft-logs"

    def __repr__(self) -> str:
        return f"LocalKafka(bootstrap={self.bootstrap!r}, data_dir={str(self._data_dir)!r})"

    @staticmethod
    def recorded_ports(data_dir: Path) -> tuple[int, int] | None:
        """``(port, controller_port)`` of the last broker started from ``data_dir``, or None.

        Read from the ``server.properties`` that :meth:`start` writes there, so that
        ``procvault kafka status`` and ``down`` find a broker started on another port.

        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     before = LocalKafka.recorded_ports(Path(d))
        ...     _ = LocalKafka(data_dir=Path(d), port=31001, controller_port=31002)._write_config()
        ...     before, LocalKafka.recorded_ports(Path(d))
        (None, (31001, 31002))
        """
        try:
            text = (Path(data_dir).expanduser() / "server.properties").read_text()
        except OSError:
            return None
        match = re.search(
            r"^listeners=PLAINTEXT://[^:,]+:(\d+),CONTROLLER://[^:,]+:(\d+)\s*$", text, re.M
        )
        if match is None:
            return None
        return int(match.group(1)), int(match.group(2))

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, *, timeout: float = 60.0) -> None:
        """Start the broker (installing the jars if needed) and wait until it is ready.

        Does nothing but wait for readiness if this data directory's broker already runs.
        Raises :class:`KafkaSetupError` if a port is taken, Java is missing, the broker dies
        during start-up (with the end of its log) or is not ready within ``timeout`` seconds.
        """
        if timeout <= 0:
            raise ConfigError(f"start timeout must be positive, got {timeout}")
        deadline = time.monotonic() + timeout
        if self._running_pid() is not None:
            wait_ready(self.bootstrap, timeout=timeout)
            return
        for what, port in (("port", self._port), ("controller port", self._controller_port)):
            if _port_in_use(port):
                raise KafkaSetupError(
                    f"{what} {port} on {HOST} is already in use by another process; stop it "
                    f"or choose another {what.replace(' ', '_')} for the broker in {self._data_dir}"
                )
        java = _java()
        libs = install_jars(self._home)
        self._data_dir.mkdir(parents=True, exist_ok=True)
        log4j = self._write_config()
        classpath = str(libs / "*")
        jvm_common = [f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]
        if not (self._log_dir / "meta.properties").exists():
            self._format(java, jvm_common, deadline)

        cmd = [java, f"-Xmx{self._heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true"]
        cmd += [*jvm_common, "kafka.Kafka", str(self._properties_file)]
        with self._out_file.open("ab") as out:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self._data_dir,
                start_new_session=True,
            )
        self._pid_file.write_text(f"{self._proc.pid}\n")
        try:
            _run_sync(
                lambda: _wait_ready(
                    self.bootstrap, max(deadline - time.monotonic(), 0.1), self._check_alive
                )
            )
        except KafkaSetupError:
            self.stop()
            raise

    def _check_alive(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is None:
            return
        self._pid_file.unlink(missing_ok=True)
        self._proc = None
        raise KafkaSetupError(
            f"the Kafka broker exited with code {proc.returncode} during start-up; see "
            f"{self.log_file} and {self._out_file}. Last lines: {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        texts = []
        for path in (self._out_file, self.log_file):
            with contextlib.suppress(OSError):
                texts.append(path.read_text(errors="replace")[-20_000:])
        return _one_line_tail("\n".join(texts))

    def _format(self, java: str, jvm_common: list[str], deadline: float) -> None:
        """Format the KRaft storage with a fresh cluster id (first start only)."""
        tool = [java, "-Xmx256m", *jvm_common, "kafka.tools.StorageTool"]

        def run(args: list[str]) -> str:
            try:
                proc = subprocess.run(
                    tool + args,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    cwd=self._data_dir,
                    timeout=max(deadline - time.monotonic(), 1.0),
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise KafkaSetupError(
                    f"kafka StorageTool {args[0]} timed out; retry with a longer start timeout"
                ) from None
            if proc.returncode != 0:
                raise KafkaSetupError(
                    f"kafka StorageTool {args[0]} failed (exit {proc.returncode}): "
                    f"{_one_line_tail(proc.stdout + proc.stderr)}; delete {self._log_dir} "
                    "if it holds a broken install, then retry"
                )
            return proc.stdout

        cluster_id = run(["random-uuid"]).strip().splitlines()[-1].strip()
        run(["format", "-t", cluster_id, "-c", str(self._properties_file)])

    def _write_config(self) -> Path:
        """Write ``server.properties`` and the log4j2 configuration; return the latter's path."""
        controller = f"{HOST}:{self._controller_port}"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{controller}",
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self._log_dir),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "min.insync.replicas": "1",
            "group.initial.rebalance.delay.ms": "0",
        }
        lines = ["# Written by procvault.streams.kafka_local; rewritten on every start."]
        lines += [f"{key}={_escape_property(value)}" for key, value in props.items()]
        self._properties_file.write_text("\n".join(lines) + "\n")

        log4j = self._data_dir / "log4j2.properties"
        log4j.write_text(
            "\n".join(
                [
                    "# Written by procvault.streams.kafka_local: WARN, INFO for start/stop.",
                    "status = warn",
                    "shutdownHook = disable",
                    "appender.file.type = File",
                    "appender.file.name = FILE",
                    f"appender.file.fileName = {_escape_property(str(self.log_file))}",
                    "appender.file.append = true",
                    "appender.file.layout.type = PatternLayout",
                    "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                    "rootLogger.level = WARN",
                    "rootLogger.appenderRef.file.ref = FILE",
                    "logger.server.name = kafka.server.KafkaRaftServer",
                    "logger.server.level = INFO",
                    "logger.kafka.name = kafka.Kafka",
                    "logger.kafka.level = INFO",
                ]
            )
            + "\n"
        )
        return log4j

    def stop(self, *, timeout: float = 20.0) -> None:
        """Stop the broker: SIGTERM its process group, SIGKILL after ``timeout`` seconds.

        Harmless when the broker is not running.
        """
        pid = self._running_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            if not self._wait_exit(pid, timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                self._wait_exit(pid, 10.0)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1.0)  # reap our child if it has not been yet
            self._proc = None
        self._pid_file.unlink(missing_ok=True)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s for ``pid`` to exit; True if it did."""
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _running_pid(self) -> int | None:
        """The pid of this data directory's broker if it runs (ours or another process's)."""
        if self._proc is not None:
            if self._proc.poll() is None:
                return self._proc.pid
            self._proc = None
        try:
            pid = int(self._pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if pid_alive(pid) and self._is_our_broker(pid):
            return pid
        return None

    def _is_our_broker(self, pid: int) -> bool:
        cmdline = Path(f"/proc/{pid}/cmdline")
        if not cmdline.parent.exists():
            return True  # no /proc (not Linux): trust the pid file
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            return False
        return b"kafka.Kafka" in args and str(self._properties_file).encode() in args

    def status(self) -> dict[str, Any]:
        """``running`` (bool), ``pid`` (int or None), ``bootstrap`` and ``data_dir``."""
        pid = self._running_pid()
        return {
            "running": pid is not None,
            "pid": pid,
            "bootstrap": self.bootstrap,
            "data_dir": str(self._data_dir),
        }

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (signal 0; ids below 1 never: ``kill(0, 0)``
    would address the caller's own process group)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _escape_property(value: str) -> str:
    """Escape a value for a Java ``.properties`` file."""
    return value.replace("\\", "\\\\").replace("\n", "\\n")
