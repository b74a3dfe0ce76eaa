"""Quotes and checkout: price a cart under the live rules, sign the quote, commit it into an
order that remembers how it was priced, and follow the order's events.

The quote path reads the cached live rules and, only when the cart needs them, the customer's
wallet and flash-sale usage: it writes nothing. A quote is persisted when an order commits it.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from promoguard import audit
from promoguard.campaigns.live import LiveRules
from promoguard.coupons.models import CouponState, IssuedCoupon
from promoguard.errors import ConflictError, InvalidError, NotFoundError, PromoguardError
from promoguard.orders import tokens
from promoguard.orders.models import (
    IdempotencyRecord,
    LineAllocation,
    Order,
    OrderDiscountRow,
    OrderEvent,
    OrderLine,
    OrderStatus,
    QuoteRecord,
    Redemption,
)
from promoguard.orders.schemas import CustomerFacts, OrderEventIn, QuoteRequest
from promoguard.orders.usage import bump_usage, release_usage, usage_counts
from promoguard.promotions.engine import RuleSet
from promoguard.promotions.model import Cart, Customer, Quote
from promoguard.promotions.rules import FlashSale
from promoguard.store.db import Database

__all__ = ["Checkout", "order_view", "request_hash"]

log = logging.getLogger(__name__)

FLASH = "units:"
"""Prefix of the per-customer counters of flash-sale units bought."""


def request_hash(body: bytes) -> str:
    """SHA-256 of a request body, for idempotency."""
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True, slots=True)
class Priced:
    """A quote and what it was computed from."""

    quote: Quote
    customer: Customer
    stamp: int
    ruleset: RuleSet


async def _held_coupons(session: AsyncSession, customer_id: str, wanted: list[str]) -> set[str]:
    if not wanted:
        return set()
    rows = await session.scalars(
        select(IssuedCoupon.campaign_id).where(
            IssuedCoupon.customer_id == customer_id,
            IssuedCoupon.state == CouponState.ISSUED,
            IssuedCoupon.campaign_id.in_(wanted),
        )
    )
    held = set(rows.all())
    missing = sorted(set(wanted) - held)
    if missing:
        raise InvalidError(
            "coupon_not_in_wallet",
            f"the customer holds no unused coupon {', '.join(missing)}",
            errors=[
                (f"coupons[{wanted.index(m)}]", "not in the customer's wallet") for m in missing
            ],
        )
    return held


async def _price(
    session: AsyncSession | None,
    *,
    ruleset: RuleSet,
    stamp: int,
    cart: Cart,
    facts: CustomerFacts,
    coupons: list[str],
    now: datetime,
) -> Priced:
    """Price with the customer's wallet and flash-sale use read from ``session`` (None: the
    request names no coupons and no flash sale is live, so there is nothing to read)."""
    held: set[str] = set()
    used: dict[str, int] = {}
    if session is not None:
        held = await _held_coupons(session, facts.id, coupons)
        if "flash_sale" in ruleset.kinds:
            used = await usage_counts(session, customer_id=facts.id, prefix=FLASH)
    customer = Customer(
        id=facts.id,
        member_tier=facts.member_tier,
        first_order=facts.first_order,
        groups=frozenset(facts.groups),
        coupons=frozenset(held),
        flash_sale_used=used,
    )
    return Priced(ruleset.quote(cart, customer, now), customer, stamp, ruleset)


def _quote_view(
    priced: Priced, quote_id: str, token: str, now: datetime, exp: datetime
) -> dict[str, Any]:
    return {
        "quote_id": quote_id,
        **priced.quote.as_dict(),
        "rules_stamp": priced.stamp,
        "priced_at": now.isoformat(),
        "expires_at": exp.isoformat(),
        "quote_token": token,
    }


_ORDER_FIELDS = (
    "id",
    "customer_id",
    "quote_id",
    "status",
    "currency",
    "list_total",
    "discount_total",
    "total",
    "refunded_total",
)
_LINE_FIELDS = (
    "sku",
    "quantity",
    "unit_price",
    "list_amount",
    "discount",
    "final_amount",
    "refunded_quantity",
    "refunded_amount",
)
_DISCOUNT_FIELDS = ("rule_id", "rule_version", "kind", "layer", "amount")

Allocation = tuple[str, int, int]
"""(rule id, rule version, amount) of one line's share of one discount."""


