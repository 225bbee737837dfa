"""A local Prometheus server (the Debian ``prometheus`` binary) scraping procvault's processes.

The scrape configuration is **one file**, ``compose/prometheus/prometheus.yml``, shared with the
compose deployment. It discovers targets through ``file_sd_configs`` (``targets/*.json`` next
to the config): compose ships ``targets/compose.json`` with its service names; locally,
:class:`LocalPrometheus` copies the config byte for byte into its data folder and writes
``targets/local.json`` beside it, so the two never drift.

A target is ``HOST:PORT`` with a ``role`` label (``vault``, ``agent``, ``release``; any
``[a-z0-9_-]`` name), written ``ROLE=HOST:PORT`` on the command line.

>>> parse_target("vault=127.0.0.1:9101")
Target(address='127.0.0.1:9101', role='vault')
>>> parse_target("localhost:9102")
Target(address='localhost:9102', role='procvault')
>>> parse_target("vault=nohost")
Traceback (most recent call last):
...
procvault.monitor.errors.ConfigError: target 'vault=nohost' is not [ROLE=]HOST:PORT
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NamedTuple, Self

from procvault.monitor.errors import ConfigError, InputError, ProcvaultError
from procvault.streams.kafka_local import free_port
from procvault.streams.settings import option

__all__ = [
    "LocalPrometheus",
    "PrometheusError",
    "PrometheusSettings",
    "Target",
    "default_config",
    "parse_target",
    "read_targets_file",
]

HOST: Final = "127.0.0.1"
#: The targets file :class:`LocalPrometheus` writes (``targets/*.json`` in the shared config).
LOCAL_TARGETS: Final = "targets/local.json"
_TARGET_RE: Final = re.compile(
    r"(?:(?P<role>[a-z0-9_-]+)=)?(?P<host>[A-Za-z0-9._-]+|\[[0-9a-fA-F:]+\]):(?P<port>[0-9]{1,5})"
)
_DEFAULT_ROLE: Final = "procvault"


class PrometheusError(ProcvaultError):
    """The Prometheus server could not be found, started or queried."""

    retriable = True


class Target(NamedTuple):
    """One scrape target."""

    #: ``HOST:PORT`` of a ``/metrics`` endpoint.
    address: str
    #: The ``role`` label Prometheus attaches to its series (``vault``, ``agent``, ...).
    role: str = _DEFAULT_ROLE


def parse_target(text: str) -> Target:
    """``[ROLE=]HOST:PORT`` → :class:`Target` (``ConfigError`` when malformed)."""
    m = _TARGET_RE.fullmatch(text.strip())
    if not m or not 0 < int(m["port"]) < 65536:
        raise ConfigError(f"target {text!r} is not [ROLE=]HOST:PORT")
    return Target(f"{m['host']}:{int(m['port'])}", m["role"] or _DEFAULT_ROLE)


def read_targets_file(path: Path) -> list[Target]:
    """Targets from a file_sd JSON list (``[{"targets": [...], "labels": {"role": ...}}]``) or a
    text file with one ``[ROLE=]HOST:PORT`` a line (``#`` comments)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read targets file {path}: {exc.strerror}") from None
    if text.lstrip().startswith("["):
        try:
            groups = json.loads(text)
            out = []
            for g in groups:
                role = str(g.get("labels", {}).get("role", _DEFAULT_ROLE))
                out += [parse_target(f"{role}={t}") for t in g["targets"]]
            return out
        except (ValueError, TypeError, KeyError, AttributeError):
            raise ConfigError(f"{path}: not a Prometheus file_sd target list") from None
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [parse_target(line) for line in lines if line]


def file_sd(targets: Iterable[Target]) -> list[dict[str, Any]]:
    """The file_sd JSON document for ``targets`` (one group per role)."""
    by_role: dict[str, list[str]] = {}
    for t in targets:
        by_role.setdefault(t.role, []).append(t.address)
    return [{"targets": a, "labels": {"role": r}} for r, a in sorted(by_role.items())]


def default_config() -> Path:
    """The shared ``compose/prometheus/prometheus.yml`` of a source checkout."""
    path = Path(__file__).resolve().parents[2] / "compose" / "prometheus" / "prometheus.yml"
    if not path.exists():
        raise ConfigError(
            f"the shared scrape config {path} is missing (an installed, not editable, procvault "
            "has no compose/ folder): pass --config compose/prometheus/prometheus.yml"
        )
    return path


def _binary(binary: str | None) -> str:
    name = binary or os.environ.get("PROCVAULT_PROMETHEUS_BIN") or "prometheus"
    found = shutil.which(name)
    if not found:
        raise PrometheusError(
            f"'{name}' not found: install it with 'apt-get install -y prometheus' "
            "(scripts/setup.sh does) or set PROCVAULT_PROMETHEUS_BIN"
        )
    return found


@dataclass(frozen=True)
class PrometheusSettings:
    """How ``procvault observe`` runs Prometheus (each setting is also an option of it)."""

    port: int = option(9090, help="Prometheus web port on 127.0.0.1 (0: a free one)", minimum=0)
    data_dir: str | None = option(
        None,
        help="config copy, targets, TSDB and log (default: a new temporary folder)",
        metavar="DIR",
    )
    config: str | None = option(
        None,
        help="the scrape config (default: the checkout's compose/prometheus/prometheus.yml)",
        metavar="FILE",
    )
    timeout: float = option(
        30.0, help="how long to wait for Prometheus to be ready", unit="seconds", above=0
    )


class LocalPrometheus:
    """A Prometheus server on ``127.0.0.1`` with the shared config and local targets.

    Parameters
    ----------
    data_dir
        Holds the config copy, ``targets/local.json``, the TSDB and ``prometheus.log``.
    targets
        What to scrape.
    config
        The shared scrape config (default: :func:`default_config`).
    port
        Web port (0: a free one).
    binary
        The ``prometheus`` executable (default: ``$PROCVAULT_PROMETHEUS_BIN`` or ``prometheus``).
    """

    def __init__(
        self,
        *,
        data_dir: Path,
        targets: Sequence[Target],
        config: Path | None = None,
        port: int = 9090,
        binary: str | None = None,
        retention: str = "2d",
    ) -> None:
        if not 0 <= port < 65536:
            raise ConfigError(f"port must be 0..65535, got {port}")
        self.data_dir = Path(data_dir)
        self.targets = list(targets)
        self.config = Path(config) if config is not None else default_config()
        if not self.config.is_file():
            raise ConfigError(f"scrape config {self.config} does not exist")
        self.port = port or free_port()
        self.binary = binary
        self.retention = retention
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        """The server's stdout and stderr."""
        return self.data_dir / "prometheus.log"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def write_targets(self, targets: Sequence[Target] | None = None) -> Path:
        """(Re)write ``targets/local.json``; a running server picks changes up by itself."""
        if targets is not None:
            self.targets = list(targets)
        path = self.data_dir / LOCAL_TARGETS
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(file_sd(self.targets), indent=1) + "\n")
        tmp.replace(path)  # atomic: Prometheus never reads half a file
        return path

    def start(self, *, timeout: float = 30.0) -> None:
        """Copy the config, write the targets, start the server and wait for ``/-/ready``."""
        if self.running:
            return
        binary = _binary(self.binary)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "prometheus.yml"
        shutil.copyfile(self.config, config)
        self.write_targets()
        self._log = self.log_file.open("ab")
        self._proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
                f"--storage.tsdb.retention.time={self.retention}",
                f"--web.listen-address={HOST}:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self._log_tail()
                self._close_log()
                raise PrometheusError(f"prometheus exited ({self._proc.returncode}): {tail}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise PrometheusError(f"prometheus not ready on {self.url} after {timeout:.0f} s")

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(line.strip()[:300] for line in text.splitlines()[-lines:]) or "(no log)"

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, *, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds (a second call is harmless)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._close_log()

    # -- HTTP API ---------------------------------------------------------------------------
    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``; the ``data`` field, or ``PrometheusError`` on an error."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read())
            except ValueError:
                raise PrometheusError(f"{url}: HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:
            raise PrometheusError(f"{url}: {exc}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str) -> dict[str, Any]:
        """An instant query: ``{"resultType": ..., "result": ...}``."""
        data: dict[str, Any] = self.api("query", query=promql)
        return data

    def wait_for_targets(self, *, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until every local target has been scraped successfully (``health == "up"``)."""
        want = {t.address for t in self.targets}
        deadline = time.monotonic() + timeout
        active: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            active = self.api("targets", state="active")["activeTargets"]
            up = {t["labels"].get("instance") for t in active if t.get("health") == "up"}
            if want <= up:
                return active
            time.sleep(0.5)
        states = {
            t["labels"].get("instance"): t.get("lastError") or t.get("health") for t in active
        }
        raise PrometheusError(f"targets not up after {timeout:.0f} s: {states}")

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
