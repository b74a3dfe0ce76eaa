"""Campaign moves that span domains: simulate a version on recorded orders, and take an approved
version live (or schedule it) only when its budget forecast fits.

Simulation re-prices the last ``PROMOGUARD_SIMULATION_SAMPLE_SIZE`` orders (their own lines and
customer facts), or a synthetic sample drawn from the stored catalogue when there is no order
history yet. The forecast's order volume is the shop's recent rate (orders in the last 7 days per
hour) times the hours left in the version's window (24 h when the window has no end); with no
history it is ``PROMOGUARD_EXPECTED_ORDERS_PER_HOUR``. The report is stored on the version: its
``profile`` is what monitoring expects live traffic to look like.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from math import ceil

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from promoguard.campaigns import service
from promoguard.campaigns.catalogue import get_catalogue
from promoguard.campaigns.models import Campaign, VersionState
from promoguard.errors import ConflictError
from promoguard.orders.models import Order
from promoguard.promotions.engine import PricingPolicy
from promoguard.promotions.model import Cart, CartLine, Customer
from promoguard.promotions.rules import Rule, parse_rule
from promoguard.promotions.simulate import Sample, SimulationReport, simulate, synthetic_sample
from promoguard.settings import Settings

__all__ = ["go_live", "recent_samples", "simulate_version"]

HISTORY = timedelta(days=7)
OPEN_WINDOW_HOURS = 24
"""Hours a forecast covers when the version's window has no end."""


def _sample(order: Order) -> Sample:
    facts = order.customer_facts
    cart = Cart(
        currency=order.currency,
        lines=tuple(
            CartLine(
                sku=line.sku,
                category=line.category,
                tags=frozenset(line.tags),
                unit_price=line.unit_price,
                quantity=line.quantity,
                floor_price=line.floor_price,
            )
            for line in order.lines
        ),
    )
    customer = Customer(
        id=facts["id"],
        member_tier=facts.get("member_tier"),
        first_order=bool(facts.get("first_order")),
        groups=frozenset(facts.get("groups", ())),
        coupons=frozenset(facts.get("coupons", ())),
    )
    return Sample(cart=cart, customer=customer)


async def recent_samples(session: AsyncSession, *, size: int) -> list[Sample]:
    """The carts and customer facts of the last ``size`` orders, newest first."""
    rows = await session.scalars(
        select(Order)
        .options(selectinload(Order.lines))
        .order_by(Order.created_at.desc(), Order.id)
        .limit(size)
    )
    return [_sample(order) for order in rows.all()]


async def _orders_per_hour(session: AsyncSession, *, now: datetime, fallback: int) -> int:
    since = now - HISTORY
    count, first = (
        await session.execute(
            select(func.count(), func.min(Order.created_at)).where(Order.created_at >= since)
        )
    ).one()
    if not count or first is None:
        return fallback
    hours = max(1, ceil((now - first).total_seconds() / 3600))
    return ceil(int(count) / hours)


def _window_hours(rule: Rule, now: datetime) -> int:
    start = max(now, rule.valid_from) if rule.valid_from else now
    if rule.valid_until is None:
        return OPEN_WINDOW_HOURS
    return max(0, ceil((rule.valid_until - start).total_seconds() / 3600))