def _view(
    head: dict[str, Any],
    lines: Iterable[tuple[dict[str, Any], list[Allocation]]],
    discounts: Iterable[dict[str, Any]],
) -> dict[str, Any]:
    """The API's order shape, from plain rows (as written, or as read back)."""
    return {
        **{field: head[field] for field in _ORDER_FIELDS},
        "priced_at": head["priced_at"].isoformat(),
        "created_at": head["created_at"].isoformat(),
        "lines": [
            {
                **{field: line[field] for field in _LINE_FIELDS},
                "allocations": [
                    {"rule_id": rule_id, "rule_version": version, "amount": amount}
                    for rule_id, version, amount in allocations
                ],
            }
            for line, allocations in lines
        ],
        "discounts": [{field: d[field] for field in _DISCOUNT_FIELDS} for d in discounts],
    }


def _fields(row: object, names: Iterable[str]) -> dict[str, Any]:
    return {name: getattr(row, name) for name in names}


def order_view(order: Order) -> dict[str, Any]:
    """An order as the API shows it, every line with its allocations."""
    return _view(
        _fields(order, (*_ORDER_FIELDS, "priced_at", "created_at")),
        [
            (
                _fields(line, _LINE_FIELDS),
                [(a.rule_id, a.rule_version, a.amount) for a in line.allocations],
            )
            for line in order.lines
        ],
        [_fields(d, _DISCOUNT_FIELDS) for d in order.discounts],
    )


