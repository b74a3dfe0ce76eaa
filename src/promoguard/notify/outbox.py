"""The outbox: queueing deliveries, delivering the due ones with retries, and the dead letters.

Delivery is at least once. A dispatcher *claims* due rows in one short transaction (on
PostgreSQL with ``FOR UPDATE SKIP LOCKED``, so several workers take different rows; SQLite's
``BEGIN IMMEDIATE`` lets one writer in at a time), counting the attempt and moving the row's
``next_attempt_at`` past the claim's timeout; it then sends without holding a transaction, and
records each outcome only if the row is still the one it claimed (same attempt count, still
pending). A worker that dies mid-send leaves its rows to be claimed again when the claim lapses.

A failed attempt is retried after ``base · 2^(attempt-1)`` seconds (capped, with bounded
jitter so many failures do not all come back at once); the last allowed attempt's failure marks
the delivery ``dead``. An operator lists dead letters and puts one back to pending.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.errors import ConflictError, NotFoundError
from promoguard.loops import Periodic
from promoguard.notify.channels import Channel
from promoguard.notify.models import Delivery, DeliveryStatus
from promoguard.store.db import Database, upsert_insert, utcnow

__all__ = [
    "DispatchReport",
    "Dispatcher",
    "Outgoing",
    "RetryPolicy",
    "dead_letters",
    "deliveries",
    "enqueue",
    "idempotency_key",
    "retry_dead_letter",
]

log = logging.getLogger("promoguard.notify")

Clock = Callable[[], datetime]
ERROR_LENGTH = 1000


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how far apart a failing delivery is tried.

    Args:
        max_attempts: attempts in all, the first included; the last one's failure is final.
        base_seconds: the wait after the first failure; it doubles after each further one.
        max_seconds: no wait is longer than this.
        jitter: each wait is moved by up to this share of itself, either way.
    """

    max_attempts: int = 6
    base_seconds: float = 2.0
    max_seconds: float = 3600.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_seconds <= 0 or not 0 <= self.jitter < 1:
            raise ValueError(f"not a retry policy: {self}")

    def delay(self, attempts: int, rng: random.Random) -> timedelta:
        """The wait after the ``attempts``-th failed attempt."""
        nominal = min(self.max_seconds, self.base_seconds * 2.0 ** min(attempts - 1, 60))
        spread = nominal * self.jitter
        return timedelta(seconds=nominal + rng.uniform(-spread, spread))


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One delivery to queue."""

    notice_key: str
    channel: str
    target: str
    event: str
    payload: dict[str, Any]

    @property
    def idempotency_key(self) -> str:
        """See :func:`idempotency_key`."""
        return idempotency_key(self.notice_key, self.channel, self.target)


def idempotency_key(notice_key: str, channel: str, target: str) -> str:
    """SHA-256 (hex) of (notice key, channel, target): one delivery per notice and target."""
    return hashlib.sha256("\x1f".join((notice_key, channel, target)).encode()).hexdigest()


async def enqueue(session: AsyncSession, *, items: Iterable[Outgoing], now: datetime) -> list[int]:
    """Queue deliveries in ``session``'s transaction; ones already queued are left alone.

    Returns:
        The ids of the deliveries this call added (none for a notice queued before).
    """
    rows: dict[str, dict[str, Any]] = {}
    for item in items:
        rows.setdefault(
            item.idempotency_key,
            {
                "idempotency_key": item.idempotency_key,
                "notice_key": item.notice_key,
                "channel": item.channel,
                "target": item.target,
                "event": item.event,
                "payload": item.payload,
                "status": DeliveryStatus.PENDING.value,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            },
        )
    if not rows:
        return []
    insert = upsert_insert(session)
    statement = (
        insert(Delivery)
        .values(list(rows.values()))
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(Delivery.id)
    )
    return sorted((await session.scalars(statement)).all())


async def deliveries(
    session: AsyncSession,
    *,
    notice_key: str | None = None,
    status: DeliveryStatus | None = None,
    limit: int = 1000,
) -> Sequence[Delivery]:
    """Deliveries, oldest first, of one notice and/or in one status."""
    query = select(Delivery).order_by(Delivery.id).limit(limit)
    if notice_key is not None:
        query = query.where(Delivery.notice_key == notice_key)
    if status is not None:
        query = query.where(Delivery.status == status.value)
    return (await session.scalars(query)).all()


async def dead_letters(session: AsyncSession, *, limit: int = 100) -> Sequence[Delivery]:
    """The deliveries that failed every attempt, oldest first."""
    return await deliveries(session, status=DeliveryStatus.DEAD, limit=limit)


async def retry_dead_letter(session: AsyncSession, *, delivery_id: int, now: datetime) -> Delivery:
    """Put a dead delivery back to pending, due now, with a fresh set of attempts.

    Raises:
        NotFoundError: there is no delivery ``delivery_id``.
        ConflictError: it is not dead (pending or delivered).
    """
    delivery = await session.get(Delivery, delivery_id, with_for_update=True)
    if delivery is None:
        raise NotFoundError("delivery_not_found", f"no notification delivery {delivery_id}")
    if delivery.status != DeliveryStatus.DEAD:
        raise ConflictError(
            "delivery_not_dead",
            f"delivery {delivery_id} is {delivery.status}: only a dead letter can be retried",
        )
    delivery.status = DeliveryStatus.PENDING.value
    delivery.attempts = 0
    delivery.next_attempt_at = now
    await session.flush()
    return delivery


@dataclass(slots=True)
class DispatchReport:
    """What one dispatch round did."""

    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    lost: int = 0
    """Outcomes not recorded because the row changed meanwhile (its claim had lapsed)."""

    def add(self, other: DispatchReport) -> None:
        """Add another round's counts to this one."""
        self.claimed += other.claimed
        self.delivered += other.delivered
        self.retried += other.retried
        self.dead += other.dead
        self.lost += other.lost


