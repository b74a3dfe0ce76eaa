"""A remediation plan draft: every affected order re-priced, classified, given its action.

:func:`build_plan` finds the incident's affected orders (:mod:`.affected`), loads their
snapshots in batches (:mod:`.snapshot`), prices each again under the corrected rules
(:mod:`.corrected`) with the same pure engine, classifies it (:mod:`.classify`) under the
policy of the incident's severity (:mod:`.policy`), and adds the failed coupon claims it is
given. The result is plain data, ready for the plan tables and for approval; nothing is
written. :func:`stream_plan` yields the same items batch by batch, for a caller that stores
them as it goes.

Each item has a cause, ``incident:<id>:<class>``; a payout's idempotency key is
``f"{order_id}:{cause}"`` (:attr:`PlanItem.idempotency_key`), so paying the same order twice for
the same reason is impossible whatever the retries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.incidents.models import Incident
from promoguard.promotions.engine import PricingPolicy
from promoguard.remediation.affected import Affected, FailedClaim, find_affected
from promoguard.remediation.classify import (
    ACTIONS,
    CLASSES,
    Action,
    Class,
    LineFacts,
    LineOutcome,
    OrderFacts,
    Outcome,
    classify,
    classify_failed_claim,
)
from promoguard.remediation.corrected import CorrectedRules, Version, load_corrected
from promoguard.remediation.policy import RemediationPolicy, SeverityPolicy
from promoguard.remediation.snapshot import (
    LineCache,
    PricingSnapshot,
    customer_of,
    load_snapshots,
)

__all__ = [
    "CouponGrant",
    "PlanDraft",
    "PlanItem",
    "Progress",
    "Total",
    "build_plan",
    "cause_of",
    "item_for",
    "stream_plan",
]

Progress = Callable[[int, int], None]
"""Called with (orders done, orders in all) after every batch."""

BATCH = 5000


def cause_of(incident_id: int, klass: str) -> str:
    """The cause key of an item: ``incident:<id>:<class>``."""
    return f"incident:{incident_id}:{klass}"


@dataclass(frozen=True, slots=True)
class CouponGrant:
    """A coupon to give: compensation, or a failed claim's coupon issued again."""

    value: int
    min_spend: int
    """0: a no-threshold coupon."""
    valid_days: int
    campaign_id: str | None = None
    """The coupon campaign to issue from (a re-issue); None: a compensation coupon."""


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One planned action for one order (or one failed claim)."""

    order_id: str | None
    customer_id: str
    klass: Class
    action: Action
    cause: str
    currency: str
    difference: int
    """Charged minus intended over the order (positive: overcharged)."""
    refund: int
    """Money back: the sum of the lines' refunds."""
    lines: tuple[LineOutcome, ...]
    coupon: CouponGrant | None
    reason: str
    degraded: bool = False
    claim_id: str | None = None

    @property
    def idempotency_key(self) -> str:
        """The payout key, unique per (order, cause): ``f"{order_id}:{cause}"``."""
        return f"{self.order_id or self.claim_id}:{self.cause}"

    def as_dict(self) -> dict[str, Any]:
        """The item as JSON-ready data."""
        return {
            "order_id": self.order_id,
            "claim_id": self.claim_id,
            "customer_id": self.customer_id,
            "class": self.klass,
            "action": self.action,
            "cause": self.cause,
            "idempotency_key": self.idempotency_key,
            "currency": self.currency,
            "difference": self.difference,
            "refund": self.refund,
            "lines": [line._asdict() for line in self.lines],
            "coupon": None
            if self.coupon is None
            else {
                "value": self.coupon.value,
                "min_spend": self.coupon.min_spend,
                "valid_days": self.coupon.valid_days,
                "campaign_id": self.coupon.campaign_id,
            },
            "reason": self.reason,
            "degraded": self.degraded,
        }


@dataclass(slots=True)
class Total:
    """How many items and how much money, for one class or one action."""

    count: int = 0
    refund: int = 0
    coupons: int = 0
    """The coupons' value."""
    difference: int = 0

    def add(self, item: PlanItem) -> None:
        """Count one item in."""
        self.count += 1
        self.refund += item.refund
        self.coupons += 0 if item.coupon is None else item.coupon.value
        self.difference += item.difference


