"""Two payment worker processes on the same payouts, on SQLite and PostgreSQL: each payout is
claimed by one of them at a time, and paid once."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections import Counter

from sqlalchemy import func, select

from promoguard.payments.models import PAID_EVENTS, LedgerEntry, Payout
from promoguard.payments.payer import NewPayout, plan_payouts
from promoguard.store.db import Database, utcnow

from .conftest import PROMOGUARD, Simulator

PAYOUTS = 300


def test_two_workers_at_once_pay_each_payout_once(database_url: str, simulator: Simulator):
    simulator.faults(latency_ms=2, failure_rate=0.05, seed=3)

    async def plan() -> None:
        db = Database(database_url)
        try:
            async with db.write() as session:
                items = [NewPayout(f"w-{i}", "c", "claim", 100 + i, "CNY") for i in range(PAYOUTS)]
                await plan_payouts(session, items=items, now=utcnow())
        finally:
            await db.dispose()

    asyncio.run(plan())
    env = {
        **os.environ,
        "PROMOGUARD_DATABASE_URL": database_url,
        "PROMOGUARD_PAYMENT_PROVIDER_URL": simulator.url,
        "PROMOGUARD_PAYMENT_BACKOFF_BASE_SECONDS": "0.05",
        "PROMOGUARD_PAYMENT_BACKOFF_MAX_SECONDS": "0.2",
        "PROMOGUARD_PAYMENT_MAX_ATTEMPTS": "20",
        "PROMOGUARD_PAYMENT_CONCURRENCY": "8",
    }
    workers = [
        subprocess.Popen(
            [PROMOGUARD, "payments", "pay"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for worker in workers:
        assert worker.wait(timeout=120) == 0

    async def ours() -> tuple[Counter[int], int]:
        db = Database(database_url)
        try:
            async with db.read() as session:
                rows = await session.scalars(
                    select(LedgerEntry.payout_id).where(LedgerEntry.event.in_(PAID_EVENTS))
                )
                open_count = await session.scalar(
                    select(func.count()).where(Payout.status != "succeeded")
                )
                return Counter(rows.all()), int(open_count or 0)
        finally:
            await db.dispose()

    paid, not_succeeded = asyncio.run(ours())
    assert not_succeeded == 0
    assert len(paid) == PAYOUTS
    assert max(paid.values()) == 1
    keys = Counter(row["idempotency_key"] for row in simulator.records())
    assert len(keys) == PAYOUTS
    assert max(keys.values()) == 1
    assert simulator.stats()["requests"].get("replayed", 0) == 0  # never both on one payout