class Checkout:
    """The quote and order use cases, wired to a database, the live rules and the secret."""

    def __init__(self, db: Database, live: LiveRules, *, secret: str, quote_ttl: timedelta) -> None:
        self._db = db
        self._live = live
        self._secret = secret
        self._ttl = quote_ttl

    # -- quotes -----------------------------------------------------------------------------

    async def quote(self, request: QuoteRequest, now: datetime) -> dict[str, Any]:
        """Price a cart under the live rules and sign the result."""
        snapshot = await self._live.current()
        ruleset = snapshot.ruleset
        if request.coupons or "flash_sale" in ruleset.kinds:
            async with self._db.read() as session:
                priced = await self._priced(session, ruleset, snapshot.stamp, request, now)
        else:  # the hot path: nothing to read, no transaction
            priced = await self._priced(None, ruleset, snapshot.stamp, request, now)
        quote_id = str(uuid.uuid4())
        exp = now + self._ttl
        claims = {
            "qid": quote_id,
            "req": request.model_dump(mode="json"),
            "total": priced.quote.total,
            "stamp": priced.stamp,
            "iat": now.isoformat(),
            "exp": int(exp.timestamp()),
        }
        token = tokens.sign(claims, self._secret)
        return _quote_view(priced, quote_id, token, now, exp)

    async def _priced(
        self,
        session: AsyncSession | None,
        ruleset: RuleSet,
        stamp: int,
        request: QuoteRequest,
        now: datetime,
    ) -> Priced:
        return await _price(
            session,
            ruleset=ruleset,
            stamp=stamp,
            cart=request.cart,
            facts=request.customer,
            coupons=list(request.coupons),
            now=now,
        )

    # -- orders -----------------------------------------------------------------------------

    async def place_order(
        self, *, token: str, key: str, body_hash: str, now: datetime
    ) -> tuple[dict[str, Any], bool]:
        """Commit a quote token into an order, once per idempotency key.

        Returns the order and whether it is a replay of an earlier request with this key.
        """
        try:
            claims = tokens.verify(token, self._secret, now)
        except InvalidError:
            # An expired token can still be the retry of an order placed in time: replay it.
            replay = await self._replay(key, body_hash)
            if replay is not None:
                return replay, True
            raise
        request = QuoteRequest.model_validate(claims["req"])
        snapshot = await self._live.current()
        try:
            async with self._db.write() as session:
                existing = await session.get(IdempotencyRecord, ("orders", key))
                if existing is not None:  # committed between our check and our transaction
                    return self._replayed(existing, body_hash), True
                view = await self._commit(
                    session,
                    claims=claims,
                    request=request,
                    ruleset=snapshot.ruleset,
                    stamp=snapshot.stamp,
                    now=now,
                )
                session.add(
                    IdempotencyRecord(
                        scope="orders",
                        key=key,
                        request_hash=body_hash,
                        status_code=201,
                        response=view,
                        created_at=now,
                    )
                )
        except (IntegrityError, PromoguardError) as exc:
            # A concurrent request with this key may have committed while we ran (on PostgreSQL
            # each statement sees the latest commits): its order is the answer, whatever we hit
            # after it (a unique race on the key or the quote, the quote or coupon now used).
            replay = await self._replay(key, body_hash)
            if replay is not None:
                return replay, True
            if isinstance(exc, PromoguardError):
                raise
            log.info("order commit lost a unique race: %s", exc.orig)
            raise ConflictError(
                "quote_already_used", "this quote has already been committed into an order"
            ) from None
        return view, False

    async def _replay(self, key: str, body_hash: str) -> dict[str, Any] | None:
        async with self._db.read() as session:
            existing = await session.get(IdempotencyRecord, ("orders", key))
            return None if existing is None else self._replayed(existing, body_hash)

    @staticmethod
    def _replayed(record: IdempotencyRecord, body_hash: str) -> dict[str, Any]:
        if record.request_hash != body_hash:
            raise InvalidError(
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request body",
                errors=[("Idempotency-Key", "already used with another body")],
            )
        return record.response

    async def _commit(
        self,
        session: AsyncSession,
        *,
        claims: dict[str, Any],
        request: QuoteRequest,
        ruleset: RuleSet,
        stamp: int,
        now: datetime,
    ) -> dict[str, Any]:
        try:
            priced = await self._priced(session, ruleset, stamp, request, now)
        except InvalidError as exc:
            if exc.code != "coupon_not_in_wallet":
                raise
            # The quote saw the coupon in the wallet: a concurrent order has redeemed it since.
            detail = exc.detail.replace("holds no unused", "no longer holds an unused", 1)
            raise ConflictError(
                "coupon_already_used", f"{detail}: another order has used it", errors=exc.errors
            ) from None
        quote = priced.quote
        if quote.total != claims["total"]:
            raise ConflictError(
                "quote_changed",
                f"the price changed since the quote ({claims['total']} -> {quote.total} minor "
                "units): ask for a new quote",
                extra={"quoted_total": claims["total"], "current_total": quote.total},
            )
        view = await self._record(session, claims, request, priced, now)
        await self._redeem(session, view["id"], request, priced, now)
        audit.record(
            session,
            actor=request.customer.id,
            action="order.created",
            subject_type="order",
            subject_id=view["id"],
            detail={"total": quote.total, "discount": quote.discount_total, "rules_stamp": stamp},
        )
        return view

    @staticmethod
    async def _record(
        session: AsyncSession,
        claims: dict[str, Any],
        request: QuoteRequest,
        priced: Priced,
        now: datetime,
    ) -> dict[str, Any]:
        """Write the quote, the order, its lines, allocations and discounts; return the order as
        :func:`order_view` shows it.

        Bulk inserts in foreign-key order, no read-backs: the unique quote id (a second order
        from one quote) and the idempotency key are left to the database's constraints.
        """
        quote = priced.quote
        order_id = str(uuid.uuid4())
        await session.execute(
            insert(QuoteRecord).values(
                id=claims["qid"],
                customer_id=request.customer.id,
                total=quote.total,
                rules_stamp=priced.stamp,
                issued_at=datetime.fromisoformat(claims["iat"]),
                expires_at=datetime.fromtimestamp(claims["exp"], now.tzinfo),
                quote=quote.as_dict(),
            )
        )
        head = {
            "id": order_id,
            "customer_id": request.customer.id,
            "quote_id": claims["qid"],
            "status": OrderStatus.CREATED.value,
            "currency": quote.currency,
            "list_total": quote.list_total,
            "discount_total": quote.discount_total,
            "total": quote.total,
            "refunded_total": 0,
            "priced_at": now,
            "created_at": now,
            "updated_at": now,
            "customer_facts": request.customer.model_dump(mode="json")
            | {"coupons": sorted(priced.customer.coupons)},
        }
        await session.execute(insert(Order).values(**head))
        rows = [
            {
                "order_id": order_id,
                "position": position,
                "sku": line.sku,
                "category": cart_line.category,
                "tags": sorted(cart_line.tags),
                "quantity": line.quantity,
                "unit_price": line.unit_price,
                "floor_price": cart_line.floor_price,
                "list_amount": line.list_amount,
                "discount": line.discount,
                "final_amount": line.final_amount,
                "refunded_quantity": 0,
                "refunded_amount": 0,
            }
            for position, (line, cart_line) in enumerate(
                zip(quote.lines, request.cart.lines, strict=True)
            )
        ]
        line_ids = (
            await session.scalars(
                insert(OrderLine).returning(OrderLine.id, sort_by_parameter_order=True), rows
            )
        ).all()
        allocations = [
            {
                "order_line_id": line_id,
                "rule_id": d.rule_id,
                "rule_version": d.rule_version,
                "amount": d.amount,
            }
            for line_id, line in zip(line_ids, quote.lines, strict=True)
            for d in line.discounts
        ]
        if allocations:
            await session.execute(insert(LineAllocation), allocations)
        discounts = [
            {
                "order_id": order_id,
                "rule_id": d.rule_id,
                "rule_version": d.rule_version,
                "kind": d.kind,
                "layer": d.layer.name.lower(),
                "amount": d.amount,
            }
            for d in quote.discounts
        ]
        if discounts:
            await session.execute(insert(OrderDiscountRow), discounts)
        shares = [
            [(d.rule_id, d.rule_version, d.amount) for d in ln.discounts] for ln in quote.lines
        ]
        return _view(head, zip(rows, shares, strict=True), discounts)

    async def _redeem(
        self,
        session: AsyncSession,
        order_id: str,
        request: QuoteRequest,
        priced: Priced,
        now: datetime,
    ) -> None:
        """Record who used what; redeem coupons and count flash-sale units within the limits."""
        customer_id = request.customer.id
        lines = priced.quote.lines
        redemptions = []
        for discount in priced.quote.discounts:
            units = sum(lines[i].quantity for i, part in enumerate(discount.allocations) if part)
            coupon_id = None
            if discount.kind == "coupon":
                coupon_id = await self._redeem_coupon(
                    session, customer_id, discount.rule_id, order_id, now
                )
            elif discount.kind == "flash_sale":
                spec = priced.ruleset.spec(discount.rule_id)
                assert isinstance(spec, FlashSale)
                left = spec.per_user_limit - priced.customer.flash_sale_used.get(spec.id, 0)
                units = min(units, left)
                counted = await bump_usage(
                    session,
                    customer_id=customer_id,
                    counter=FLASH + spec.id,
                    by=units,
                    limit=spec.per_user_limit,
                )
                if not counted:
                    raise ConflictError(
                        "flash_sale_limit_reached",
                        f"the customer has bought the most units flash sale {spec.id!r} allows",
                    )
            redemptions.append(
                {
                    "order_id": order_id,
                    "customer_id": customer_id,
                    "rule_id": discount.rule_id,
                    "rule_version": discount.rule_version,
                    "kind": discount.kind,
                    "units": units,
                    "amount": discount.amount,
                    "coupon_id": coupon_id,
                    "at": now,
                }
            )
        if redemptions:
            await session.execute(insert(Redemption), redemptions)

    @staticmethod
    async def _redeem_coupon(
        session: AsyncSession, customer_id: str, campaign_id: str, order_id: str, now: datetime
    ) -> str:
        candidates = await session.scalars(
            select(IssuedCoupon.id)
            .where(
                IssuedCoupon.customer_id == customer_id,
                IssuedCoupon.campaign_id == campaign_id,
                IssuedCoupon.state == CouponState.ISSUED,
            )
            .order_by(IssuedCoupon.issued_at, IssuedCoupon.id)
        )
        for coupon_id in candidates.all():
            # Conditional on the state we read: a concurrent order cannot redeem it twice.
            done = await session.execute(
                update(IssuedCoupon)
                .where(IssuedCoupon.id == coupon_id, IssuedCoupon.state == CouponState.ISSUED)
                .values(state=CouponState.REDEEMED, redeemed_at=now, order_id=order_id)
            )
            if done.rowcount == 1:  # type: ignore[attr-defined]
                return coupon_id
        raise ConflictError(
            "coupon_already_used", f"the customer has no unused coupon {campaign_id!r} left"
        )

    # -- reading and events -----------------------------------------------------------------

    @staticmethod
    async def _load(session: AsyncSession, order_id: str) -> Order:
        order = await session.scalar(
            select(Order)
            .where(Order.id == order_id)
            .options(
                selectinload(Order.lines).selectinload(OrderLine.allocations),
                selectinload(Order.discounts),
            )
        )
        if order is None:
            raise NotFoundError("order_not_found", f"no order {order_id!r}")
        return order

    async def get_order(self, order_id: str) -> dict[str, Any]:
        """One order with its lines and allocations."""
        async with self._db.read() as session:
            return order_view(await self._load(session, order_id))

    async def apply_event(
        self, order_id: str, event: OrderEventIn, now: datetime
    ) -> dict[str, Any]:
        """Move an order by a shop event; refunds are computed per line from what was paid."""
        at = event.at or now
        async with self._db.write() as session:
            order = await self._load(session, order_id)
            before = {"status": order.status, "refunded_total": order.refunded_total}
            amount = await _EVENTS[event.type](session, order, event)
            order.updated_at = at
            session.add(
                OrderEvent(
                    order_id=order.id,
                    type=event.type,
                    amount=amount,
                    detail=orjson.loads(orjson.dumps(event.model_dump(mode="json"))),
                    at=at,
                )
            )
            audit.record(
                session,
                actor="shop",
                action=f"order.{event.type}",
                subject_type="order",
                subject_id=order.id,
                detail={
                    "amount": amount,
                    "reason": event.reason,
                    "before": before,
                    "after": {"status": order.status, "refunded_total": order.refunded_total},
                },
            )
            await session.flush()
            return order_view(order)


