"""Attested key provisioning over Kafka: an agent's challenge, the vault's signed answer.

The agent (or a reader) writes a fresh 16-byte nonce to ``vault.attest``; every vault worker
answers on ``vault.keys`` with a :class:`~.attestation.KeyAnnouncement` of the current epoch
whose evidence binds that nonce and the vault's identity. A :class:`Challenge` (one round, pure)
decides what an answer is worth:

* not an announcement, or bound to another nonce: skipped (counted as ``malformed``; other
  nonces are other agents' rounds);
* bound to our nonce but not chained to the **pinned identity** (``not_pinned``,
  ``bad_signature``): an impersonator's. Counted, logged once, and the round goes on: a forged
  answer can neither be accepted nor make the agent give up before its timeout;
* chained to the identity but failing freshness or the attestation policy: the vault itself
  offers evidence we do not trust, and the round fails at once with that reason;
* chained and verified: the keys.

:func:`attest_vault` runs one round against the broker. :class:`AttestationResponder` is the
vault's side; it answers each nonce once and at most ``rate`` per second (a token bucket of
``burst``), so a flood of nonces cannot make the vault produce evidence without limit; what it
drops is counted (:attr:`AttestationResponder.counts`) and logged once per outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from procvault.monitor.errors import KafkaSetupError

from .attestation import (
    NONCE_SIZE,
    AttestationError,
    Evidence,
    KeyAnnouncement,
    Provider,
    Verifier,
)
from .envelope import VaultPublicKeys
from .frames import Topics

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

    from .secrets import VaultSecrets

__all__ = [
    "REQUEST_OUTCOMES",
    "AttestationResponder",
    "Challenge",
    "RequestGate",
    "TokenBucket",
    "attest_vault",
]

#: What the responder did with an attestation request (metric label values; closed).
REQUEST_OUTCOMES: Final = frozenset(
    {"answered", "rate_limited", "repeated", "malformed", "provider_error"}
)
_REASON_TEXT: Final = {
    "malformed": "not a key announcement",
    "not_pinned": "not certified by the pinned vault identity",
    "bad_signature": "not signed by the certified epoch key",
}


class Challenge:
    """One attestation round: a fresh nonce and the answers it accepts (pure; times given).

    Parameters
    ----------
    identity
        The pinned vault identity (``registry.json``).
    verifier
        Checks the evidence (the attestation policy).
    started
        Monotonic time the round started; it fails ``timeout`` seconds later.
    max_age
        Oldest ``issued_at`` accepted (seconds, against the wall clock given to :meth:`offer`).
    nonce
        The round's nonce (default: 16 fresh random bytes).

    >>> from procvault.streams.attestation import SimulatedProvider, SimulatedVerifier
    >>> from procvault.streams.secrets import VaultSecrets
    >>> vault, mallory = VaultSecrets.generate(), VaultSecrets.generate()
    >>> pinned = vault.identity_public
    >>> c = Challenge(pinned, SimulatedVerifier(pinned, allow_insecure=True), started=0.0)
    >>> forged = KeyAnnouncement.create(mallory, SimulatedProvider(mallory.identity), nonce=c.nonce)
    >>> c.offer(forged.to_bytes(), now=time.time()) is None, dict(c.refused)
    (True, {'not_pinned': 1})
    >>> genuine = KeyAnnouncement.create(vault, SimulatedProvider(vault.identity), nonce=c.nonce)
    >>> c.offer(genuine.to_bytes(), now=time.time()) == vault.current.public()
    True
    """

    def __init__(
        self,
        identity: bytes,
        verifier: Verifier,
        *,
        started: float,
        timeout: float = 60.0,
        max_age: float | None = 300.0,
        nonce: bytes | None = None,
    ) -> None:
        self.identity = identity
        self.verifier = verifier
        self.nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
        if len(self.nonce) != NONCE_SIZE:
            raise ValueError(f"a nonce is {NONCE_SIZE} bytes")
        self.started = started
        self.timeout = timeout
        self.max_age = max_age
        self.refused: Counter[str] = Counter()
        self.last_refusal: str | None = None
        #: The accepted announcement's evidence (after a successful :meth:`offer`).
        self.evidence: Evidence | None = None

    def expired(self, now: float) -> bool:
        """Whether the round's time is up (``now``: monotonic)."""
        return now >= self.started + self.timeout

    def offer(self, value: object, *, now: float | None = None) -> VaultPublicKeys | None:
        """Consider one ``vault.keys`` record value (``now``: wall clock). Returns the verified
        keys, ``None`` to keep waiting, or raises :class:`AttestationError` when the identity's
        holder answered with evidence that fails (see the module docstring)."""
        try:
            ann = KeyAnnouncement.from_bytes(value)
        except AttestationError as exc:
            self._refuse(exc)
            return None
        return self.offer_announcement(ann, now=now)

    def offer_announcement(
        self, ann: KeyAnnouncement, *, now: float | None = None
    ) -> VaultPublicKeys | None:
        """:meth:`offer` for an announcement already parsed."""
        if ann.nonce != self.nonce:
            return None
        try:
            ann.chain(self.identity)
        except AttestationError as exc:
            self._refuse(exc)
            return None
        keys = ann.check(
            self.verifier,
            identity=self.identity,
            nonce=self.nonce,
            max_age=self.max_age,
            now=time.time() if now is None else now,
        )
        self.evidence = ann.evidence
        return keys

    def note_refusal(self, exc: AttestationError) -> None:
        """Count a record refused during this round (named in :meth:`timeout_error`)."""
        self.refused[exc.reason] += 1
        self.last_refusal = str(exc)

    _refuse = note_refusal

    def timeout_error(self) -> AttestationError:
        """The error of a round that ran out of time (what was refused, if anything)."""
        refused = ", ".join(
            f"{n} {_REASON_TEXT.get(r, r)}" for r, n in sorted(self.refused.items())
        )
        return AttestationError(
            f"no valid key announcement bound to this nonce within {self.timeout:.0f} s "
            + (f"(refused: {refused}) " if refused else "")
            + "(is a vault of this deployment running, and answering on the attestation topic?)",
            "evidence",
        )


