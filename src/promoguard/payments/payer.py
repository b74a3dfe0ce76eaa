"""Paying payouts exactly once, whatever fails and whenever the process dies.

The argument, step by step (docs/payments.md has it at length):

1. A payout's idempotency key is ``{order}:{cause}`` and unique in the database, so one
   (order, cause) has one payout row, whoever plans it and however often.
2. Before the provider is called, the payout is *claimed* in a committed transaction: status
   ``submitted``, one more attempt, and ``next_attempt_at`` moved to the end of a lease. A
   process that dies after this leaves a row saying "a refund may have been asked for".
3. The provider is called with the payout's key. A provider that saw the key returns the refund
   it made; it never makes a second one. A payout found ``submitted`` with no refund recorded
   (a crash, a timeout, a 5xx: the outcome is unknown) is first looked up at the provider by
   its order and key, and only sent again, with the same key, when nothing is found.
4. The outcome is recorded only if the row is still the one claimed (same status, attempts and
   lease): a worker whose lease lapsed and was taken over records nothing. The payout's new
   status and its ledger row are written in one transaction, and the move to ``succeeded`` is a
   conditional update, so at most one "money out" ledger row exists per payout.
5. Retryable errors are retried after ``base · 2^(n-1)`` seconds (capped, jittered) up to
   ``max_attempts``; after the last one the payout is looked up once more (after a backoff, so a
   request held by the provider has landed) and is ``failed`` only if no refund is found.
   Pending refunds are polled until they succeed or fail; a provider callback may settle them
   first (:meth:`Payer.apply_refund_update`), and whichever comes second changes nothing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.errors import ConflictError, NotFoundError
from promoguard.payments.models import (
    LedgerEntry,
    LedgerEvent,
    Payout,
    PayoutStatus,
    payout_key,
)
from promoguard.payments.provider import (
    PaymentProvider,
    ProviderError,
    Refund,
    RefundStatus,
    RetryableProviderError,
)
from promoguard.store.db import Database, upsert_insert, utcnow

__all__ = [
    "NewPayout",
    "PayOutcome",
    "PayPolicy",
    "PayReport",
    "Payer",
    "find_refund",
    "pay",
    "pay_all",
    "plan_payouts",
    "skip_payout",
]

Clock = Callable[[], datetime]
Progress = Callable[[int, int], None]
ERROR_LENGTH = 1000
_OPEN = (PayoutStatus.PLANNED.value, PayoutStatus.SUBMITTED.value)
_FINAL = frozenset({PayoutStatus.SUCCEEDED, PayoutStatus.FAILED, PayoutStatus.SKIPPED})
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class PayPolicy:
    """How a payout is retried and watched.

    Args:
        max_attempts: refund requests per payout, the first included.
        backoff_base_seconds: the wait after the first failed attempt; it doubles after each.
        backoff_max_seconds: no wait is longer.
        jitter: each wait moves by up to this share of itself, either way.
        claim_timeout: how long a claimed payout is left to its worker (longer than a call).
        poll_interval: how often a pending refund is looked up again.
    """

    max_attempts: int = 6
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 600.0
    jitter: float = 0.2
    claim_timeout: timedelta = timedelta(minutes=2)
    poll_interval: timedelta = timedelta(seconds=30)

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.backoff_base_seconds <= 0 or not 0 <= self.jitter < 1:
            raise ValueError(f"not a payment retry policy: {self}")

    @classmethod
    def from_settings(cls, settings: Any) -> PayPolicy:
        """The policy named by the ``payment_*`` settings."""
        return cls(
            max_attempts=settings.payment_max_attempts,
            backoff_base_seconds=settings.payment_backoff_base_seconds,
            backoff_max_seconds=settings.payment_backoff_max_seconds,
            claim_timeout=timedelta(seconds=settings.payment_claim_timeout_seconds),
            poll_interval=timedelta(seconds=settings.payment_poll_seconds),
        )

    def backoff(self, attempts: int, rng: random.Random) -> timedelta:
        """The wait after the ``attempts``-th failed attempt (bounded, jittered)."""
        nominal = min(
            self.backoff_max_seconds, self.backoff_base_seconds * 2.0 ** min(attempts - 1, 60)
        )
        spread = nominal * self.jitter
        return timedelta(seconds=max(0.0, nominal + rng.uniform(-spread, spread)))


@dataclass(frozen=True, slots=True)
class NewPayout:
    """A payout to plan: ``amount`` minor units of ``currency`` to ``customer_id``."""

    order_id: str
    customer_id: str
    cause: str
    amount: int
    currency: str

    @property
    def idempotency_key(self) -> str:
        """See :func:`~promoguard.payments.models.payout_key`."""
        return payout_key(self.order_id, self.cause)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def plan_payouts(
    session: AsyncSession, *, items: Iterable[NewPayout], now: datetime
) -> dict[str, int]:
    """Plan payouts in ``session``'s transaction; a payout planned before is kept as it is.

    Returns:
        The payout id of every item's idempotency key (new and earlier ones alike).

    Raises:
        InvalidError: an amount is not positive or a currency is not an ISO code.
        ConflictError: a key was planned before with another customer, amount or currency.
    """
    from promoguard.errors import InvalidError  # noqa: PLC0415

    wanted: dict[str, NewPayout] = {}
    for item in items:
        if item.amount <= 0 or len(item.currency) != 3 or not item.currency.isupper():
            raise InvalidError(
                "payout_invalid",
                f"payout {item.idempotency_key}: a positive amount and an ISO currency are needed",
            )
        wanted.setdefault(item.idempotency_key, item)
    insert = upsert_insert(session)
    keys = list(wanted)
    for chunk in _chunks(keys, _CHUNK):
        rows = [
            {
                "idempotency_key": key,
                "order_id": wanted[key].order_id,
                "customer_id": wanted[key].customer_id,
                "cause": wanted[key].cause,
                "amount": wanted[key].amount,
                "currency": wanted[key].currency,
                "status": PayoutStatus.PLANNED.value,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }
            for key in chunk
        ]
        await session.execute(
            insert(Payout).values(rows).on_conflict_do_nothing(index_elements=["idempotency_key"])
        )
    ids: dict[str, int] = {}
    for chunk in _chunks(keys, _CHUNK):
        found = await session.execute(
            select(
                Payout.idempotency_key,
                Payout.id,
                Payout.customer_id,
                Payout.amount,
                Payout.currency,
            ).where(Payout.idempotency_key.in_(chunk))
        )
        for key, payout_id, customer_id, amount, currency in found:
            item = wanted[key]
            if (customer_id, amount, currency) != (item.customer_id, item.amount, item.currency):
                raise ConflictError(
                    "payout_key_reused",
                    f"payout {key} was planned with {amount} {currency} to {customer_id}",
                )
            ids[key] = payout_id
    return ids


async def skip_payout(
    session: AsyncSession, *, payout_id: int, reason: str, now: datetime
) -> Payout:
    """Mark a planned payout ``skipped`` (it will never be paid).

    Raises:
        NotFoundError: no payout ``payout_id``.
        ConflictError: it is not planned (already submitted or final).
    """
    payout = await session.get(Payout, payout_id, with_for_update=True)
    if payout is None:
        raise NotFoundError("payout_not_found", f"no payout {payout_id}")
    if payout.status != PayoutStatus.PLANNED:
        raise ConflictError(
            "payout_not_planned", f"payout {payout_id} is {payout.status}: only a planned one"
        )
    payout.status = PayoutStatus.SKIPPED.value
    payout.next_attempt_at = None
    payout.last_error = reason[:ERROR_LENGTH]
    payout.updated_at = now
    await session.flush()
    return payout


async def find_refund(provider: PaymentProvider, *, order_ref: str, key: str) -> Refund | None:
    """The refund made at ``provider`` for the payout ``key``, if any: looked up by its order,
    matched by idempotency key or by the ``payout_key`` metadata (which outlives a provider's
    idempotency-key retention)."""
    after: str | None = None
    while True:
        page = await provider.list_refunds(order_ref=order_ref, starting_after=after, limit=100)
        for refund in page:
            if refund.idempotency_key == key or refund.metadata.get("payout_key") == key:
                return refund
        if len(page) < 100:
            return None
        after = page[-1].id


Action = Literal["send", "recover", "verify", "poll"]


@dataclass(frozen=True, slots=True)
class _Claim:
    payout_id: int
    key: str
    order_id: str
    customer_id: str
    cause: str
    amount: int
    currency: str
    attempts: int
    lease: datetime
    refund_id: str | None
    action: Action


@dataclass(frozen=True, slots=True)
class PayOutcome:
    """Where one payout stands after :func:`pay`.

    ``retry_at`` is when to call again (a scheduled retry, a pending refund's next look-up, or
    another worker's lease); None once the payout is final.
    """

    payout_id: int
    status: PayoutStatus
    provider_refund_id: str | None
    retry_at: datetime | None
    last_error: str | None

    @property
    def final(self) -> bool:
        """Succeeded, failed or skipped: nothing more will happen to it."""
        return self.status in _FINAL


@dataclass(slots=True)
class PayReport:
    """What a payment round (or several) did."""

    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    pending: int = 0
    retried: int = 0
    lost: int = 0
    """Outcomes not recorded because another worker took the payout over (a lapsed lease)."""
    paid_amounts: dict[str, int] = field(default_factory=dict)
    """Money out per currency, in minor units."""

    @property
    def finished(self) -> int:
        """Payouts that became final."""
        return self.succeeded + self.failed

    def add(self, other: PayReport) -> None:
        """Add another report's counts to this one."""
        for name in ("claimed", "succeeded", "failed", "pending", "retried", "lost"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for currency, amount in other.paid_amounts.items():
            self.paid_amounts[currency] = self.paid_amounts.get(currency, 0) + amount


@dataclass(frozen=True, slots=True)
class _Result:
    refund: Refund | None = None
    error: ProviderError | None = None


class Payer:
    """Pays payouts through a provider, exactly once each.

    Args:
        db: the database holding the payouts.
        provider: the payment provider.
        policy: retries, leases and polling.
        clock: now (tests pass a fake one).
        concurrency: provider calls in flight at once.
        batch_size: payouts claimed per round.
        sleep: how :meth:`pay_all` waits for a retry to be due (tests pass one that moves
            their clock).
        rng: the jitter's source.
    """

    def __init__(
        self,
        db: Database,
        provider: PaymentProvider,
        *,
        policy: PayPolicy | None = None,
        clock: Clock = utcnow,
        concurrency: int = 16,
        batch_size: int = 200,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._db = db
        self.provider = provider
        self.policy = policy or PayPolicy()
        self._clock = clock
        self._limit = asyncio.Semaphore(concurrency)
        self._batch_size = batch_size
        self._sleep = sleep
        self._rng = rng or random.Random()

    async def pay(self, payout_id: int) -> PayOutcome:
        """Take one payout as far as it can go now: what a job worker calls per payout.

        Raises:
            NotFoundError: no payout ``payout_id``.
        """
        await self.run_once([payout_id])
        async with self._db.read() as session:
            payout = await session.get(Payout, payout_id)
        if payout is None:
            raise NotFoundError("payout_not_found", f"no payout {payout_id}")
        status = PayoutStatus(payout.status)
        return PayOutcome(
            payout_id=payout.id,
            status=status,
            provider_refund_id=payout.provider_refund_id,
            retry_at=None if status in _FINAL else payout.next_attempt_at,
            last_error=payout.last_error,
        )

    async def pay_all(
        self,
        payout_ids: Sequence[int] | None = None,
        *,
        progress: Progress | None = None,
        wait: bool = True,
    ) -> PayReport:
        """Pay the payouts ``payout_ids`` (default: every open one) until all are final.

        Args:
            payout_ids: the payouts to pay; None: all planned or submitted ones.
            progress: called with (final so far, total) after every round.
            wait: wait for scheduled retries and pending refunds; False returns once nothing
                is due now (a job then runs again at the earliest ``retry_at``).

        Returns:
            What was done, summed over the rounds.
        """
        total, done = await self._count(payout_ids)
        if progress is not None:
            progress(done, total)
        report = PayReport()
        while True:
            for chunk in [None] if payout_ids is None else _chunks(payout_ids, self._batch_size):
                while True:
                    round_report = await self.run_once(chunk)
                    report.add(round_report)
                    done += round_report.finished
                    if progress is not None:
                        progress(done, total)
                    if round_report.claimed == 0:
                        break
            due = await self._next_due(payout_ids)
            if due is None or not wait:
                return report
            # Capped: the earliest due time may be another worker's lease, which ends early
            # when that worker records its outcome; looking again soon costs one query.
            await self._sleep(min(1.0, max(0.0, (due - self._clock()).total_seconds())))

    async def run_once(self, payout_ids: Sequence[int] | None = None) -> PayReport:
        """One round: claim due payouts (of ``payout_ids`` if given), call, record."""
        claims = await self._claim(self._clock(), payout_ids)
        report = PayReport(claimed=len(claims))
        if not claims:
            return report
        results = await asyncio.gather(*(self._call(claim) for claim in claims))
        now = self._clock()
        async with self._db.write() as session:
            for claim, result in zip(claims, results, strict=True):
                await self._record(session, claim, result, now, report)
        return report

    async def apply_refund_update(self, refund: Refund) -> bool:
        """Settle a submitted payout from a provider's notice that its refund is final.

        Safe against the poll racing it: whichever records the final state first wins, the
        other changes nothing. Returns whether this call changed the payout.
        """
        if refund.status == RefundStatus.PENDING:
            return False
        now = self._clock()
        async with self._db.write() as session:
            payout = await session.scalar(
                select(Payout).where(Payout.idempotency_key == refund.idempotency_key)
            )
            if payout is None or payout.status != PayoutStatus.SUBMITTED:
                return False
            succeeded = refund.status == RefundStatus.SUCCEEDED
            changed = await _settle(
                session,
                payout.id,
                fence=[Payout.status == PayoutStatus.SUBMITTED.value],
                values={
                    "status": (PayoutStatus.SUCCEEDED if succeeded else PayoutStatus.FAILED).value,
                    "provider_refund_id": refund.id,
                    "next_attempt_at": None,
                    "last_error": None if succeeded else "the refund failed at the provider",
                    "updated_at": now,
                },
            )
            if changed:
                session.add(
                    _entry(
                        payout.id,
                        LedgerEvent.CONFIRMED if succeeded else LedgerEvent.FAILED,
                        refund.amount if succeeded else 0,
                        payout.currency,
                        now,
                        refund_id=refund.id,
                        detail={"source": "callback"},
                    )
                )
            return changed

    async def _count(self, payout_ids: Sequence[int] | None) -> tuple[int, int]:
        """(payouts in all, final ones) among the targets."""
        async with self._db.read() as session:
            if payout_ids is None:
                open_count = await session.scalar(
                    select(func.count()).where(Payout.status.in_(_OPEN))
                )
                return int(open_count or 0), 0
            final = 0
            for chunk in _chunks(payout_ids, _CHUNK):
                final += int(
                    await session.scalar(
                        select(func.count()).where(
                            Payout.id.in_(chunk), Payout.status.not_in(_OPEN)
                        )
                    )
                    or 0
                )
            return len(payout_ids), final

    async def _next_due(self, payout_ids: Sequence[int] | None) -> datetime | None:
        async with self._db.read() as session:
            chunks: Iterable[Sequence[int] | None] = (
                [None] if payout_ids is None else _chunks(payout_ids, _CHUNK)
            )
            dues = []
            for chunk in chunks:
                query = select(func.min(Payout.next_attempt_at)).where(Payout.status.in_(_OPEN))
                if chunk is not None:
                    query = query.where(Payout.id.in_(chunk))
                due = await session.scalar(query)
                if due is not None:
                    dues.append(due)
        return min(dues) if dues else None

    async def _claim(self, now: datetime, payout_ids: Sequence[int] | None) -> list[_Claim]:
        query = (
            select(Payout)
            .where(Payout.status.in_(_OPEN), Payout.next_attempt_at <= now)
            .order_by(Payout.next_attempt_at, Payout.id)
            .limit(self._batch_size)
        )
        if payout_ids is not None:
            query = query.where(Payout.id.in_(payout_ids))
        lease = now + self.policy.claim_timeout
        claims = []
        async with self._db.write() as session:
            if not self._db.is_sqlite:  # SQLite has one writer at a time already
                query = query.with_for_update(skip_locked=True)
            for row in (await session.scalars(query)).all():
                action = self._action(row)
                if action in ("send", "recover"):
                    row.attempts += 1
                    session.add(
                        _entry(
                            row.id,
                            LedgerEvent.SUBMITTED,
                            row.amount,
                            row.currency,
                            now,
                            refund_id=None,
                            detail={"attempt": row.attempts, "action": action},
                        )
                    )
                row.status = PayoutStatus.SUBMITTED.value
                row.next_attempt_at = lease
                row.updated_at = now
                claims.append(
                    _Claim(
                        payout_id=row.id,
                        key=row.idempotency_key,
                        order_id=row.order_id,
                        customer_id=row.customer_id,
                        cause=row.cause,
                        amount=row.amount,
                        currency=row.currency,
                        attempts=row.attempts,
                        lease=lease,
                        refund_id=row.provider_refund_id,
                        action=action,
                    )
                )
        return claims

    def _action(self, row: Payout) -> Action:
        if row.provider_refund_id is not None:
            return "poll"  # the provider made the refund; it is pending
        if row.attempts >= self.policy.max_attempts:
            return "verify"  # out of attempts: pay nothing more, only find what exists
        if row.status == PayoutStatus.SUBMITTED:
            return "recover"  # a call may have happened: look before sending again
        return "send"

    async def _call(self, claim: _Claim) -> _Result:
        async with self._limit:
            try:
                if claim.action == "poll":
                    assert claim.refund_id is not None
                    return _Result(await self.provider.get_refund(claim.refund_id))
                if claim.action != "send":
                    found = await find_refund(
                        self.provider, order_ref=claim.order_id, key=claim.key
                    )
                    if found is not None or claim.action == "verify":
                        return _Result(found)
                return _Result(
                    await self.provider.create_refund(
                        idempotency_key=claim.key,
                        order_ref=claim.order_id,
                        amount=claim.amount,
                        currency=claim.currency,
                        reason=claim.cause,
                        metadata={
                            "payout_key": claim.key,
                            "payout_id": str(claim.payout_id),
                            "customer_id": claim.customer_id,
                        },
                    )
                )
            except ProviderError as exc:
                return _Result(error=exc)
            except Exception as exc:  # a bug or an unexpected failure: the outcome is unknown
                return _Result(error=RetryableProviderError(f"{exc.__class__.__name__}: {exc}"))

    async def _record(
        self,
        session: AsyncSession,
        claim: _Claim,
        result: _Result,
        now: datetime,
        report: PayReport,
    ) -> None:
        values, entry, outcome = self._outcome(claim, result, now)
        fence = [
            Payout.status == PayoutStatus.SUBMITTED.value,
            Payout.attempts == claim.attempts,
            Payout.next_attempt_at == claim.lease,
        ]
        if not await _settle(session, claim.payout_id, fence=fence, values=values):
            report.lost += 1
            return
        if entry is not None:
            session.add(entry)
        setattr(report, outcome, getattr(report, outcome) + 1)
        if outcome == "succeeded" and entry is not None:
            report.paid_amounts[claim.currency] = (
                report.paid_amounts.get(claim.currency, 0) + entry.amount
            )

    def _outcome(
        self, claim: _Claim, result: _Result, now: datetime
    ) -> tuple[dict[str, Any], LedgerEntry | None, str]:
        """(the payout's new values, its ledger row if any, the report field) for one result."""
        refund, error = result.refund, result.error
        if refund is not None:
            return self._refund_outcome(claim, refund, now)
        if error is None:  # verify found nothing: no money moved, and none will
            return self._failed(
                claim, now, f"no refund at the provider after {claim.attempts} attempts", None
            )
        if claim.action == "poll" and error.retryable:
            return (
                {"next_attempt_at": now + self.policy.poll_interval, "updated_at": now},
                None,
                ("pending"),
            )
        if not error.retryable or claim.action == "verify":
            return self._failed(claim, now, str(error), error)
        wait = self.policy.backoff(claim.attempts, self._rng)
        values = {
            "next_attempt_at": now + wait,
            "last_error": str(error)[:ERROR_LENGTH],
            "updated_at": now,
        }
        detail = {
            "attempt": claim.attempts,
            "error": str(error)[:ERROR_LENGTH],
            "error_type": error.__class__.__name__,
            "retry_in_seconds": round(wait.total_seconds(), 3),
        }
        entry = _entry(
            claim.payout_id,
            LedgerEvent.RETRY,
            0,
            claim.currency,
            now,
            refund_id=None,
            detail=detail,
        )
        return values, entry, "retried"

    def _refund_outcome(
        self, claim: _Claim, refund: Refund, now: datetime
    ) -> tuple[dict[str, Any], LedgerEntry | None, str]:
        if refund.status == RefundStatus.PENDING:
            values = {
                "provider_refund_id": refund.id,
                "next_attempt_at": now + self.policy.poll_interval,
                "last_error": None,
                "updated_at": now,
            }
            return values, None, "pending"
        if refund.status == RefundStatus.FAILED:
            return self._failed(claim, now, "the refund failed at the provider", None, refund.id)
        event = LedgerEvent.CONFIRMED if claim.action == "poll" else LedgerEvent.SUCCEEDED
        values = {
            "status": PayoutStatus.SUCCEEDED.value,
            "provider_refund_id": refund.id,
            "next_attempt_at": None,
            "last_error": None,
            "updated_at": now,
        }
        detail = {"attempt": claim.attempts, "action": claim.action}
        entry = _entry(
            claim.payout_id,
            event,
            refund.amount,
            refund.currency,
            now,
            refund_id=refund.id,
            detail=detail,
        )
        return values, entry, "succeeded"

    def _failed(
        self,
        claim: _Claim,
        now: datetime,
        reason: str,
        error: ProviderError | None,
        refund_id: str | None = None,
    ) -> tuple[dict[str, Any], LedgerEntry, str]:
        values = {
            "status": PayoutStatus.FAILED.value,
            "provider_refund_id": refund_id,
            "next_attempt_at": None,
            "last_error": reason[:ERROR_LENGTH],
            "updated_at": now,
        }
        detail: dict[str, Any] = {"attempt": claim.attempts, "reason": reason[:ERROR_LENGTH]}
        if error is not None:
            detail["error_type"] = error.__class__.__name__
            detail["code"] = error.code
        entry = _entry(
            claim.payout_id,
            LedgerEvent.FAILED,
            0,
            claim.currency,
            now,
            refund_id=refund_id,
            detail=detail,
        )
        return values, entry, "failed"


def _entry(
    payout_id: int,
    event: LedgerEvent,
    amount: int,
    currency: str,
    at: datetime,
    *,
    refund_id: str | None,
    detail: dict[str, Any],
) -> LedgerEntry:
    return LedgerEntry(
        payout_id=payout_id,
        event=event.value,
        amount=amount,
        currency=currency,
        at=at,
        provider_refund_id=refund_id,
        detail=detail,
    )


async def _settle(
    session: AsyncSession, payout_id: int, *, fence: list[Any], values: dict[str, Any]
) -> bool:
    """Update the payout only if it still matches ``fence``; whether it did."""
    result = await session.execute(
        update(Payout)
        .where(Payout.id == payout_id, *fence)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


async def pay(
    db: Database,
    payout_id: int,
    provider: PaymentProvider,
    *,
    clock: Clock = utcnow,
    policy: PayPolicy | None = None,
) -> PayOutcome:
    """Take one payout as far as it goes now (see :meth:`Payer.pay`); for job workers."""
    return await Payer(db, provider, policy=policy, clock=clock).pay(payout_id)


async def pay_all(
    db: Database,
    provider: PaymentProvider,
    payout_ids: Sequence[int] | None = None,
    *,
    concurrency: int = 16,
    progress: Progress | None = None,
    clock: Clock = utcnow,
    policy: PayPolicy | None = None,
    wait: bool = True,
) -> PayReport:
    """Pay many payouts until each is final (see :meth:`Payer.pay_all`)."""
    payer = Payer(db, provider, policy=policy, clock=clock, concurrency=concurrency)
    return await payer.pay_all(payout_ids, progress=progress, wait=wait)
