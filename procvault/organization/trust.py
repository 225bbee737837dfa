"""Trust in the vault that stays current: verified once, then re-verified, or distrusted.

An agent (or a reader) holds a :class:`VaultTrust`. It verifies the vault's first answer to a
fresh nonce (:class:`~procvault.streams.provisioning.Challenge`: the announcement must chain to
the pinned identity, be signed by the certified epoch key and carry evidence the attestation
policy accepts), then keeps reading ``vault.keys`` and

* **re-verifies periodically**: a new round with a fresh nonce every ``reattest_interval``
  seconds (as ProMTEE's agents re-verify);
* **on every new announcement**: one that chains to the identity and announces a newer epoch
  than the one in use starts a round at once (an announcement bound to another nonce proves
  nothing about the vault *now*); when it verifies, :attr:`VaultTrust.current` is the newer
  epoch's keys (the publishing loop starts a new producer session under it);
* **distrusts** the vault, for good and with the reason, when a round fails: the vault's own
  answer (chained to the identity) fails the attestation policy or freshness, no valid answer
  comes within ``timeout``, or two different key sets are certified for one epoch. From then on
  :meth:`VaultTrust.check` raises :class:`VaultDistrusted` and :meth:`VaultTrust.wait_distrusted`
  returns; the agent stops sending and says why (:func:`run_while_trusted`).

Answers that do not chain to the identity (an impersonator's, or bytes that are no announcement)
never change anything: they are counted by reason (:attr:`TrustCore.refused`) and skipped, so a
Kafka writer can neither be trusted nor make the agent give up early.

:class:`TrustCore` is the pure state machine (times are given); :class:`VaultTrust` runs it
against the broker.

>>> from procvault.streams.attestation import KeyAnnouncement, SimulatedProvider
>>> from procvault.streams.attestation import SimulatedVerifier
>>> from procvault.streams.secrets import VaultSecrets
>>> vault = VaultSecrets.generate()
>>> pinned = vault.identity_public
>>> core = TrustCore(pinned, SimulatedVerifier(pinned, allow_insecure=True),
...                  TrustSettings(reattest_interval=60, timeout=10))
>>> nonce = core.due(0.0)  # the first round's nonce, to send on vault.attest
>>> answer = KeyAnnouncement.create(vault, SimulatedProvider(vault.identity), nonce=nonce)
>>> core.offer(answer.to_bytes(), mono=0.5)
>>> core.state, core.keys.epoch
(<TrustState.TRUSTED: 'trusted'>, 1)
>>> core.due(30.0) is None, core.due(60.0) is not None  # re-verified after the interval
(True, True)
>>> core.tick(70.0)  # ... and no answer came within the round's timeout
>>> core.state, core.reason
(<TrustState.DISTRUSTED: 'distrusted'>, 'no valid key announcement bound to this nonce ...')
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from procvault.monitor.errors import ConfigError, KafkaSetupError, SecurityError
from procvault.streams.attestation import AttestationError, KeyAnnouncement, Verifier
from procvault.streams.provisioning import Challenge
from procvault.streams.settings import option

if TYPE_CHECKING:
    from procvault.streams.envelope import VaultPublicKeys
    from procvault.streams.frames import Topics

__all__ = [
    "TrustCore",
    "TrustSettings",
    "TrustState",
    "TrustStatus",
    "VaultDistrusted",
    "VaultTrust",
    "run_while_trusted",
]

T = TypeVar("T")


class TrustState(enum.StrEnum):
    """Where trust in the vault stands."""

    PENDING = "pending"  # the first verification has not succeeded yet
    TRUSTED = "trusted"  # the last round verified
    DISTRUSTED = "distrusted"  # a round failed: for good


class VaultDistrusted(SecurityError):
    """The vault is no longer trusted (``reason`` says why)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the vault is no longer trusted: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class TrustSettings:
    """How often and how patiently the vault is verified.

    Parameters
    ----------
    reattest_interval
        Seconds between the start of two verification rounds (each with a fresh nonce).
    timeout
        Seconds a round waits for a valid answer before the vault is distrusted (the first
        round: before :meth:`VaultTrust.start` fails).
    retry
        Seconds between two sends of a round's nonce (the vault answers each nonce once).
    max_age
        Oldest ``issued_at`` of an answer accepted, seconds.
    """

    reattest_interval: float = option(
        300.0,
        help="re-verify the vault this often, with a fresh nonce (also at every newer epoch "
        "announced); if a re-verification fails the agent stops sending and says why",
        unit="seconds",
        metavar="SECONDS",
        above=0,
    )
    timeout: float = 60.0  # the shared --attestation-timeout
    retry: float = 2.0
    max_age: float = 300.0

    def __post_init__(self) -> None:
        for name in ("reattest_interval", "timeout", "retry", "max_age"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0")


@dataclass(frozen=True)
class TrustStatus:
    """A snapshot of a :class:`TrustCore`."""

    state: TrustState
    keys: VaultPublicKeys | None
    reason: str | None
    evidence: str | None  # kind of the last accepted evidence
    verified_at: float | None  # wall clock of the last successful round
    verifications: int  # successful rounds
    refused: dict[str, int]  # announcements refused, by reason


class TrustCore:
    """The pure state machine of :class:`VaultTrust` (see the module docstring).

    Drive it with :meth:`due` (the nonce to send now, if any), :meth:`offer` (each record of
    ``vault.keys``) and :meth:`tick` (time passes); ``mono`` is monotonic time, ``wall`` the
    wall clock (for freshness).
    """

    def __init__(
        self,
        identity: bytes,
        verifier: Verifier,
        settings: TrustSettings | None = None,
    ) -> None:
        self.identity = identity
        self.verifier = verifier
        self.settings = settings or TrustSettings()
        self.state = TrustState.PENDING
        self.keys: VaultPublicKeys | None = None
        self.reason: str | None = None
        self.evidence: str | None = None
        self.verified_at: float | None = None
        self.verifications = 0
        self.refused: Counter[str] = Counter()
        self.round: Challenge | None = None
        self._next_round = float("-inf")
        self._next_send = float("-inf")
        self._first_failure: AttestationError | None = None

    # -- driving ----------------------------------------------------------------------------
    def due(self, mono: float) -> bytes | None:
        """The nonce to write to ``vault.attest`` now, if any (a new round's, or a resend)."""
        if self.state is TrustState.DISTRUSTED or self._first_failure is not None:
            return None
        if self.round is None:
            if mono < self._next_round:
                return None
            self._start_round(mono)
        assert self.round is not None
        if mono >= self._next_send:
            self._next_send = mono + self.settings.retry
            return self.round.nonce
        return None

    def _start_round(self, mono: float) -> None:
        s = self.settings
        self.round = Challenge(
            self.identity, self.verifier, started=mono, timeout=s.timeout, max_age=s.max_age
        )
        self._next_send = float("-inf")

    def offer(self, value: object, *, mono: float, wall: float | None = None) -> None:
        """Consider one ``vault.keys`` record value."""
        if self.state is TrustState.DISTRUSTED or self._first_failure is not None:
            return
        wall = time.time() if wall is None else wall
        round_ = self.round
        try:
            ann = KeyAnnouncement.from_bytes(value)
        except AttestationError as exc:
            self.refused[exc.reason] += 1
            if round_ is not None:
                round_.note_refusal(exc)
            return
        if round_ is not None and ann.nonce == round_.nonce:
            before = round_.refused.copy()
            try:
                keys = round_.offer_announcement(ann, now=wall)
            except AttestationError as exc:
                self.refused[exc.reason] += 1
                self._fail(exc, "the vault's answer failed verification")
                return
            self.refused.update(round_.refused - before)
            if keys is not None:
                self._accept(keys, round_, mono, wall)
            return
        self._unsolicited(ann, mono)

    def _unsolicited(self, ann: KeyAnnouncement, mono: float) -> None:
        """An announcement bound to another nonce: worth a round if it chains to the identity
        and announces a newer epoch (only then is its signature even checked)."""
        if self.keys is None or ann.keys.epoch <= self.keys.epoch:
            return
        try:
            ann.chain(self.identity)
        except AttestationError as exc:
            self.refused[exc.reason] += 1
            return
        if self.round is None:
            self._start_round(mono)

    def tick(self, mono: float) -> None:
        """Time passes: a round without a valid answer in time fails."""
        round_ = self.round
        if round_ is not None and round_.expired(mono):
            self._fail(round_.timeout_error(), "re-verification failed")

    def _fail(self, exc: AttestationError, what: str) -> None:
        self.round = None
        reason = str(exc) if what == "re-verification failed" else f"{what}: {exc}"
        if self.keys is None:  # the first round: VaultTrust.start raises it
            self._first_failure = AttestationError(reason, exc.reason)
            return
        self.state = TrustState.DISTRUSTED
        self.reason = reason

    def _accept(self, keys: VaultPublicKeys, round_: Challenge, mono: float, wall: float) -> None:
        self.round = None
        current = self.keys
        if current is not None and keys.epoch == current.epoch and keys != current:
            self.refused["conflict"] += 1
            self.state = TrustState.DISTRUSTED
            self.reason = f"two different key sets are certified for epoch {keys.epoch}"
            return
        if current is None or keys.epoch > current.epoch:
            self.keys = keys
        self.state = TrustState.TRUSTED
        self.evidence = round_.evidence.kind if round_.evidence is not None else None
        self.verified_at = wall
        self.verifications += 1
        self._next_round = round_.started + self.settings.reattest_interval

    # -- reading ----------------------------------------------------------------------------
    @property
    def first_failure(self) -> AttestationError | None:
        """Why the first round failed (``None`` if it has not)."""
        return self._first_failure

    def request_round(self) -> None:
        """Start a round at the next :meth:`due` (unless one runs)."""
        if self.round is None:
            self._next_round = float("-inf")

    def status(self) -> TrustStatus:
        """A snapshot."""
        return TrustStatus(
            self.state,
            self.keys,
            self.reason,
            self.evidence,
            self.verified_at,
            self.verifications,
            dict(self.refused),
        )


class VaultTrust:
    """:class:`TrustCore` against the broker: challenges on ``vault.attest``, reads
    ``vault.keys``.

    Parameters
    ----------
    bootstrap
        Kafka ``host:port``.
    topics
        The deployment's topic names.
    identity
        The pinned vault identity (``Registry.identity``).
    verifier
        Checks evidence (:class:`~procvault.streams.attestation.EvidenceVerifier`).
    settings
        Intervals and timeouts.
    metrics
        Optional; has ``set_vault_trust(state)`` and ``announcements_refused(reason, n)``.
    log
        One line per event worth saying (a refused answer's reason the first time, a newer
        epoch, distrust).

    Use it as ``async with VaultTrust(...) as trust:`` (or :meth:`start` / :meth:`stop`):
    :meth:`start` returns once the first round verified (or raises the reason), then a
    background task keeps trust current.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        identity: bytes,
        verifier: Verifier,
        settings: TrustSettings | None = None,
        *,
        metrics: Any = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.core = TrustCore(identity, verifier, settings)
        self.metrics = metrics
        self.log = log
        self._consumer: Any = None
        self._producer: Any = None
        self._task: asyncio.Task[None] | None = None
        self._distrusted = asyncio.Event()
        self._changed = asyncio.Event()
        self._exported: Counter[str] = Counter()
        self._logged: set[str] = set()
        self._last: tuple[TrustState, int | None] = (TrustState.PENDING, None)

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> VaultPublicKeys:
        """Connect, verify the vault once (:class:`AttestationError` with the reason if that
        fails) and keep verifying it in the background; returns the verified keys."""
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        if self._consumer is not None or self._task is not None:
            raise RuntimeError("this VaultTrust is started already")
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, isolation_level="read_committed", group_id=None
        )
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        try:
            await self._consumer.start()
            await self._producer.start()
            tp = TopicPartition(self.topics.keys, 0)
            self._consumer.assign([tp])
            await self._consumer.seek_to_end(tp)
            await self._consumer.position(tp)
        except Exception as exc:
            await self._close()
            raise KafkaSetupError(f"cannot reach Kafka at {self.bootstrap}: {exc}") from None
        try:
            while self.core.state is TrustState.PENDING:
                await self._step()
                failure = self.core.first_failure
                if failure is not None:
                    raise failure
        except BaseException:
            await self._close()
            raise
        self._task = asyncio.create_task(self._watch())
        keys = self.core.keys
        assert keys is not None
        return keys

    async def stop(self) -> None:
        """Stop verifying and disconnect (a second call does nothing)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close()

    async def __aenter__(self) -> VaultTrust:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _close(self) -> None:
        from procvault.streams.kafka_io import _stop_consumer

        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        if consumer is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await _stop_consumer(consumer)
        if producer is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await producer.stop()

    # -- the loop ---------------------------------------------------------------------------
    async def _step(self) -> None:
        core = self.core
        nonce = core.due(time.monotonic())
        if nonce is not None:
            await self._producer.send_and_wait(self.topics.attest, nonce)
        batch = await self._consumer.getmany(timeout_ms=200)
        for records in batch.values():
            for rec in records:
                core.offer(rec.value, mono=time.monotonic(), wall=time.time())
        core.tick(time.monotonic())
        self._report()

    async def _watch(self) -> None:
        failures = 0
        while self.core.state is not TrustState.DISTRUSTED:
            try:
                await self._step()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Kafka trouble: the round's timeout decides
                failures += 1
                if failures == 1:
                    self._say(f"cannot reach Kafka to re-verify the vault ({exc}); retrying")
                self.core.tick(time.monotonic())
                self._report()
                await asyncio.sleep(1.0)

    def _say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)

    def _report(self) -> None:
        core = self.core
        for reason, n in core.refused.items():
            new = n - self._exported[reason]
            if new <= 0:
                continue
            self._exported[reason] = n
            if self.metrics is not None:
                self.metrics.announcements_refused(reason, new)
            if reason not in self._logged:
                self._logged.add(reason)
                self._say(f"{self.topics.keys}: announcement refused ({reason}), counted")
        now = (core.state, core.keys.epoch if core.keys is not None else None)
        if now == self._last:
            return
        before, self._last = self._last, now
        if self.metrics is not None:
            self.metrics.set_vault_trust(core.state.value)
        if core.state is TrustState.DISTRUSTED:
            self._say(f"the vault is no longer trusted: {core.reason}")
            self._distrusted.set()
        elif before[1] is not None and now[1] is not None and now[1] > before[1]:
            self._say(f"the vault's epoch {now[1]} is verified (was {before[1]})")
        self._changed.set()

    # -- reading ----------------------------------------------------------------------------
    @property
    def state(self) -> TrustState:
        """Where trust stands."""
        return self.core.state

    @property
    def reason(self) -> str | None:
        """Why the vault is distrusted (``None`` while it is not)."""
        return self.core.reason

    @property
    def current(self) -> VaultPublicKeys:
        """The verified keys in use (the newest verified epoch); :class:`VaultDistrusted`
        once distrusted."""
        return self.check()

    def check(self) -> VaultPublicKeys:
        """:attr:`current`, or :class:`VaultDistrusted` with the reason (call it before each
        batch: a new epoch means a new producer session)."""
        core = self.core
        if core.state is TrustState.DISTRUSTED:
            raise VaultDistrusted(core.reason or "re-verification failed")
        if core.keys is None:
            raise VaultDistrusted("the vault has not been verified yet")
        return core.keys

    def status(self) -> TrustStatus:
        """A snapshot (state, keys, reason, evidence kind, counts)."""
        return self.core.status()

    async def wait_distrusted(self) -> str:
        """Return the reason once the vault is distrusted."""
        await self._distrusted.wait()
        return self.core.reason or "re-verification failed"

    async def wait_changed(self) -> TrustStatus:
        """Return at the next change of state or of epoch."""
        self._changed.clear()
        await self._changed.wait()
        return self.status()

    async def reattest(self) -> TrustStatus:
        """Start a round now and wait until it verified or the vault is distrusted."""
        done = self.core.verifications
        self.core.request_round()
        while self.core.verifications == done and self.core.state is not TrustState.DISTRUSTED:
            if self._task is None or self._task.done():
                raise VaultDistrusted(self.core.reason or "trust is not being kept current")
            await asyncio.sleep(0.05)
        return self.status()


async def run_while_trusted(trust: VaultTrust, work: Awaitable[T]) -> T:
    """Run ``work`` until it finishes, or cancel it when ``trust`` distrusts the vault and
    raise :class:`VaultDistrusted` (what the work had not committed is aborted with it)."""
    task: asyncio.Future[T] = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(trust.wait_distrusted())
    both: set[asyncio.Future[Any]] = {task, waiter}
    distrusted = False
    try:
        done, _ = await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        distrusted = task not in done
    finally:
        for pending in both:
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending
    if distrusted:
        raise VaultDistrusted(trust.reason or "re-verification failed")
    return task.result()