class Dispatcher:
    """Delivers due deliveries through their channels; as a loop, or a round at a time.

    Args:
        db: the database holding the outbox.
        channels: a channel for each channel name (``webhook``, ``email``, ``sms``, ``push``);
            a delivery for a channel that is not here fails (and so is retried, then dead).
        policy: retries.
        clock: now (tests pass a fake to move time without sleeping).
        batch_size: deliveries claimed per round.
        claim_timeout: how long a claimed delivery is left to its worker; longer than a send.
        send_timeout: a channel taking longer than this has failed.
        interval: how often the loop looks for due deliveries (it is also woken by new ones).
        rng: the source of jitter.
    """

    def __init__(
        self,
        db: Database,
        channels: Mapping[str, Channel],
        *,
        policy: RetryPolicy | None = None,
        clock: Clock = utcnow,
        batch_size: int = 50,
        claim_timeout: timedelta = timedelta(minutes=2),
        send_timeout: float = 60.0,
        interval: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self._db = db
        self.channels = dict(channels)
        self.policy = policy or RetryPolicy()
        self._clock = clock
        self._batch_size = batch_size
        self._claim_timeout = claim_timeout
        self._send_timeout = send_timeout
        self._rng = rng or random.Random()
        self._loop = Periodic(self._drain, interval, log=log, what="notification dispatch")

    async def run_once(self) -> DispatchReport:
        """Claim the due deliveries (one batch), send them concurrently, record the outcomes."""
        claimed = await self._claim(self._clock())
        report = DispatchReport(claimed=len(claimed))
        if not claimed:
            return report
        errors = await asyncio.gather(*(self._attempt(delivery) for delivery in claimed))
        finished = self._clock()
        async with self._db.write() as session:
            for delivery, error in zip(claimed, errors, strict=True):
                outcome = await self._record(session, delivery, error, finished)
                setattr(report, outcome, getattr(report, outcome) + 1)
        return report

    async def run_until_idle(self, max_rounds: int = 1000) -> DispatchReport:
        """Run rounds until none finds a due delivery (what a test calls to flush)."""
        total = DispatchReport()
        for _ in range(max_rounds):
            report = await self.run_once()
            total.add(report)
            if not report.claimed:
                break
        return total

    def wake(self) -> None:
        """Make the loop look for due deliveries now rather than at its next interval."""
        self._loop.wake()

    async def start(self) -> None:
        """Deliver in the background until :meth:`stop`."""
        await self._loop.start()

    async def stop(self) -> None:
        """Stop delivering (a send under way is cancelled; its claim lapses and it is retried)."""
        await self._loop.stop()

    async def _drain(self) -> None:
        report = await self.run_once()
        while report.claimed == self._batch_size:  # a backlog: keep going
            report = await self.run_once()

    async def _claim(self, now: datetime) -> list[Delivery]:
        query = (
            select(Delivery)
            .where(Delivery.status == DeliveryStatus.PENDING.value, Delivery.next_attempt_at <= now)
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(self._batch_size)
        )
        async with self._db.write() as session:
            if not self._db.is_sqlite:  # SQLite has one writer at a time already
                query = query.with_for_update(skip_locked=True)
            rows = list((await session.scalars(query)).all())
            for row in rows:
                row.attempts += 1
                row.next_attempt_at = now + self._claim_timeout
        return rows

    async def _attempt(self, delivery: Delivery) -> str | None:
        """Send one delivery; returns None, or why it failed."""
        channel = self.channels.get(delivery.channel)
        if channel is None:
            return f"no {delivery.channel} channel is configured"
        try:
            await asyncio.wait_for(channel.deliver(delivery), self._send_timeout)
        except TimeoutError:
            return f"no answer within {self._send_timeout:g} s"
        except Exception as exc:
            return f"{exc.__class__.__name__}: {exc}"
        return None

    async def _record(
        self, session: AsyncSession, delivery: Delivery, error: str | None, now: datetime
    ) -> str:
        """Store one outcome; returns the report field it counts in."""
        values: dict[str, Any]
        if error is None:
            values = {"status": DeliveryStatus.DELIVERED.value, "delivered_at": now}
            outcome = "delivered"
        elif delivery.attempts >= self.policy.max_attempts:
            values = {"status": DeliveryStatus.DEAD.value, "last_error": error[:ERROR_LENGTH]}
            outcome = "dead"
            log.warning(
                "notification %d (%s to %s) is dead after %d attempts: %s",
                delivery.id,
                delivery.channel,
                delivery.target,
                delivery.attempts,
                error,
            )
        else:
            values = {
                "next_attempt_at": now + self.policy.delay(delivery.attempts, self._rng),
                "last_error": error[:ERROR_LENGTH],
            }
            outcome = "retried"
        result = await session.execute(
            update(Delivery)
            .where(
                Delivery.id == delivery.id,
                Delivery.attempts == delivery.attempts,
                Delivery.status == DeliveryStatus.PENDING.value,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return outcome if getattr(result, "rowcount", 0) == 1 else "lost"
