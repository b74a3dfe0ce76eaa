"""Reconciliation: our payouts and ledger against the provider's own records.

The report holds when:

- every planned payout is accounted for: planned = paid + failed + skipped + in flight, where
  *paid* counts payouts with a money-out ledger row and the others count statuses;
- no payout has two money-out ledger rows, and no payout key has two live refunds at the
  provider (matched by idempotency key or by the ``payout_key`` metadata);
- for every settled payout the ledger and the provider agree: a succeeded payout has exactly
  its amount refunded; a failed, skipped or planned one has nothing refunded;
- the ledger's money-out totals equal the provider's succeeded totals for our keys, per currency
  (in-flight payouts are reported apart: their refunds may be landing right now).
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select

from promoguard.payments.models import PAID_EVENTS, LedgerEntry, Payout, PayoutStatus
from promoguard.payments.provider import (
    PaymentProvider,
    Refund,
    RefundStatus,
    RetryableProviderError,
)
from promoguard.store.db import Database

__all__ = ["Discrepancy", "ReconciliationReport", "provider_refunds", "reconcile"]

PAGE = 500


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """One payout on which our records and the provider's disagree."""

    payout_key: str
    status: str
    ledger_amount: int
    provider_amount: int
    problem: str


@dataclass(slots=True)
class ReconciliationReport:
    """Counts, totals per currency, and every disagreement found."""

    planned: int = 0
    paid: int = 0
    failed: int = 0
    skipped: int = 0
    in_flight: int = 0
    ledger_totals: dict[str, int] = field(default_factory=dict)
    provider_totals: dict[str, int] = field(default_factory=dict)
    in_flight_provider_totals: dict[str, int] = field(default_factory=dict)
    keys_paid_twice: list[str] = field(default_factory=list)
    discrepancies: list[Discrepancy] = field(default_factory=list)
    foreign_refunds: int = 0
    """Refunds at the provider for keys we have no payout for (another system's, or a refund
    made by hand); listed, and a mismatch only when reconciling strictly."""
    strict: bool = False

    @property
    def accounted(self) -> bool:
        """planned = paid + failed + skipped + in flight."""
        return self.planned == self.paid + self.failed + self.skipped + self.in_flight

    @property
    def ok(self) -> bool:
        """Whether everything reconciles."""
        return (
            self.accounted
            and not self.keys_paid_twice
            and not self.discrepancies
            and self.ledger_totals == self.provider_totals
            and not (self.strict and self.foreign_refunds)
        )


PAGE_TRIES = 5
"""Tries per page: a provider answering 5xx or timing out now and then still reconciles."""


async def _page(provider: PaymentProvider, after: str | None) -> list[Refund]:
    for attempt in range(1, PAGE_TRIES + 1):
        try:
            return list(await provider.list_refunds(starting_after=after, limit=PAGE))
        except RetryableProviderError:
            if attempt == PAGE_TRIES:
                raise
            await asyncio.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")


async def provider_refunds(provider: PaymentProvider) -> list[Refund]:
    """Every refund at the provider, oldest first (paged; a page that fails for a passing
    reason is asked again, a few times)."""
    refunds: list[Refund] = []
    after: str | None = None
    while True:
        page = await _page(provider, after)
        refunds.extend(page)
        if len(page) < PAGE:
            return refunds
        after = page[-1].id


def _live(refund: Refund) -> bool:
    return refund.status != RefundStatus.FAILED


async def reconcile(
    db: Database, provider: PaymentProvider, *, strict: bool = False
) -> ReconciliationReport:
    """Compare the payouts and ledger in ``db`` with the refunds at ``provider``."""
    report = ReconciliationReport(strict=strict)
    async with db.read() as session:
        payouts = list((await session.scalars(select(Payout).order_by(Payout.id))).all())
        paid_rows = (
            await session.execute(
                select(LedgerEntry.payout_id, LedgerEntry.amount, LedgerEntry.currency).where(
                    LedgerEntry.event.in_(PAID_EVENTS)
                )
            )
        ).all()
    ledger_paid: dict[int, int] = defaultdict(int)
    paid_count: Counter[int] = Counter()
    for payout_id, amount, currency in paid_rows:
        ledger_paid[payout_id] += amount
        paid_count[payout_id] += 1
        report.ledger_totals[currency] = report.ledger_totals.get(currency, 0) + amount

    by_key: dict[str, list[Refund]] = defaultdict(list)
    ours = {payout.idempotency_key for payout in payouts}
    for refund in await provider_refunds(provider):
        key = refund.metadata.get("payout_key") or refund.idempotency_key
        if key not in ours:
            report.foreign_refunds += 1
            continue
        by_key[key].append(refund)

    for payout in payouts:
        _check(report, payout, ledger_paid[payout.id], paid_count[payout.id], by_key)
    return report


def _check(
    report: ReconciliationReport,
    payout: Payout,
    ledger_amount: int,
    ledger_rows: int,
    by_key: dict[str, list[Refund]],
) -> None:
    key, status = payout.idempotency_key, payout.status
    live = [refund for refund in by_key.get(key, []) if _live(refund)]
    succeeded = [refund for refund in live if refund.status == RefundStatus.SUCCEEDED]
    provider_amount = sum(refund.amount for refund in succeeded)
    _tally(report, status, ledger_rows)
    if len(live) > 1 or ledger_rows > 1:
        report.keys_paid_twice.append(key)
    if status in (PayoutStatus.PLANNED, PayoutStatus.SUBMITTED) and not ledger_rows:
        for refund in succeeded:  # may be landing now: not a discrepancy, not in the totals
            report.in_flight_provider_totals[refund.currency] = (
                report.in_flight_provider_totals.get(refund.currency, 0) + refund.amount
            )
        return
    for refund in succeeded:
        report.provider_totals[refund.currency] = (
            report.provider_totals.get(refund.currency, 0) + refund.amount
        )
    problem = _problem(payout, ledger_amount, ledger_rows, provider_amount, bool(live))
    if problem is not None:
        report.discrepancies.append(
            Discrepancy(
                payout_key=key,
                status=status,
                ledger_amount=ledger_amount,
                provider_amount=provider_amount,
                problem=problem,
            )
        )


def _tally(report: ReconciliationReport, status: str, ledger_rows: int) -> None:
    report.planned += 1
    if ledger_rows:
        report.paid += 1
    elif status == PayoutStatus.FAILED:
        report.failed += 1
    elif status == PayoutStatus.SKIPPED:
        report.skipped += 1
    elif status in (PayoutStatus.PLANNED, PayoutStatus.SUBMITTED):
        report.in_flight += 1


def _problem(
    payout: Payout, ledger_amount: int, ledger_rows: int, provider_amount: int, live: bool
) -> str | None:
    status = payout.status
    if status == PayoutStatus.SUCCEEDED:
        if ledger_amount != payout.amount:
            return "the ledger's money out differs from the payout"
        if provider_amount != payout.amount:
            return "the provider refunded another amount"
        return None
    if ledger_rows:
        return f"money out in the ledger, but the payout is {status}"
    if live:
        return f"refunded at the provider, but the payout is {status}"
    return None