async def attest_vault(
    bootstrap: str,
    topics: Topics,
    identity: bytes,
    verifier: Verifier,
    *,
    timeout: float = 60.0,
    retry: float = 2.0,
    max_age: float = 300.0,
    warn: Callable[[str], None] | None = None,
) -> VaultPublicKeys:
    """Challenge the vault and return its verified public keys (see :class:`Challenge`):
    :class:`AttestationError` when the vault's own answer fails, or when no valid answer bound
    to our nonce comes within ``timeout``. ``warn`` gets one line per kind of refused answer."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    round_ = Challenge(
        identity, verifier, started=time.monotonic(), timeout=timeout, max_age=max_age
    )
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        await consumer.start()
        await producer.start()
    except Exception as exc:
        await _stop(consumer, producer)
        raise KafkaSetupError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    try:
        tp = TopicPartition(topics.keys, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        next_ask = 0.0
        warned: set[str] = set()
        while True:
            now = time.monotonic()
            if round_.expired(now):
                raise round_.timeout_error()
            if now >= next_ask:
                await producer.send_and_wait(topics.attest, round_.nonce)
                next_ask = now + retry
            batch = await consumer.getmany(tp, timeout_ms=200)
            for rec in batch.get(tp, ()):
                keys = round_.offer(rec.value)
                if keys is not None:
                    return keys
                if warn is not None:
                    for reason in set(round_.refused) - warned:
                        warned.add(reason)
                        warn(f"{topics.keys}: answer refused: {round_.last_refusal}")
    finally:
        await _stop(consumer, producer)


async def _stop(*clients: Any) -> None:
    for c in clients:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await c.stop()


# ----------------------------------------------------------------------------- the vault's side
class TokenBucket:
    """``rate`` tokens per second up to ``burst``; :meth:`take` spends one if there is one.

    >>> b = TokenBucket(rate=1.0, burst=2, now=0.0)
    >>> [b.take(0.0), b.take(0.0), b.take(0.0), b.take(1.0)]
    [True, True, False, True]
    """

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, *, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self._tokens, self._at = float(burst), now

    def take(self, now: float) -> bool:
        """Spend a token at ``now`` (monotonic seconds); False if none is left."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = max(self._at, now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class RequestGate:
    """Which attestation requests the vault answers: a 16-byte nonce, not answered before
    (the last ``remember`` answered nonces), within the token bucket. Pure; counts outcomes.

    >>> g = RequestGate(rate=1.0, burst=1, now=0.0)
    >>> [g.admit(v, 0.0) for v in (b"a" * 16, b"a" * 16, b"b" * 16, b"short", None)]
    ['answered', 'repeated', 'rate_limited', 'malformed', 'malformed']
    >>> dict(g.counts)
    {'answered': 1, 'repeated': 1, 'rate_limited': 1, 'malformed': 2}
    """

    def __init__(
        self, *, rate: float = 10.0, burst: int = 20, remember: int = 16_384, now: float = 0.0
    ) -> None:
        self.bucket = TokenBucket(rate=rate, burst=burst, now=now)
        self.remember = remember
        self._answered: OrderedDict[bytes, None] = OrderedDict()
        self.counts: Counter[str] = Counter()

    def admit(self, value: object, now: float) -> str:
        """What to do with the request ``value`` at ``now``: ``answered`` (answer it) or why
        not (one of :data:`REQUEST_OUTCOMES`); counted either way."""
        if not isinstance(value, bytes) or len(value) != NONCE_SIZE:
            outcome = "malformed"
        elif value in self._answered:
            outcome = "repeated"
        elif not self.bucket.take(now):
            outcome = "rate_limited"
        else:
            self._answered[value] = None
            if len(self._answered) > self.remember:
                self._answered.popitem(last=False)
            outcome = "answered"
        self.counts[outcome] += 1
        return outcome

    def failed(self, nonce: bytes) -> None:
        """An admitted request could not be answered (the provider failed): counted as
        ``provider_error``, and the nonce may be asked again."""
        self._answered.pop(nonce, None)
        self.counts["answered"] -= 1
        self.counts["provider_error"] += 1