async def simulate_version(
    session: AsyncSession,
    *,
    settings: Settings,
    campaign_id: str,
    version: int,
    now: datetime,
    rollout_bps: int | None = None,
    expected_orders: int | None = None,
) -> SimulationReport | None:
    """Simulate a version against what is live now and store the report on the version.

    Returns None when there is nothing to simulate with (no order history and no catalogue).
    """
    campaign = await service.get_campaign(session, campaign_id=campaign_id)
    row = await service.get_version(session, campaign_id=campaign_id, version=version)
    candidate = parse_rule(row.spec)
    samples = await recent_samples(session, size=settings.simulation_sample_size)
    source = "orders"
    if not samples:
        catalogue = await get_catalogue(session)
        if catalogue is None or not catalogue.items:
            return None
        samples = synthetic_sample(catalogue, size=settings.simulation_sample_size)
        source = "synthetic"
    if expected_orders is None:
        per_hour = await _orders_per_hour(
            session, now=now, fallback=settings.expected_orders_per_hour
        )
        expected_orders = per_hour * _window_hours(candidate, now)
    report = simulate(
        samples,
        live=await service.live_rules(session),
        candidate=candidate,
        now=now,
        policy=PricingPolicy(max_discount_ratio=Decimal(settings.max_discount_ratio)),
        expected_orders=expected_orders,
        rollout_bps=rollout_bps if rollout_bps is not None else campaign.rollout_bps,
        source=source,
    )
    row.simulation = report.as_dict()
    return report


async def go_live(
    session: AsyncSession,
    *,
    settings: Settings,
    campaign_id: str,
    version: int | None,
    actor: str,
    now: datetime,
    rollout_bps: int | None = None,
    start_at: datetime | None = None,
) -> Campaign:
    """Take a version live now, or schedule it for ``start_at``.

    A version that has not been live before (approved) is simulated first; a budget forecast
    above its budget refuses the move with ``budget_forecast_exceeded``. Resuming a paused
    version and bringing back a superseded one (a rollback) need neither review nor simulation.
    """
    campaign = await service.get_campaign(session, campaign_id=campaign_id, lock=True)
    number = version or service.default_version(campaign)
    target = await service.get_version(session, campaign_id=campaign_id, version=number)
    if target.state == VersionState.APPROVED:
        share = rollout_bps if rollout_bps is not None else campaign.rollout_bps
        report = await simulate_version(
            session,
            settings=settings,
            campaign_id=campaign_id,
            version=number,
            now=start_at or now,
            rollout_bps=share,
        )
        if report is not None and campaign.expected_profile is None:
            # The campaign's first live version sets what monitoring expects of it; later
            # versions are held to it until an operator adopts theirs (adopt_profile).
            campaign.expected_profile = report.profile
            campaign.profile_version = number
        if report is not None and report.blocked:
            forecast = report.forecast
            raise ConflictError(
                "budget_forecast_exceeded",
                f"the simulation forecasts {forecast.forecast_spend} minor units of discount over "
                f"{forecast.expected_orders} orders, above the budget of {forecast.budget}: "
                "lower the discount, raise the budget or narrow the rollout",
                extra={"simulation": report.as_dict()},
            )
    if start_at is not None and start_at > now:
        await service.schedule(
            session,
            campaign_id=campaign_id,
            version=number,
            start_at=start_at,
            rollout_bps=rollout_bps,
            actor=actor,
        )
        return campaign
    return await service.activate(
        session,
        campaign_id=campaign_id,
        version=number,
        actor=actor,
        rollout_bps=rollout_bps,
    )


async def adopt_profile(
    session: AsyncSession, *, campaign_id: str, version: int, actor: str, reason: str
) -> Campaign:
    """Make a version's simulated profile what monitoring expects of the campaign from now on
    (after a deliberate change of depth or audience, say); audited with the reason."""
    campaign = await service.get_campaign(session, campaign_id=campaign_id, lock=True)
    row = await service.get_version(session, campaign_id=campaign_id, version=version)
    profile = (row.simulation or {}).get("profile")
    if not profile:
        raise ConflictError(
            "no_simulation",
            f"version {version} has no simulation to adopt: run POST …/versions/{version}/"
            "simulation first",
        )
    before = campaign.profile_version
    campaign.expected_profile = profile
    campaign.profile_version = version
    return await service.changed(
        session,
        campaign,
        action="campaign.profile_adopted",
        actor=actor,
        detail={"version": version, "reason": reason, "before": {"profile_version": before}},
    )