def _refuse(order: Order, event: str) -> ConflictError:
    return ConflictError(
        "invalid_transition", f"order {order.id} is {order.status}: it cannot be {event}"
    )


async def _paid(session: AsyncSession, order: Order, event: OrderEventIn) -> int:  # noqa: ARG001
    if order.status != OrderStatus.CREATED:
        raise _refuse(order, "paid")
    order.status = OrderStatus.PAID
    return order.total


async def _shipped(session: AsyncSession, order: Order, event: OrderEventIn) -> int:  # noqa: ARG001
    if order.status != OrderStatus.PAID:
        raise _refuse(order, "shipped")
    order.status = OrderStatus.SHIPPED
    return 0


async def _cancelled(session: AsyncSession, order: Order, event: OrderEventIn) -> int:  # noqa: ARG001
    """Cancel before shipping: coupons go back to the wallet and per-customer use is released."""
    if order.status not in (OrderStatus.CREATED, OrderStatus.PAID):
        raise _refuse(order, "cancelled")
    refund = order.total - order.refunded_total if order.status == OrderStatus.PAID else 0
    order.status = OrderStatus.CANCELLED
    order.refunded_total += refund
    redemptions = await session.scalars(
        select(Redemption).where(Redemption.order_id == order.id, Redemption.released_at.is_(None))
    )
    for redemption in redemptions.all():
        redemption.released_at = order.updated_at
        if redemption.coupon_id is not None:
            await session.execute(
                update(IssuedCoupon)
                .where(IssuedCoupon.id == redemption.coupon_id)
                .values(state=CouponState.ISSUED, redeemed_at=None, order_id=None)
            )
        if redemption.kind == "flash_sale":
            await release_usage(
                session,
                customer_id=order.customer_id,
                counter=FLASH + redemption.rule_id,
                by=redemption.units,
            )
    return refund