@dataclass(slots=True)
class PlanDraft:
    """A plan before anyone approved it: the items and their totals."""

    incident_id: int
    severity: str
    policy: SeverityPolicy
    replacements: dict[Version, int | None]
    """Each faulty version and the version that re-pricing used instead (None: removed)."""
    items: list[PlanItem] = field(default_factory=list)
    by_class: dict[str, Total] = field(default_factory=lambda: {k: Total() for k in CLASSES})
    by_action: dict[str, Total] = field(default_factory=lambda: {a: Total() for a in ACTIONS})
    extensions: dict[str, int] = field(default_factory=dict)
    """Campaign id -> days its window stays open for the plan's affected customers."""
    notes: list[str] = field(default_factory=list)

    def add(self, item: PlanItem) -> None:
        """Add an item and count it in the totals."""
        self.items.append(item)
        self.by_class[item.klass].add(item)
        self.by_action[item.action].add(item)

    @property
    def refund_total(self) -> int:
        """All money the plan pays back."""
        return sum(t.refund for t in self.by_action.values())

    def customers(self) -> list[str]:
        """The customers the plan does something for (campaign extensions go to them)."""
        return sorted({i.customer_id for i in self.items if i.action != "none"})

    def as_dict(self) -> dict[str, Any]:
        """The draft as JSON-ready data."""
        return {
            "incident_id": self.incident_id,
            "severity": self.severity,
            "policy": self.policy.model_dump(mode="json"),
            "replacements": [
                {"campaign_id": c, "faulty": v, "intended": i}
                for (c, v), i in sorted(self.replacements.items())
            ],
            "items": [item.as_dict() for item in self.items],
            "by_class": {k: _total(t) for k, t in self.by_class.items()},
            "by_action": {k: _total(t) for k, t in self.by_action.items()},
            "extensions": dict(self.extensions),
            "notes": list(self.notes),
        }


def _total(total: Total) -> dict[str, int]:
    return {
        "count": total.count,
        "refund": total.refund,
        "coupons": total.coupons,
        "difference": total.difference,
    }


def _coupon(outcome: Outcome, policy: SeverityPolicy) -> CouponGrant | None:
    if not outcome.coupon_value:
        return None
    comp = policy.compensation
    return CouponGrant(outcome.coupon_value, comp.min_spend, comp.valid_days)


def item_for(
    snapshot: PricingSnapshot,
    rules: CorrectedRules,
    policy: SeverityPolicy,
    *,
    incident_id: int,
    oversold: bool = False,
    degraded: bool = False,
) -> PlanItem:
    """Re-price one order under the corrected rules and classify it (pure, no I/O)."""
    order = snapshot.order
    intended = rules.corrected(snapshot).quote(snapshot.cart, snapshot.customer, order.priced_at)
    facts = OrderFacts(
        order.status,
        order.total,
        order.refunded_total,
        tuple(
            LineFacts(
                ln.sku,
                ln.quantity,
                ln.final_amount,
                priced.final_amount,
                ln.refunded_quantity,
                ln.refunded_amount,
            )
            for ln, priced in zip(snapshot.lines, intended.lines, strict=True)
        ),
        oversold,
    )
    outcome = classify(facts, policy)
    return PlanItem(
        order_id=order.id,
        customer_id=order.customer_id,
        klass=outcome.klass,
        action=outcome.action,
        cause=cause_of(incident_id, outcome.klass),
        currency=order.currency,
        difference=outcome.difference,
        refund=outcome.refund,
        lines=outcome.lines,
        coupon=_coupon(outcome, policy),
        reason=outcome.reason,
        degraded=degraded,
    )


def _claim_item(claim: FailedClaim, incident: Incident, policy: SeverityPolicy) -> PlanItem:
    outcome = classify_failed_claim(claim.coupon_value)
    return PlanItem(
        order_id=None,
        customer_id=claim.customer_id,
        klass=outcome.klass,
        action=outcome.action,
        cause=cause_of(incident.id, outcome.klass),
        currency="",
        difference=0,
        refund=0,
        lines=(),
        coupon=CouponGrant(
            claim.coupon_value, 0, policy.compensation.valid_days, claim.campaign_id
        ),
        reason=outcome.reason,
        claim_id=claim.claim_id,
    )


@dataclass(slots=True)
class _Setup:
    rules: CorrectedRules
    policy: SeverityPolicy
    affected: list[Affected]


async def _setup(
    session: AsyncSession,
    incident: Incident,
    policy: RemediationPolicy,
    corrected: CorrectedRules | Mapping[Version, int | None] | None,
    pricing: PricingPolicy | None,
) -> _Setup:
    faulty = [(str(c), int(v)) for c, v in incident.versions]
    if isinstance(corrected, CorrectedRules):
        rules = corrected
    else:
        rules = await load_corrected(session, faulty, explicit=corrected, pricing=pricing)
    affected = await find_affected(
        session,
        versions=faulty,
        start=incident.window_start,
        end=incident.window_end,
        history=rules.history,
    )
    return _Setup(rules, policy.for_severity(incident.severity), affected)


