"""``procvault demo``: the whole confidential pipeline on what the package ships, then a check.

:class:`Demo` runs, as real processes (``python -m procvault ...``) on a real Kafka broker:

1. the stream: :func:`~procvault.demo.stream.simulate_orders` on the bundled order-to-cash
   net, split across a customer, a supplier and a carrier (written as an XES log);
2. Kafka: the local broker of ``procvault kafka`` on free ports with its data in the run
   folder, or a running broker (``kafka``);
3. ``procvault keys init`` for the three organizations;
4. ``procvault vault`` (model, rules, DP policy, the consortium's ``full`` results policy) and
   ``procvault release`` (the DP release stage);
5. Prometheus (the Debian package), scraping the vault, the release stage and the agents, when
   it is installed;
6. three ``procvault agent`` processes replaying their organization's share of the stream in
   step; the carrier's applies its privacy policy (drivers pseudonymised, the delivery note
   scrubbed of names, phone numbers and e-mail addresses);
7. a live view (:class:`~procvault.demo.view.Watch`) until every case has its result and the
   DP panes are released; then everything is stopped;
8. the self-check (:mod:`procvault.demo.check`): the vault's per-case results against
   ``procvault monitor`` on the same stream, every topic's bytes scanned for anything in
   clear, the vault's counters (nothing rejected or late), and no process left running.

The exit code is 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from uuid import uuid4

from procvault.demo.bundle import Bundle
from procvault.demo.check import Check

__all__ = ["Demo", "DemoSettings"]

_METRICS_RE = re.compile(r"metrics at http://([0-9.]+:[0-9]+)")


@dataclass(frozen=True)
class DemoSettings:
    """How the demo runs (each is a ``procvault demo`` option).

    Attributes
    ----------
    run_dir
        Where the stream, keys, logs and (own broker) Kafka data go; ``None``: a new
        temporary folder, deleted at the end unless ``keep``.
    cases
        Orders simulated.
    rate
        Events per second of the whole stream (the agents replay in step).
    seed
        The simulation's seed.
    kafka
        ``HOST:PORT`` of a running broker to use (the demo's topics get their own prefix);
        ``None``: start a local one on free ports and stop it at the end.
    prometheus
        Start Prometheus when the ``prometheus`` binary is installed.
    live
        Show the live view (``None``: when standard output is a terminal; else a line of
        progress every few seconds).
    keep
        Keep a temporary run folder.
    timeout
        Seconds after the agents start by which every case must have its result.
    """

    run_dir: Path | None = None
    cases: int = 1000
    rate: float = 600.0
    seed: int = 1
    kafka: str | None = None
    prometheus: bool = True
    live: bool | None = None
    keep: bool = False
    timeout: float = 300.0


class DemoFailure(Exception):
    """A step of the demo could not run (the message says which and why)."""


@dataclass
class _Child:
    name: str
    popen: subprocess.Popen[bytes]
    err: Path

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def tail(self, n: int = 6) -> str:
        return " | ".join(self.stderr().strip().splitlines()[-n:])


@dataclass
class Demo:
    """One run of the demo (see the module docstring)."""

    settings: DemoSettings = field(default_factory=DemoSettings)
    bundle: Bundle = field(default_factory=Bundle.default)
    out: IO[str] = field(default_factory=lambda: sys.stdout)

    def __post_init__(self) -> None:
        self.children: list[_Child] = []
        self.checks: list[Check] = []
        self.prefix = f"demo{uuid4().hex[:8]}."
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._live: Any = None

    # -- output ----------------------------------------------------------------------------
    def say(self, text: str) -> None:
        """One step line, with the time since the start (above the live view, if shown)."""
        line = f"[{time.monotonic() - self._started:5.1f}s] {text}"
        with self._lock:
            if self._live is not None:
                self._live.console.print(line, markup=False, highlight=False)
                return
            self.out.write(line + "\n")
            self.out.flush()

    # -- processes -------------------------------------------------------------------------
    def _spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> _Child:
        err = self.root / "logs" / f"{name}.log"
        err.parent.mkdir(parents=True, exist_ok=True)
        with err.open("wb") as fh:
            popen = subprocess.Popen(
                [sys.executable, "-m", "procvault", *args],
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        child = _Child(name, popen, err)
        self.children.append(child)
        return child

    def _run(self, name: str, *args: str, timeout: float = 120.0) -> str:
        child = self._spawn(name, *args)
        try:
            rc = child.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise DemoFailure(f"{name} did not finish within {timeout:.0f} s") from None
        if rc != 0:
            raise DemoFailure(f"{name} exited {rc}: {child.tail()}")
        return child.stderr()

    def _wait_for(self, child: _Child, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = child.stderr()
            if text in got:
                return got
            if child.popen.poll() is not None:
                raise DemoFailure(f"{child.name} exited {child.popen.returncode}: {child.tail()}")
            time.sleep(0.1)
        raise DemoFailure(f"{child.name}: not {text!r} within {timeout:.0f} s: {child.tail()}")

    def _stop_children(self) -> None:
        for child in self.children:
            if child.popen.poll() is None:
                child.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20.0
        for child in self.children:
            try:
                child.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.popen.kill()
                child.popen.wait(10)

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> int:
        """Run the demo; return the exit code (0: every check passed)."""
        s = self.settings
        tmp = None
        if s.run_dir is None:
            tmp = Path(tempfile.mkdtemp(prefix="procvault-demo-"))
            self.root = tmp
        else:
            self.root = Path(s.run_dir).resolve()
            self.root.mkdir(parents=True, exist_ok=True)
        self.kafka: Any = None
        self.prom: Any = None
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            try:
                self._pipeline()
            except DemoFailure as exc:
                self.checks.append(Check("run", False, str(exc)))
            finally:
                self._teardown()
            self.checks.append(self._nothing_left())
        finally:
            signal.signal(signal.SIGTERM, previous)
        ok = all(c.ok for c in self.checks)
        self.out.write("\nself-check:\n")
        for check in self.checks:
            self.out.write(f"  {check.line()}\n")
        took = time.monotonic() - self._started
        verdict = "passed" if ok else "FAILED"
        self.out.write(f"self-check {verdict} ({took:.0f} s)")
        if tmp is not None and not s.keep:
            shutil.rmtree(tmp, ignore_errors=True)
            self.out.write("\n")
        else:
            self.out.write(f"; logs, keys and the stream in {self.root}\n")
        self.out.flush()
        return 0 if ok else 1

    def _teardown(self) -> None:
        self._stop_children()
        if self.prom is not None:
            with contextlib.suppress(Exception):
                self.prom.stop()
        if self.kafka is not None:
            self.say("stopping the local Kafka")
            with contextlib.suppress(Exception):
                self.kafka.stop()

    def _nothing_left(self) -> Check:
        alive = [c.name for c in self.children if c.popen.poll() is None]
        if self.prom is not None and self.prom.running:
            alive.append("prometheus")
        if self.kafka is not None and self.kafka.status()["running"]:
            alive.append("kafka")
        if alive:
            return Check("processes", False, f"still running: {', '.join(alive)}")
        started = len(self.children) + (self.prom is not None) + (self.kafka is not None)
        return Check("processes", True, f"all {started} processes started are stopped")

    def _pipeline(self) -> None:
        from procvault.demo.stream import share_sizes, simulate_orders, write_stream
        from procvault.streams.frames import Topics

        s, b = self.settings, self.bundle
        orgs = b.orgs
        keys = self.root / "keys"
        with ThreadPoolExecutor(2) as pool:
            # the broker and the keys come up while the stream is simulated
            kafka = pool.submit(self._kafka)
            keyring = pool.submit(
                self._run,
                "keys",
                "keys",
                "init",
                str(keys),
                "--orgs",
                ",".join(orgs),
                "--if-missing",
            )
            events = simulate_orders(s.cases, seed=s.seed, bundle=b)
            stream = self.root / "stream.xes"
            n_cases = write_stream(events, stream)
            shares = share_sizes(stream, b.split_map)
            self.say(
                f"stream: {len(events)} events of {n_cases} simulated orders "
                f"(bundled {b.model.name}), split across {', '.join(orgs)} by "
                f"{b.split_map.name}"
            )
            keyring.result()
            self.say(f"keys: vault identity and {len(orgs)} organizations' keys in {keys}")
            bootstrap = kafka.result()
        topics = Topics(self.prefix)
        # the reference: procvault monitor on the same stream, in-process, meanwhile
        monitor = self._spawn(
            "monitor",
            "monitor",
            str(stream),
            "--model",
            str(b.model),
            "--rules",
            str(b.rules),
            "--case-results",
            str(self.root / "monitor-cases.jsonl"),
        )
        common = ["--kafka", bootstrap, "--keys", str(keys), "--topic-prefix", self.prefix]
        engines = ["--model", str(b.model), "--rules", str(b.rules)]
        vault = self._spawn(
            "vault",
            "vault",
            *common,
            *engines,
            "--dp-policy",
            str(b.dp_policy),
            "--results-policy",
            str(b.results_policy),
            "--worker-id",
            "demo-vault",
            "--metrics-port",
            "0",
        )
        release = self._spawn(
            "release",
            "release",
            *common,
            *engines,
            "--dp-policy",
            str(b.dp_policy),
            "--metrics-port",
            "0",
        )
        # the agents start at once too: each waits for the vault's attestation, and the
        # vault's merge waits for every organization (start order does not matter)
        agents = {}
        for org in orgs:
            extra: list[str] = []
            env = None
            if org == "carrier":
                extra = ["--policy", str(b.carrier_policy)]
                # the carrier's own pseudonym key: never leaves it (here: this process's env)
                env = {"PROCVAULT_POLICY_KEY": secrets.token_hex(32)}
            agents[org] = self._spawn(
                f"agent-{org}",
                "agent",
                *common,
                "--org",
                org,
                "--from",
                str(stream),
                "--split-map",
                str(b.split_map),
                "--end-markers",
                "--allow-insecure-attestation",
                "--rate",
                f"{s.rate:g}",
                "--attestation-timeout",
                "180",
                "--control-dir",
                str(self.root / "agents" / org),
                "--metrics-port",
                "0",
                *extra,
                env=env,
            )
        self.say(
            f"vault, release stage and agents of {', '.join(orgs)} started "
            f"({s.rate:g} events/s of the whole stream; carrier: pseudonyms and PII scrubbing)"
        )
        self._wait_for(vault, "procvault vault: ready", 180)
        self.say("vault worker ready (simulated attestation: development only)")
        self._wait_for(release, "procvault release: ready", 180)
        self.say(f"release stage ready (DP policy {b.dp_policy.name})")
        prometheus = threading.Thread(
            target=self._prometheus, args=([vault, release, *agents.values()],), daemon=True
        )
        prometheus.start()
        watch = self._watch(bootstrap, topics, keys, orgs, shares, agents, n_cases)
        prometheus.join(30)
        for org, agent in agents.items():
            if agent.popen.poll() is None or agent.popen.returncode != 0:
                raise DemoFailure(f"agent of {org} did not finish: {agent.tail()}")
        vault.popen.send_signal(signal.SIGTERM)
        release.popen.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            vault.popen.wait(30)
            release.popen.wait(30)
        stats = _last_json(vault.stderr())
        self._show_final(watch)
        self._self_check(bootstrap, topics, monitor, events, watch, stats)

    def _kafka(self) -> str:
        from procvault.streams.kafka_local import LocalKafka, free_port, install_jars, wait_ready

        if self.settings.kafka:
            bootstrap = self.settings.kafka.removeprefix("kafka://").rstrip("/")
            wait_ready(bootstrap, timeout=30.0)
            self.say(f"Kafka: using the broker at {bootstrap} (topics {self.prefix}*)")
            return bootstrap
        install_jars()
        port = free_port()
        controller = free_port()
        while controller == port:
            controller = free_port()
        self.kafka = LocalKafka(data_dir=self.root / "kafka", port=port, controller_port=controller)
        self.say("Kafka: starting a local broker (KRaft) on free ports")
        self.kafka.start(timeout=120.0)
        self.say(f"Kafka ready at {self.kafka.bootstrap} (data in {self.kafka.data_dir})")
        return str(self.kafka.bootstrap)

    def _prometheus(self, children: list[_Child]) -> None:
        if not self.settings.prometheus:
            return
        from procvault.metrics.prometheus import LocalPrometheus, Target, default_config

        config = default_config()
        if shutil.which(os.environ.get("PROCVAULT_PROMETHEUS_BIN", "prometheus")) is None:
            self.say("Prometheus: not installed (apt-get install prometheus), left out")
            return
        if not config.is_file():
            self.say(f"Prometheus: no scrape config at {config}, left out")
            return
        targets = []
        deadline = time.monotonic() + 20.0
        for child in children:
            role = child.name.split("-")[0]
            while time.monotonic() < deadline:
                found = _METRICS_RE.search(child.stderr())
                if found:
                    targets.append(Target(role, found.group(1)))
                    break
                if child.popen.poll() is not None:
                    break
                time.sleep(0.1)
        self.prom = LocalPrometheus(
            data_dir=self.root / "prometheus", targets=targets, config=config, port=0
        )
        self.prom.start(timeout=30.0)
        self.say(f"Prometheus at {self.prom.url}, scraping {len(targets)} endpoints")

    def _watch(
        self,
        bootstrap: str,
        topics: Any,
        keys: Path,
        orgs: tuple[str, ...],
        shares: dict[str, int],
        agents: dict[str, _Child],
        n_cases: int,
    ) -> Any:
        from procvault.demo.view import Watch

        watch = Watch(bootstrap, topics, keys, orgs, shares)
        live = self.settings.live
        if live is None:
            live = self.out.isatty()
        deadline = time.monotonic() + self.settings.timeout

        async def follow() -> None:
            stop = asyncio.Event()
            reader = asyncio.create_task(watch.run(stop))
            last_plain = 0.0
            quiet_since: float | None = None
            seen = (-1, -1)
            display: Any = None
            if live:
                from rich.console import Console
                from rich.live import Live

                display = Live(
                    watch.render(),
                    console=Console(file=self.out),
                    refresh_per_second=2,
                    transient=False,
                )
                display.start()
                with self._lock:
                    self._live = display
            try:
                while True:
                    await asyncio.sleep(0.5)
                    if reader.done():
                        reader.result()  # raises what stopped it
                    for org, agent in agents.items():
                        rc = agent.popen.poll()
                        if rc is not None and rc != 0:
                            raise DemoFailure(f"agent of {org} exited {rc}: {agent.tail()}")
                        watch.finished[org] = rc == 0
                    if display is not None:
                        display.update(watch.render())
                    elif time.monotonic() - last_plain >= 5.0:
                        self.say(watch.plain())
                        last_plain = time.monotonic()
                    cases = {c["case"] for c in watch.case_results()}
                    now = (len(watch.panes), len(watch.windows))
                    if all(watch.finished.values()) and len(cases) >= n_cases:
                        # every result is in: wait for the release stage to go quiet
                        if now != seen:
                            seen, quiet_since = now, time.monotonic()
                        elif quiet_since is not None and time.monotonic() - quiet_since > 3.0:
                            return
                    if time.monotonic() > deadline:
                        raise DemoFailure(
                            f"not done within {self.settings.timeout:.0f} s: {watch.plain()}"
                        )
            finally:
                if display is not None:
                    with self._lock:
                        self._live = None
                    display.update(watch.render())
                    display.stop()
                stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(reader, 10)

        asyncio.run(follow())
        self.say(watch.plain())
        return watch

    def _show_final(self, watch: Any) -> None:
        from rich.console import Console

        from procvault.demo.view import summarize

        self.out.write("\nwhat each organization received (sealed to it, opened with its key):\n")
        for line in summarize(watch.views):
            self.out.write(line + "\n")
        if not self.settings.live and not self.out.isatty():
            # the map once, as plain text (no colours, no cursor moves)
            from procvault.processmap.draw import build_map, render_map

            record = watch.map_record()
            console = Console(file=self.out, force_terminal=False, width=100, no_color=True)
            if record is not None:
                pane = watch.panes[max(watch.panes)] if watch.panes else None
                mech = pane.mechanisms if pane is not None else None
                console.print(render_map(build_map(record, mechanisms=mech)))
                for line in watch.noise_lines():
                    console.print(line)
            else:
                console.print("DP process map: no pane released")
        self.out.flush()

    def _self_check(
        self,
        bootstrap: str,
        topics: Any,
        monitor: _Child,
        events: list[Any],
        watch: Any,
        stats: dict[str, Any] | None,
    ) -> None:
        from procvault.demo.check import (
            compare_cases,
            list_topics,
            read_case_results,
            scan_topics,
            vault_case_results,
        )
        from procvault.demo.stream import needles

        reference = self.root / "monitor-cases.jsonl"
        rc = monitor.popen.wait(120)
        if rc != 0:
            raise DemoFailure(f"procvault monitor exited {rc}: {monitor.tail()}")
        try:
            got = vault_case_results(watch.case_results())
        except ValueError as exc:
            self.checks.append(Check("cases", False, str(exc)))
        else:
            self.checks.append(compare_cases(read_case_results(reference), got))
        if stats is None:
            self.checks.append(Check("counters", False, "the vault printed no counters"))
        else:
            rejected = sum(stats.get("rejected", {}).values())
            ok = rejected == 0 and stats.get("late", 0) == 0
            self.checks.append(
                Check(
                    "counters",
                    ok,
                    f"vault applied {stats.get('applied')} records, {rejected} rejected, "
                    f"{stats.get('late', 0)} late",
                )
            )
        published = len(watch.panes) + len(watch.windows)
        self.checks.append(
            Check(
                "dp",
                watch.aggregates_rejected == 0 and bool(watch.panes),
                f"{len(watch.panes)} panes and {len(watch.windows)} windows released, signed "
                f"and verified ({published} records, {watch.aggregates_rejected} rejected)",
            )
        )
        self.say("self-check: scanning every record of every topic for data in clear")
        data, activities = needles(events)

        async def scan() -> Check:
            names = await list_topics(bootstrap)
            if self.kafka is None:  # a shared broker: the demo's own topics
                names = [n for n in names if n.startswith(self.prefix)]
            return await scan_topics(bootstrap, names, data, activities, topics.aggregates)

        self.checks.append(asyncio.run(scan()))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _last_json(text: str) -> dict[str, Any] | None:
    for raw in reversed(text.splitlines()):
        line = raw.removeprefix("procvault vault: ")
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out: dict[str, Any] = json.loads(line)
                return out
    return None