async def _refunded(session: AsyncSession, order: Order, event: OrderEventIn) -> int:  # noqa: ARG001
    """Refund units of lines (or everything left): each line gives back its share of what was
    paid for it, the last unit taking the remainder so a whole line refunds exactly."""
    if order.status not in (OrderStatus.PAID, OrderStatus.SHIPPED, OrderStatus.PARTIALLY_REFUNDED):
        raise _refuse(order, "refunded")
    by_sku = {line.sku: line for line in order.lines}
    wanted = (
        {r.sku: r.quantity for r in event.lines}
        if event.lines
        else {line.sku: line.quantity - line.refunded_quantity for line in order.lines}
    )
    errors = []
    for n, (sku, quantity) in enumerate(wanted.items()):
        line = by_sku.get(sku)
        if line is None:
            errors.append((f"lines[{n}].sku", f"the order has no line {sku!r}"))
        elif quantity > line.quantity - line.refunded_quantity:
            errors.append(
                (
                    f"lines[{n}].quantity",
                    f"only {line.quantity - line.refunded_quantity} left to refund",
                )
            )
    if errors:
        raise InvalidError("refund_invalid", "the refund does not fit the order", errors=errors)
    total = 0
    for sku, quantity in wanted.items():
        line = by_sku[sku]
        if not quantity:
            continue
        left = line.quantity - line.refunded_quantity
        amount = (
            line.final_amount - line.refunded_amount
            if quantity == left
            else line.final_amount * quantity // line.quantity
        )
        line.refunded_quantity += quantity
        line.refunded_amount += amount
        total += amount
    order.refunded_total += total
    fully = all(line.refunded_quantity == line.quantity for line in order.lines)
    order.status = OrderStatus.REFUNDED if fully else OrderStatus.PARTIALLY_REFUNDED
    return total


_EVENTS = {"paid": _paid, "shipped": _shipped, "cancelled": _cancelled, "refunded": _refunded}