async def stream_plan(
    session: AsyncSession,
    incident: Incident,
    policy: RemediationPolicy,
    corrected: CorrectedRules | Mapping[Version, int | None] | None = None,
    *,
    pricing: PricingPolicy | None = None,
    oversold: Collection[str] = (),
    failed_claims: Iterable[FailedClaim] = (),
    member_tiers: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    batch_size: int = BATCH,
) -> AsyncIterator[list[PlanItem]]:
    """Yield the plan's items batch by batch (see :func:`build_plan` for the arguments)."""
    setup = await _setup(session, incident, policy, corrected, pricing)
    async for batch in _items(
        session,
        incident,
        setup,
        oversold=oversold,
        member_tiers=member_tiers,
        progress=progress,
        batch_size=batch_size,
    ):
        yield batch
    claims = [_claim_item(c, incident, setup.policy) for c in failed_claims]
    if claims:
        yield claims


async def _items(
    session: AsyncSession,
    incident: Incident,
    setup: _Setup,
    *,
    oversold: Collection[str],
    member_tiers: Mapping[str, str] | None,
    progress: Progress | None,
    batch_size: int,
) -> AsyncIterator[list[PlanItem]]:
    affected = setup.affected
    total = len(affected)
    degraded = {a.order_id for a in affected if a.degraded}
    sold_out = set(oversold)
    rules, severity_policy = setup.rules, setup.policy
    done = 0
    cache: LineCache = {}
    if progress is not None:
        progress(0, total)
    for start in range(0, total, batch_size):
        ids = [a.order_id for a in affected[start : start + batch_size]]
        snapshots = await load_snapshots(session, ids, cache=cache)
        if member_tiers and degraded:
            snapshots = [_true_tier(s, member_tiers, degraded) for s in snapshots]
        batch = [
            item_for(
                snapshot,
                rules,
                severity_policy,
                incident_id=incident.id,
                oversold=snapshot.order.id in sold_out,
                degraded=snapshot.order.id in degraded,
            )
            for snapshot in snapshots
        ]
        done += len(ids)
        if progress is not None:
            progress(done, total)
        yield batch


def _true_tier(
    snapshot: PricingSnapshot, tiers: Mapping[str, str], degraded: set[str]
) -> PricingSnapshot:
    """A degraded order priced as the member it was (when the caller knows the tier)."""
    order = snapshot.order
    tier = tiers.get(order.customer_id)
    if order.id not in degraded or tier is None:
        return snapshot
    return snapshot._replace(customer=customer_of(order.facts, member_tier=tier))


async def build_plan(
    session: AsyncSession,
    incident: Incident,
    policy: RemediationPolicy,
    corrected: CorrectedRules | Mapping[Version, int | None] | None = None,
    *,
    pricing: PricingPolicy | None = None,
    oversold: Collection[str] = (),
    failed_claims: Iterable[FailedClaim] = (),
    member_tiers: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    batch_size: int = BATCH,
) -> PlanDraft:
    """Draft the remediation plan of an incident.

    Args:
        session: a read session (nothing is written).
        incident: the incident: its faulty versions, window and severity.
        policy: the shop's remediation policy; the incident's severity picks its part.
        corrected: the corrected rules, or the operator's intended version per faulty version
            (None: remove its campaign); None: the defaults (see :mod:`.corrected`).
        pricing: the shop-wide guard the service prices with (``max_discount_ratio``).
        oversold: orders the shop cannot deliver: full refund and compensation.
        failed_claims: coupon claims that failed in the incident (the store keeps none).
        member_tiers: customer id -> the true member tier, for degraded orders priced without.
        progress: called with (done, total) after every batch of orders.
        batch_size: orders loaded and priced per batch.

    Returns:
        The draft: items with classes, actions and amounts, and the totals.
    """
    setup = await _setup(session, incident, policy, corrected, pricing)
    draft = PlanDraft(
        incident_id=incident.id,
        severity=incident.severity,
        policy=setup.policy,
        replacements=dict(setup.rules.replacements),
    )
    async for batch in _items(
        session,
        incident,
        setup,
        oversold=oversold,
        member_tiers=member_tiers,
        progress=progress,
        batch_size=batch_size,
    ):
        for item in batch:
            draft.add(item)
    for claim in failed_claims:
        draft.add(_claim_item(claim, incident, setup.policy))
    days = setup.policy.extend_campaign_days
    if days:
        for campaign, _ in sorted(setup.rules.replacements):
            draft.extensions[campaign] = days
    draft.notes.extend(
        _notes(setup, failed_claims_given=bool(draft.by_class["failed_claim"].count))
    )
    return draft


def _notes(setup: _Setup, *, failed_claims_given: bool) -> list[str]:
    notes = []
    if not setup.rules.history.exact:
        notes.append(
            "the campaign audit log does not account for every rules stamp: the rules live "
            "for each order were taken by time, not by stamp"
        )
    if not failed_claims_given:
        notes.append("failed coupon claims are not recorded in the store: none were given")
    for (campaign, version), intended in sorted(setup.rules.replacements.items()):
        if intended is None:
            notes.append(f"{campaign} v{version} has no intended version: re-priced without it")
    return notes
