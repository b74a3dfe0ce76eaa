"""Paying payouts against a real simulated provider process, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import select, text

from promoguard.errors import ConflictError
from promoguard.payments.client import HttpPaymentProvider
from promoguard.payments.models import LedgerEntry, Payout, PayoutStatus, payout_key
from promoguard.payments.payer import NewPayout, Payer, PayPolicy, plan_payouts, skip_payout
from promoguard.payments.provider import IdempotencyKeyReusedError, RefundStatus
from promoguard.payments.reconcile import reconcile
from promoguard.store.db import Database

from .conftest import FakeClock, Simulator, wait_for

T = TypeVar("T")
POLICY = PayPolicy(
    max_attempts=3,
    backoff_base_seconds=10,
    backoff_max_seconds=60,
    jitter=0.2,
    claim_timeout=timedelta(seconds=30),
    poll_interval=timedelta(seconds=5),
)


def on(
    url: str,
    sim: Simulator,
    work: Callable[[Database, HttpPaymentProvider], Awaitable[T]],
    *,
    timeout: float = 5.0,
) -> T:
    """Run ``work`` with a database and a provider client, and close both."""

    async def run() -> T:
        db = Database(url)
        provider = HttpPaymentProvider(sim.url, timeout=timeout)
        try:
            return await work(db, provider)
        finally:
            await provider.aclose()
            await db.dispose()

    return asyncio.run(run())


async def plan_one(db: Database, clock: FakeClock, amount: int = 1250, cause: str = "c1") -> int:
    async with db.write() as session:
        ids = await plan_payouts(
            session,
            items=[NewPayout("o-1", "cust-1", cause, amount, "CNY")],
            now=clock(),
        )
    return ids[payout_key("o-1", cause)]


async def ledger(db: Database, payout_id: int) -> list[tuple[str, int]]:
    async with db.read() as session:
        rows = await session.scalars(
            select(LedgerEntry).where(LedgerEntry.payout_id == payout_id).order_by(LedgerEntry.id)
        )
        return [(row.event, row.amount) for row in rows]


async def payout(db: Database, payout_id: int) -> Payout:
    async with db.read() as session:
        found = await session.get(Payout, payout_id)
    assert found is not None
    return found


def test_the_same_idempotency_key_twice_returns_the_same_refund(simulator: Simulator):
    async def work() -> None:
        async with HttpPaymentProvider(simulator.url) as provider:
            args: dict[str, Any] = {
                "idempotency_key": "o-9:overcharge",
                "order_ref": "o-9",
                "amount": 300,
                "currency": "CNY",
                "reason": "overcharge",
                "metadata": {"payout_key": "o-9:overcharge"},
            }
            first = await provider.create_refund(**args)
            again = await provider.create_refund(**args)
            assert again.id == first.id
            assert again.status == RefundStatus.SUCCEEDED
            with pytest.raises(IdempotencyKeyReusedError):
                await provider.create_refund(**{**args, "amount": 301})
            assert (await provider.get_refund(first.id)).amount == 300

    asyncio.run(work())
    records = simulator.records()
    assert [(r["idempotency_key"], r["amount"]) for r in records] == [("o-9:overcharge", 300)]
    assert simulator.requests_for("o-9:overcharge") == ["created", "replayed", "key_reused"]


def test_planning_twice_keeps_one_payout_and_refuses_another_amount(
    database_url: str, simulator: Simulator, clock: FakeClock
):
    async def work(db: Database, _: HttpPaymentProvider) -> None:
        first = await plan_one(db, clock)
        assert await plan_one(db, clock) == first
        with pytest.raises(ConflictError):
            await plan_one(db, clock, amount=999)
        async with db.read() as session:
            assert len((await session.scalars(select(Payout))).all()) == 1

    on(database_url, simulator, work)


def test_a_payout_is_retried_with_backoff_until_the_provider_succeeds(
    database_url: str, simulator: Simulator, clock: FakeClock
):
    simulator.faults(failure_rate=1.0)

    async def work(db: Database, provider: HttpPaymentProvider) -> None:
        payer = Payer(db, provider, policy=POLICY, clock=clock)
        payout_id = await plan_one(db, clock)
        outcome = await payer.pay(payout_id)
        assert outcome.status == PayoutStatus.SUBMITTED
        assert outcome.retry_at is not None
        wait = (outcome.retry_at - clock()).total_seconds()
        assert 8 <= wait <= 12  # base 10 s ± 20 %
        assert (await payer.pay(payout_id)).retry_at == outcome.retry_at  # not due: untouched
        simulator.faults()
        clock.advance(seconds=wait)
        outcome = await payer.pay(payout_id)
        assert outcome.status == PayoutStatus.SUCCEEDED
        assert [e for e, _ in await ledger(db, payout_id)] == [
            "submitted",
            "retry",
            "submitted",
            "succeeded",
        ]
        assert (await payout(db, payout_id)).attempts == 2
        assert (await reconcile(db, provider)).ok

    on(database_url, simulator, work)
    assert [r["amount"] for r in simulator.records()] == [1250]


def test_a_permanently_refused_payout_fails_without_retrying(
    database_url: str, simulator: Simulator, clock: FakeClock
):
    simulator.faults(max_amount=1000)

    async def work(db: Database, provider: HttpPaymentProvider) -> None:
        payout_id = await plan_one(db, clock, amount=1250)
        outcome = await Payer(db, provider, policy=POLICY, clock=clock).pay(payout_id)
        assert outcome.status == PayoutStatus.FAILED
        assert outcome.last_error is not None
        assert "amount_too_large" in outcome.last_error
        assert await ledger(db, payout_id) == [("submitted", 1250), ("failed", 0)]
        report = await reconcile(db, provider)
        assert report.ok
        assert (report.failed, report.paid) == (1, 0)

    on(database_url, simulator, work)
    assert simulator.records() == []


def test_a_payout_out_of_attempts_fails_only_after_finding_no_refund(
    database_url: str, simulator: Simulator, clock: FakeClock
):
    simulator.faults(failure_rate=1.0)

    async def work(db: Database, provider: HttpPaymentProvider) -> None:
        payer = Payer(db, provider, policy=POLICY, clock=clock)
        payout_id = await plan_one(db, clock)
        for _ in range(POLICY.max_attempts):
            outcome = await payer.pay(payout_id)
            assert outcome.status == PayoutStatus.SUBMITTED
            assert outcome.retry_at is not None
            clock.now = outcome.retry_at
        simulator.faults()  # the look-up after the last attempt gets an answer: nothing there
        outcome = await payer.pay(payout_id)
        assert outcome.status == PayoutStatus.FAILED
        events = [e for e, _ in await ledger(db, payout_id)]
        assert events.count("submitted") == POLICY.max_attempts
        assert events[-1] == "failed"

    on(database_url, simulator, work)
    assert simulator.records() == []


def test_a_timed_out_refund_that_went_through_is_not_paid_twice(
    database_url: str, simulator: Simulator, clock: FakeClock
):
    simulator.faults(timeout_rate=1.0, hang_ms=1500)
    key = payout_key("o-1", "c1")

    async def first(db: Database, provider: HttpPaymentProvider) -> int:
        payout_id = await plan_one(db, clock)
        outcome = await Payer(db, provider, policy=POLICY, clock=clock).pay(payout_id)
        assert outcome.status == PayoutStatus.SUBMITTED  # did it go through? we cannot know
        assert outcome.last_error is not None
        assert "no answer" in outcome.last_error
        return payout_id

    payout_id = on(database_url, simulator, first, timeout=0.3)
    # The provider applies the held request after all (what a slow provider does).
    wait_for(lambda: len(simulator.records()) == 1, "the held refund to land")
    simulator.faults()

    async def again(db: Database, provider: HttpPaymentProvider) -> None:
        clock.advance(seconds=60)
        outcome = await Payer(db, provider, policy=POLICY, clock=clock).pay(payout_id)
        assert outcome.status == PayoutStatus.SUCCEEDED
        assert [e for e, _ in await ledger(db, payout_id)][-1] == "succeeded"
        assert (await reconcile(db, provider)).ok

    on(database_url, simulator, again)
    assert [(r["idempotency_key"], r["amount"]) for r in simulator.records()] == [(key, 1250)]
    assert simulator.requests_for(key) == ["created"]  # found by look-up, not sent again


def test_a_late_confirmation_is_recorded_once_by_poll_or_callback(
    database_url: str, simulator: Simulator, clock: FakeClock
):
    simulator.faults(pending_rate=1.0, confirm_after_ms=None)

    async def work(db: Database, provider: HttpPaymentProvider) -> None:
        payer = Payer(db, provider, policy=POLICY, clock=clock)
        first, second = await plan_one(db, clock, cause="a"), await plan_one(db, clock, cause="b")
        assert (await payer.run_once([first, second])).pending == 2
        pending = await payout(db, first)
        assert pending.status == PayoutStatus.SUBMITTED
        assert pending.provider_refund_id is not None
        in_flight = await reconcile(db, provider)
        assert (in_flight.in_flight, in_flight.ok) == (2, True)

        clock.advance(seconds=5)  # still pending at the next look-up: looked up again later
        assert (await payer.run_once([first])).pending == 1

        for payout_id in (first, second):  # the provider settles both
            refund_id = (await payout(db, payout_id)).provider_refund_id
            confirmed = httpx.post(f"{simulator.url}/v1/refunds/{refund_id}/confirm")
            assert confirmed.json()["status"] == "succeeded"

        # The first is learnt by polling; a late callback for it then changes nothing.
        clock.advance(seconds=5)
        assert (await payer.run_once([first])).succeeded == 1
        refund = await provider.get_refund(str((await payout(db, first)).provider_refund_id))
        assert await payer.apply_refund_update(refund) is False

        # The second is learnt from the callback; the poll that follows changes nothing.
        refund = await provider.get_refund(str((await payout(db, second)).provider_refund_id))
        assert await payer.apply_refund_update(refund) is True
        clock.advance(seconds=5)
        assert (await payer.run_once([second])).claimed == 0

        for payout_id in (first, second):
            assert (await payout(db, payout_id)).status == PayoutStatus.SUCCEEDED
            assert [e for e, _ in await ledger(db, payout_id)] == ["submitted", "confirmed"]
        report = await reconcile(db, provider)
        assert report.ok
        assert (report.paid, report.ledger_totals) == (2, {"CNY": 2500})

    on(database_url, simulator, work)


async def change_an_entry(db: Database, *, delete: bool) -> None:
    async with db.write() as session:
        entry = await session.scalar(select(LedgerEntry).limit(1))
        assert entry is not None
        if delete:
            await session.delete(entry)
        else:
            entry.amount = 1


def test_the_ledger_refuses_updates_and_deletes(
    database_url: str, simulator: Simulator, clock: FakeClock
):
    async def work(db: Database, provider: HttpPaymentProvider) -> None:
        payout_id = await plan_one(db, clock)
        await Payer(db, provider, policy=POLICY, clock=clock).pay(payout_id)
        with pytest.raises(RuntimeError, match="append-only"):
            await change_an_entry(db, delete=False)
        with pytest.raises(RuntimeError, match="append-only"):
            await change_an_entry(db, delete=True)
        for statement in ("UPDATE payout_ledger SET amount = 1", "DELETE FROM payout_ledger"):
            with pytest.raises(Exception, match="append-only"):
                async with db.write() as session:
                    await session.execute(text(statement))
        assert await ledger(db, payout_id) == [("submitted", 1250), ("succeeded", 1250)]

    on(database_url, simulator, work)


def test_reconciliation_catches_a_refund_made_outside_the_ledger(
    database_url: str, simulator: Simulator, clock: FakeClock
):
    async def work(db: Database, provider: HttpPaymentProvider) -> None:
        paid = await plan_one(db, clock, cause="paid")
        skipped = await plan_one(db, clock, cause="skipped")
        await Payer(db, provider, policy=POLICY, clock=clock).pay(paid)
        async with db.write() as session:
            await skip_payout(session, payout_id=skipped, reason="honoured", now=clock())
        assert (await reconcile(db, provider)).ok
        # Someone refunds the skipped payout by hand at the provider.
        await provider.create_refund(
            idempotency_key="manual-1",
            order_ref="o-1",
            amount=700,
            currency="CNY",
            reason="by hand",
            metadata={"payout_key": payout_key("o-1", "skipped")},
        )
        report = await reconcile(db, provider)
        assert not report.ok
        assert report.provider_totals == {"CNY": 1950}
        assert report.ledger_totals == {"CNY": 1250}
        assert [(d.payout_key, d.status) for d in report.discrepancies] == [
            (payout_key("o-1", "skipped"), "skipped")
        ]

    on(database_url, simulator, work)
