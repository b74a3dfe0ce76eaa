"""Executing remediation plans as background jobs on a real queue (huey).

The queue is huey's SQLite storage in ``PROMOGUARD_QUEUE_PATH`` by default and Redis when
``PROMOGUARD_REDIS_URL`` is set, so the API (or the CLI) enqueues and ``promoguard worker``
processes, on one machine or several. One task, ``execute_plan(plan_id)``, runs
:func:`run_plan`:

1. :func:`promoguard.plans.service.prepare` (payouts planned, coupons given, idle items closed),
2. cancellations through checkout (which gives back what each order held); an order shipped in
   the meantime is honoured instead and its refund skipped,
3. the payer pays the plan's payouts (retries with backoff, exactly once per key),
4. :func:`promoguard.plans.service.settle` (items take their payouts' states; the plan is done
   once nothing is left planned), and customers' approved claims on the same payouts are paid.

Every step is idempotent. A worker killed at any point loses its task (huey has handed it out),
so a starting worker re-enqueues every plan still ``executing``: the plan resumes where the
store says it is, and the payment provider's idempotency keys make a payout sent twice count once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from huey import Huey, RedisHuey, SqliteHuey
from sqlalchemy import select

from promoguard.campaigns.live import LiveRules
from promoguard.errors import PromoguardError
from promoguard.orders.schemas import OrderEventIn
from promoguard.orders.service import Checkout
from promoguard.payments.client import HttpPaymentProvider
from promoguard.payments.payer import Payer, PayPolicy, skip_payout
from promoguard.payments.provider import PaymentProvider
from promoguard.plans import service
from promoguard.plans.models import ItemStatus, PlanStatus, RemediationPlan
from promoguard.promotions.engine import PricingPolicy
from promoguard.settings import Settings
from promoguard.store.counters import RedisCounters, SqlCounters
from promoguard.store.db import Database

__all__ = ["PlanQueue", "run_plan"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def _now() -> datetime:
    return datetime.now(UTC)


async def _cancel(settings: Settings, db: Database, plan: RemediationPlan) -> None:
    async with db.read() as session:
        items = await service.to_cancel(session, plan)
    if not items:
        return
    redis = None
    if settings.redis_url:
        from redis.asyncio import Redis  # noqa: PLC0415

        redis = Redis.from_url(settings.redis_url)
    checkout = Checkout(
        db,
        LiveRules(db, PricingPolicy(max_discount_ratio=Decimal(settings.max_discount_ratio)), 60),
        secret=settings.secret_key,
        quote_ttl=timedelta(seconds=settings.quote_ttl_seconds),
        counters=RedisCounters(redis, settings.redis_prefix) if redis else SqlCounters(),
    )
    try:
        for item in items:
            event = OrderEventIn(type="cancelled", reason=f"remediation plan {plan.id}")
            try:
                await checkout.apply_event(item.order_id or "", event, _now())
                outcome, error = ItemStatus.DONE, None
            except PromoguardError as exc:  # shipped (or cancelled) since the plan was made
                outcome, error = ItemStatus.SKIPPED, f"{exc.code}: not cancelled, honoured"
            async with db.write() as session:
                row = await session.get(type(item), item.id, with_for_update=True)
                if row is None or row.status != ItemStatus.PLANNED:
                    continue
                if outcome == ItemStatus.SKIPPED and row.payout_id is not None:
                    await skip_payout(
                        session, payout_id=row.payout_id, reason=error or "", now=_now()
                    )
                if row.payout_id is None or outcome == ItemStatus.SKIPPED:
                    row.status, row.error, row.updated_at = outcome, error, _now()
    finally:
        if redis is not None:
            await redis.aclose()


async def _settle_claims(session: Any, payout_ids: list[int]) -> None:
    """Customers' approved claims this plan paid (same payout key) are paid now too."""
    from promoguard.claims import service as claims  # noqa: PLC0415 (claims import plans)
    from promoguard.claims.models import Claim, ClaimStatus  # noqa: PLC0415

    for start in range(0, len(payout_ids), 1000):
        rows = await session.scalars(
            select(Claim).where(
                Claim.status == ClaimStatus.APPROVED.value,
                Claim.payout_id.in_(payout_ids[start : start + 1000]),
            )
        )
        for claim in rows.all():
            await claims.settle(session, claim, now=_now())


async def run_plan(
    settings: Settings,
    plan_id: int,
    *,
    provider: PaymentProvider | None = None,
    progress: Progress | None = None,
    payer_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Execute (or resume) an approved plan to the end; returns its progress."""
    db = Database(settings.database_url)
    own = provider is None
    try:
        async with db.write() as session:
            plan = await service.get_plan(session, plan_id, lock=True)
            payout_ids = await service.prepare(session, plan, now=_now())
        await _cancel(settings, db, plan)
        if payout_ids:
            if provider is None:
                if not settings.payment_provider_url:
                    raise RuntimeError(
                        "PROMOGUARD_PAYMENT_PROVIDER_URL is not set: refunds cannot be paid"
                    )
                provider = HttpPaymentProvider(
                    settings.payment_provider_url, timeout=settings.payment_timeout_seconds
                )
            payer = Payer(
                db, provider, policy=PayPolicy.from_settings(settings), **(payer_options or {})
            )
            await payer.pay_all(payout_ids, progress=progress)
        async with db.write() as session:
            plan = await service.get_plan(session, plan_id, lock=True)
            await service.settle(session, plan, now=_now())
            await _settle_claims(session, payout_ids)
            return await service.progress(session, plan)
    finally:
        if own and provider is not None:
            await provider.aclose()  # type: ignore[attr-defined]
        await db.dispose()


class PlanQueue:
    """The job queue of one configuration: enqueue plans, run a consumer, resume after a crash."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.huey: Huey = (
            RedisHuey(f"{settings.redis_prefix}queue", url=settings.redis_url)
            if settings.redis_url
            else SqliteHuey("promoguard", filename=settings.queue_path)
        )
        self.execute_plan = self.huey.task(name="promoguard.execute_plan")(self._execute)

    def _execute(self, plan_id: int) -> dict[str, Any]:
        log.info("executing remediation plan %s", plan_id)
        return asyncio.run(run_plan(self.settings, plan_id))

    def enqueue(self, plan_id: int) -> None:
        """Queue ``plan_id`` for execution."""
        self.execute_plan(plan_id)

    async def executing(self) -> list[int]:
        """The plans a worker was executing (to resume)."""
        db = Database(self.settings.database_url)
        try:
            async with db.read() as session:
                rows = await session.scalars(
                    select(RemediationPlan.id).where(RemediationPlan.status == PlanStatus.EXECUTING)
                )
                return list(rows.all())
        finally:
            await db.dispose()

    def resume(self) -> list[int]:
        """Queue every plan left ``executing`` (a worker died under it)."""
        plans = asyncio.run(self.executing())
        for plan_id in plans:
            self.enqueue(plan_id)
        return plans

    def run_consumer(self, workers: int = 1) -> None:
        """Process the queue until interrupted (what ``promoguard worker`` runs)."""
        consumer = self.huey.create_consumer(workers=workers, worker_type="thread")
        consumer.run()