class AttestationResponder:
    """The vault's side: answer nonces on ``vault.attest`` with fresh announcements, at most
    ``rate`` per second (bursts of ``burst``), each nonce once.

    Runs as a background task beside the vault worker (:meth:`run`). ``metrics`` (optional)
    has ``attestation_requests(outcome, n)``; ``log`` gets one line the first time each
    outcome other than ``answered`` happens.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        secrets: VaultSecrets,
        provider: Provider,
        *,
        rate: float = 10.0,
        burst: int = 20,
        metrics: Any = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.secrets = secrets
        self.provider = provider
        self.gate = RequestGate(rate=rate, burst=burst, now=time.monotonic())
        self.metrics = metrics
        self.log = log
        self._logged: set[str] = set()

    @property
    def counts(self) -> Counter[str]:
        """Requests by outcome (:data:`REQUEST_OUTCOMES`)."""
        return self.gate.counts

    @property
    def answered(self) -> int:
        """Announcements published."""
        return self.gate.counts["answered"]

    def _count(self, outcome: str, detail: str = "") -> None:
        if self.metrics is not None:
            self.metrics.attestation_requests(outcome)
        if outcome != "answered" and outcome not in self._logged and self.log is not None:
            self._logged.add(outcome)
            more = f": {detail}" if detail else ""
            self.log(f"{self.topics.attest}: attestation request {outcome}{more} (counted)")

    async def announce(self, producer: AIOKafkaProducer, nonce: bytes) -> None:
        """Publish an announcement of the current epoch bound to ``nonce``."""
        ann = await asyncio.to_thread(
            KeyAnnouncement.create, self.secrets, self.provider, nonce=nonce
        )
        await producer.send_and_wait(self.topics.keys, ann.to_bytes())

    async def handle(self, producer: AIOKafkaProducer, value: object) -> str:
        """One request: answered if the gate admits it; returns the outcome."""
        outcome = self.gate.admit(value, time.monotonic())
        if outcome == "answered" and isinstance(value, bytes):
            try:
                await self.announce(producer, value)
            except (AttestationError, OSError, ValueError) as exc:
                self.gate.failed(value)
                outcome = "provider_error"
                self._count(outcome, str(exc).splitlines()[0] if str(exc) else "")
                return outcome
        self._count(outcome)
        return outcome

    async def run(self) -> None:
        """Answer challenges until cancelled. An announcement with a random nonce goes out at
        start, so readers of results can learn the public keys without a challenge.

        No consumer group: every worker reads every challenge from the moment it starts (a
        group would leave challenges unanswered while a dead member's session times out);
        an agent takes the first valid answer bound to its nonce.
        """
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        from .kafka_io import ensure_topics

        await ensure_topics(self.bootstrap, [self.topics.attest, self.topics.keys])
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None
        )
        await producer.start()
        try:
            await consumer.start()
            tp = TopicPartition(self.topics.attest, 0)
            consumer.assign([tp])
            await consumer.seek_to_end(tp)
            await consumer.position(tp)
            try:
                await self.announce(producer, os.urandom(NONCE_SIZE))
            except (AttestationError, OSError, ValueError) as exc:
                self.gate.counts["provider_error"] += 1
                self._count("provider_error", str(exc).splitlines()[0] if str(exc) else "")
            while True:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for rec in batch.get(tp, ()):
                    await self.handle(producer, rec.value)
        finally:
            await _stop(consumer, producer)
