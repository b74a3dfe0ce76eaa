"""Quotes and checkout: price a cart under the live rules, sign the quote, commit it into an
order that remembers how it was priced, and follow the order's events.

The quote path reads the cached live rules and, only when the cart needs them, the customer's
wallet and flash-sale usage: it writes nothing. A quote is persisted when an order commits it.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

import orjson
from redis.exceptions import RedisError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from promoguard import audit
from promoguard.campaigns.live import LiveRules, Snapshot
from promoguard.coupons.models import CouponState, IssuedCoupon
from promoguard.errors import (
    ConflictError,
    InvalidError,
    NotFoundError,
    PromoguardError,
    UnavailableError,
)
from promoguard.monitoring.telemetry import Telemetry
from promoguard.orders import groups, tokens
from promoguard.orders.guards import (
    Need,
    flash_units_key,
    limited_rules,
    refusal_detail,
    takes,
    unfit,
)
from promoguard.orders.identity import (
    Identity,
    first_order_eligible,
    first_order_eligible_in,
    forget_order,
    linked_accounts,
    mark_order,
)
from promoguard.orders.models import (
    BuyGroup,
    GroupMember,
    IdempotencyRecord,
    Order,
    OrderEvent,
    OrderLine,
    OrderStatus,
    Redemption,
    Reservation,
    ReservationState,
)
from promoguard.orders.schemas import OrderEventIn, QuoteRequest
from promoguard.promotions.engine import RuleSet
from promoguard.promotions.model import Customer, Quote
from promoguard.promotions.rollout import bucket
from promoguard.promotions.rules import FlashSale, GroupBuy
from promoguard.security.context import Principal, current
from promoguard.store.counters import Counters, Part, SqlCounters
from promoguard.store.db import Database, PlainSQL, utcnow

__all__ = ["Checkout", "order_view", "request_hash"]

log = logging.getLogger(__name__)

_READS_KINDS = frozenset({"flash_sale", "first_order", "group_buy"})
"""Kinds whose facts a quote must read from the store."""


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
    identity: Identity
    degraded: tuple[str, ...] = ()
    buckets: Mapping[str, int] = field(default_factory=dict)
    """The customer's rollout bucket in each campaign live for only part of the customers."""


def _rollout(rollout: Mapping[str, int], customer_id: str) -> tuple[dict[str, int], dict[str, str]]:
    """The customer's bucket in each partly rolled-out campaign, and those it is left out of."""
    buckets = {campaign: bucket(campaign, customer_id) for campaign in rollout}
    out = {
        campaign: f"not in this campaign's rollout yet (bucket {buckets[campaign]} of 10000; "
        f"live for buckets below {bps})"
        for campaign, bps in rollout.items()
        if buckets[campaign] >= bps
    }
    return buckets, out


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
    _in_wallet(wanted, held)
    return held


def _stored_quote(priced: Priced, request: QuoteRequest) -> dict[str, Any]:
    """The quote as an order keeps it; a degraded one also keeps what was left out and the
    tier the customer claimed, so remediation can find it and price it as intended."""
    stored = priced.quote.as_dict()
    if priced.degraded:
        stored["degraded"] = list(priced.degraded)
        stored["asserted_tier"] = request.customer.member_tier
    return stored


def _quote_view(
    priced: Priced, quote_id: str, token: str, now: datetime, exp: datetime
) -> dict[str, Any]:
    return {
        "quote_id": quote_id,
        **priced.quote.as_dict(),
        "rules_stamp": priced.stamp,
        "degraded": list(priced.degraded),
        "rollout_buckets": dict(priced.buckets),
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


@dataclass(frozen=True, slots=True)
class _Placing:
    """An order being placed: the verified token's claims and what the request brought."""

    order_id: str
    key: str
    body_hash: str
    claims: dict[str, Any]
    request: QuoteRequest
    identity: Identity
    now: datetime
    caller: Principal | None


def _replayed(request_hash: str, response: dict[str, Any], body_hash: str) -> dict[str, Any]:
    """The stored answer to an earlier request with this idempotency key, if its body was the
    same."""
    if request_hash != body_hash:
        raise InvalidError(
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body",
            errors=[("Idempotency-Key", "already used with another body")],
        )
    return response


def _in_wallet(wanted: list[str], held: set[str]) -> None:
    """Refuse coupons the customer does not hold (unused)."""
    missing = sorted(set(wanted) - held)
    if missing:
        raise InvalidError(
            "coupon_not_in_wallet",
            f"the customer holds no unused coupon {', '.join(missing)}",
            errors=[
                (f"coupons[{wanted.index(m)}]", "not in the customer's wallet") for m in missing
            ],
        )


_LINE_COLUMNS = (
    "order_id",
    "position",
    "sku",
    "category",
    "tags",
    "quantity",
    "unit_price",
    "floor_price",
    "list_amount",
    "discount",
    "final_amount",
    "refunded_quantity",
    "refunded_amount",
)


def _allocate(sql: PlainSQL, order_id: str, shares: list[tuple[int, str, int, int]]) -> None:
    """Each line's share of each discount, (line position, rule, version, amount), in the
    order given: each share finds its line by (order, position), so the lines are not read
    back."""
    sql.insert(
        "line_allocations",
        ("order_line_id", "rule_id", "rule_version", "amount"),
        [(order_id, at, rule, version, amount) for at, rule, version, amount in shares],
        values="((SELECT id FROM order_lines WHERE order_id = ? AND position = ?), ?, ?, ?)",
    )


def _record(
    sql: PlainSQL,
    *,
    order_id: str,
    claims: dict[str, Any],
    request: QuoteRequest,
    priced: Priced,
    now: datetime,
) -> dict[str, Any]:
    """Write the quote, the order, its lines, allocations and discounts; return the order as
    :func:`order_view` shows it.

    Multi-row inserts in foreign-key order, no read-backs: each allocation finds its line by
    (order, position), and the unique quote id (a second order from one quote) and the
    idempotency key are left to the database's constraints.
    """
    quote = priced.quote
    customer = priced.customer
    sql.run(
        "INSERT INTO quotes (id, customer_id, total, rules_stamp, issued_at, expires_at, quote)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            claims["qid"],
            request.customer.id,
            quote.total,
            priced.stamp,
            sql.instant(datetime.fromisoformat(claims["iat"])),
            sql.instant(datetime.fromtimestamp(claims["exp"], now.tzinfo)),
            sql.json(_stored_quote(priced, request)),
        ),
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
    }
    # The facts it was priced with, for re-pricing later; identity signals are hashes.
    facts = {
        "id": customer.id,
        "member_tier": customer.member_tier,
        "first_order": customer.first_order,
        "groups": sorted(customer.groups),
        "coupons": sorted(customer.coupons),
        "flash_sale_used": dict(customer.flash_sale_used),
        "unavailable": dict(customer.unavailable),
        "signals": list(priced.identity.signals),
        "rollout_buckets": dict(priced.buckets),
    }
    stamp = sql.instant(now)
    sql.run(
        "INSERT INTO orders (id, customer_id, quote_id, status, currency, list_total,"
        " discount_total, total, refunded_total, priced_at, created_at, updated_at,"
        " customer_facts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            order_id,
            request.customer.id,
            claims["qid"],
            head["status"],
            quote.currency,
            quote.list_total,
            quote.discount_total,
            quote.total,
            0,
            stamp,
            stamp,
            stamp,
            sql.json(facts),
        ),
    )
    rows = [
        {
            "sku": line.sku,
            "quantity": line.quantity,
            "unit_price": line.unit_price,
            "list_amount": line.list_amount,
            "discount": line.discount,
            "final_amount": line.final_amount,
            "refunded_quantity": 0,
            "refunded_amount": 0,
        }
        for line in quote.lines
    ]
    sql.insert(
        "order_lines",
        _LINE_COLUMNS,
        [
            (
                order_id,
                position,
                line.sku,
                cart_line.category,
                sql.json(sorted(cart_line.tags)),
                line.quantity,
                line.unit_price,
                cart_line.floor_price,
                line.list_amount,
                line.discount,
                line.final_amount,
                0,
                0,
            )
            for position, (line, cart_line) in enumerate(
                zip(quote.lines, request.cart.lines, strict=True)
            )
        ],
    )
    _allocate(
        sql,
        order_id,
        [
            (position, d.rule_id, d.rule_version, d.amount)
            for position, line in enumerate(quote.lines)
            for d in line.discounts
        ],
    )
    discounts = [
        {
            "rule_id": d.rule_id,
            "rule_version": d.rule_version,
            "kind": d.kind,
            "layer": d.layer.name.lower(),
            "amount": d.amount,
        }
        for d in quote.discounts
    ]
    sql.insert(
        "order_discounts",
        ("order_id", "rule_id", "rule_version", "kind", "layer", "amount"),
        [
            (order_id, d["rule_id"], d["rule_version"], d["kind"], d["layer"], d["amount"])
            for d in discounts
        ],
    )
    shares = [[(d.rule_id, d.rule_version, d.amount) for d in ln.discounts] for ln in quote.lines]
    return _view(head, zip(rows, shares, strict=True), discounts)


def _redeem(
    sql: PlainSQL, order_id: str, request: QuoteRequest, priced: Priced, now: datetime
) -> None:
    """Record who used what; redeem coupons; tie a group-price order to its group place."""
    customer_id = request.customer.id
    lines = priced.quote.lines
    redemptions = []
    at = sql.instant(now)
    for discount in priced.quote.discounts:
        units = sum(lines[i].quantity for i, part in enumerate(discount.allocations) if part)
        coupon_id = None
        if discount.kind == "coupon":
            coupon_id = _redeem_coupon(sql, customer_id, discount.rule_id, order_id, now)
        elif discount.kind == "flash_sale":
            spec = priced.ruleset.spec(discount.rule_id)
            assert isinstance(spec, FlashSale)
            units = min(
                units, spec.per_user_limit - priced.customer.flash_sale_used.get(spec.id, 0)
            )
        elif discount.kind == "group_buy":
            attached = groups.attach_order(
                sql, rule_id=discount.rule_id, customer_id=customer_id, order_id=order_id, now=now
            )
            if not attached:
                raise ConflictError(
                    "group_not_open",
                    f"the customer has no free place in an open group of {discount.rule_id!r}",
                )
        redemptions.append(
            (
                order_id,
                customer_id,
                discount.rule_id,
                discount.rule_version,
                discount.kind,
                units,
                discount.amount,
                coupon_id,
                at,
            )
        )
    sql.insert(
        "redemptions",
        (
            "order_id",
            "customer_id",
            "rule_id",
            "rule_version",
            "kind",
            "units",
            "amount",
            "coupon_id",
            "at",
        ),
        redemptions,
    )


def _redeem_coupon(
    sql: PlainSQL, customer_id: str, campaign_id: str, order_id: str, now: datetime
) -> str:
    candidates = sql.all(
        "SELECT id FROM issued_coupons WHERE customer_id = ? AND campaign_id = ? AND state = ?"
        " ORDER BY issued_at, id",
        (customer_id, campaign_id, CouponState.ISSUED.value),
    )
    for (coupon_id,) in candidates:
        # Conditional on the state we read: a concurrent order cannot redeem it twice.
        done = sql.count(
            "UPDATE issued_coupons SET state = ?, redeemed_at = ?, order_id = ?"
            " WHERE id = ? AND state = ?",
            (
                CouponState.REDEEMED.value,
                sql.instant(now),
                order_id,
                coupon_id,
                CouponState.ISSUED.value,
            ),
        )
        if done == 1:
            return str(coupon_id)
    raise ConflictError(
        "coupon_already_used", f"the customer has no unused coupon {campaign_id!r} left"
    )


class TierSource(Protocol):
    """Where member tiers come from (see :mod:`promoguard.members.clients`)."""

    async def tier(self, customer_id: str, asserted: str | None) -> Any:
        """The customer's tier as a ``(tier, known)`` pair; never raises."""


class StockSource(Protocol):
    """Where live stock levels come from (see :mod:`promoguard.members.clients`)."""

    async def available(self, skus: Sequence[str]) -> dict[str, int] | None:
        """Units available per SKU; None when the answer could not be had."""


class _Asserted:
    """No member-tier service: the shop's asserted tier is used."""

    async def tier(self, customer_id: str, asserted: str | None) -> tuple[str | None, bool]:  # noqa: ARG002
        return asserted, True


class Checkout:
    """The quote and order use cases, wired to a database, the live rules, the run-time
    counters and the secret."""

    def __init__(
        self,
        db: Database,
        live: LiveRules,
        *,
        secret: str,
        quote_ttl: timedelta,
        counters: Counters | None = None,
        tiers: TierSource | None = None,
        inventory: StockSource | None = None,
        region: str = "CN",
        reservation_ttl: timedelta = timedelta(minutes=30),
        refunds: groups.RefundHandover | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._db = db
        self.telemetry = telemetry or Telemetry()
        self._live = live
        self._secret = secret
        self._ttl = quote_ttl
        self.counters = counters or SqlCounters()
        self._tiers = tiers or _Asserted()
        self._inventory = inventory
        self._region = region
        self.reservation_ttl = reservation_ttl
        self.refunds = refunds or groups.RecordedRefunds()
        self._limited: tuple[RuleSet | None, bool] = (None, False)

    def identity(self, facts: Any) -> Identity:
        """The customer's hashed identity signals (validates the phone number)."""
        return Identity(facts, secret=self._secret, region=self._region)

    def _reads(self, ruleset: RuleSet) -> bool:
        """Whether quoting under ``ruleset`` must read the store (cached per rule set)."""
        cached, reads = self._limited
        if cached is not ruleset:
            reads = bool(ruleset.kinds & _READS_KINDS) or bool(limited_rules(ruleset))
            self._limited = (ruleset, reads)
        return reads

    # -- quotes -----------------------------------------------------------------------------

    async def quote(self, request: QuoteRequest, now: datetime) -> dict[str, Any]:
        """Price a cart under the live rules and sign the result."""
        snapshot = await self._live.current()
        ruleset = snapshot.ruleset
        identity = self.identity(request.customer)
        tier, degraded = await self._tier(ruleset, request)
        # The hot path (no coupons, no limited rules) reads nothing and opens no transaction.
        reads = bool(request.coupons) or self._reads(ruleset)
        async with self._db.read() if reads else nullcontext() as session:
            priced = await self._price(
                session,
                ruleset=ruleset,
                rollout=snapshot.rollout,
                stamp=snapshot.stamp,
                request=request,
                identity=identity,
                tier=tier,
                now=now,
            )
        availability: dict[str, int] = {}
        if self._inventory is not None:
            stock = await self._inventory.available([line.sku for line in request.cart.lines])
            if stock is None:
                degraded += ("inventory",)
            else:
                availability = stock
        if degraded:
            priced = replace(priced, degraded=degraded)
        self.telemetry.quoted(priced.quote, bool(degraded))
        quote_id = str(uuid.uuid4())
        exp = now + self._ttl
        claims: dict[str, Any] = {
            "qid": quote_id,
            "req": request.model_dump(mode="json"),
            "tier": tier,
            "total": priced.quote.total,
            "stamp": priced.stamp,
            "iat": now.isoformat(),
            "exp": int(exp.timestamp()),
        }
        if degraded:  # signed with the rest: the order keeps it for remediation
            claims["deg"] = list(degraded)
        token = tokens.sign(claims, self._secret)
        view = _quote_view(priced, quote_id, token, now, exp)
        if self._inventory is not None:
            view["availability"] = availability
        return view

    async def _tier(
        self, ruleset: RuleSet, request: QuoteRequest
    ) -> tuple[str | None, tuple[str, ...]]:
        """The member tier to price with, and what could not be checked. The tier travels in
        the signed quote token, so checkout does not ask the service again."""
        asserted = request.customer.member_tier
        if "member_price" not in ruleset.kinds:
            return asserted, ()
        tier, known = await self._tiers.tier(request.customer.id, asserted)
        # Unknown tier: price as no member at all — never a member price that was not checked.
        return (tier, ()) if known else (None, ("member_tiers",))

    async def _price(
        self,
        session: AsyncSession | None,
        *,
        ruleset: RuleSet,
        rollout: Mapping[str, int],
        stamp: int,
        request: QuoteRequest,
        identity: Identity,
        tier: str | None,
        now: datetime,
    ) -> Priced:
        """Price with the facts promoguard decides: the wallet, first-order eligibility, open
        group places and flash-sale use, read from ``session`` (None: nothing to read). A
        discount whose stock, budget or limit is used up is left out with the reason."""
        facts = request.customer
        buckets, out = _rollout(rollout, facts.id) if rollout else ({}, {})
        customer = Customer(id=facts.id, member_tier=tier, unavailable=out)
        if session is not None:
            customer = await self._customer(
                session,
                ruleset=ruleset,
                request=request,
                identity=identity,
                tier=tier,
                now=now,
                unavailable=out,
            )
        quote = ruleset.quote(request.cart, customer, now)
        if session is not None:
            customer, quote = await self._without_used_up(
                session,
                ruleset=ruleset,
                request=request,
                identity=identity,
                customer=customer,
                quote=quote,
                now=now,
            )
        return Priced(quote, customer, stamp, ruleset, identity, buckets=buckets)

    async def _without_used_up(
        self,
        session: AsyncSession,
        *,
        ruleset: RuleSet,
        request: QuoteRequest,
        identity: Identity,
        customer: Customer,
        quote: Quote,
        now: datetime,
    ) -> tuple[Customer, Quote]:
        """The quote again without the discounts whose stock, budget or limit cannot cover it
        now (each left out with the reason), or as it is when all fit."""
        if not quote.discounts or not self._reads(ruleset):
            return customer, quote
        needs = takes(quote, ruleset, identity, customer)
        levels = await self.counters.levels(session, {t.key for _, t in needs})
        if not (blocked := unfit(needs, levels)):
            return customer, quote
        customer = customer.model_copy(update={"unavailable": {**customer.unavailable, **blocked}})
        return customer, ruleset.quote(request.cart, customer, now)

    async def _customer(
        self,
        session: AsyncSession,
        *,
        ruleset: RuleSet,
        request: QuoteRequest,
        identity: Identity,
        tier: str | None,
        now: datetime,
        unavailable: Mapping[str, str],
    ) -> Customer:
        facts = request.customer
        kinds = ruleset.kinds
        held = await _held_coupons(session, facts.id, list(request.coupons))
        used: dict[str, int] = {}
        if "flash_sale" in kinds:
            flash = [c.id for c in ruleset.rules if c.kind == "flash_sale"]
            levels = await self.counters.levels(
                session, [flash_units_key(rule, facts.id) for rule in flash]
            )
            used = {rule: levels[flash_units_key(rule, facts.id)] for rule in flash}
        first = "first_order" in kinds and await first_order_eligible(session, identity)
        places: set[str] = set()
        if "group_buy" in kinds:
            places = await groups.open_memberships(session, facts.id, now)
        return Customer(
            id=facts.id,
            member_tier=tier,
            first_order=first,
            groups=frozenset(places),
            coupons=frozenset(held),
            flash_sale_used=used,
            unavailable=unavailable,
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
        identity = self.identity(request.customer)
        snapshot = await self._live.current()
        order_id = str(uuid.uuid4())
        placing = _Placing(
            order_id=order_id,
            key=key,
            body_hash=body_hash,
            claims=claims,
            request=request,
            identity=identity,
            now=now,
            caller=current.get(),  # the audit entry's caller: read here, not on a driver thread
        )
        try:
            view, replayed = await self._db.write_plain(
                partial(self._commit, placing),
                # A version suppressed while this order waited for its transaction is out.
                partial(self._live.fresh, snapshot),
            )
            if replayed:  # committed between our check and our transaction
                return view, True
        except (IntegrityError, PromoguardError) as exc:
            # What a non-transactional store (Redis) took for this order goes back: the order
            # never committed.
            await self.counters.undo(order_id)
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
        except BaseException:
            await self.counters.undo(order_id)
            raise
        await self.counters.committed(order_id)
        self.telemetry.ordered(
            order=view,
            customer_id=request.customer.id,
            member_tier=claims.get("tier"),
            identity=identity.signals,  # the detectors leave out the account signal themselves
        )
        return view, False

    async def _replay(self, key: str, body_hash: str) -> dict[str, Any] | None:
        async with self._db.read() as session:
            existing = await session.get(IdempotencyRecord, ("orders", key))
            if existing is None:
                return None
            return _replayed(existing.request_hash, existing.response, body_hash)

    def _commit(
        self, placing: _Placing, sql: PlainSQL, snapshot: Snapshot
    ) -> tuple[dict[str, Any], bool]:
        """The order's transaction, as plain SQL (:meth:`Database.write_plain`; on SQLite it
        runs on the driver's thread): replay an order already placed with this key, or price
        the quote again under the live rules and write the order, what it redeemed, its
        identity marks, the counters it takes and their reservations, the audit entry and the
        idempotency record. Returns the order and whether it is a replay."""
        found = sql.one(
            "SELECT request_hash, response FROM idempotency_keys WHERE scope = ? AND key = ?",
            ("orders", placing.key),
        )
        if found is not None:
            return _replayed(found[0], sql.from_json(found[1]), placing.body_hash), True
        claims, request, identity, now = (
            placing.claims,
            placing.request,
            placing.identity,
            placing.now,
        )
        ruleset = snapshot.ruleset
        rollout = snapshot.rollout
        buckets, out = _rollout(rollout, request.customer.id) if rollout else ({}, {})
        try:
            customer = self._customer_in(
                sql,
                ruleset=ruleset,
                request=request,
                identity=identity,
                tier=claims.get("tier"),
                now=now,
                unavailable=out,
            )
        except InvalidError as exc:
            if exc.code != "coupon_not_in_wallet":
                raise
            # The quote saw the coupon in the wallet: a concurrent order has redeemed it since.
            detail = exc.detail.replace("holds no unused", "no longer holds an unused", 1)
            raise ConflictError(
                "coupon_already_used", f"{detail}: another order has used it", errors=exc.errors
            ) from None
        # Priced without reading the counters: if a limit is used up since the quote, taking it
        # below says which one (a clearer answer than a changed price).
        quote = ruleset.quote(request.cart, customer, now)
        if quote.total != claims["total"] and quote.discounts and self._reads(ruleset):
            # The quote may have left out a discount already used up then: price it the same way.
            needs = takes(quote, ruleset, identity, customer)
            levels = self.counters.levels_plain(sql, {t.key for _, t in needs})
            if blocked := unfit(needs, levels):
                unavailable = {**customer.unavailable, **blocked}
                customer = customer.model_copy(update={"unavailable": unavailable})
                quote = ruleset.quote(request.cart, customer, now)
        if quote.total != claims["total"]:
            raise ConflictError(
                "quote_changed",
                f"the price changed since the quote ({claims['total']} -> {quote.total} minor "
                "units): ask for a new quote",
                extra={"quoted_total": claims["total"], "current_total": quote.total},
            )
        priced = Priced(
            quote,
            customer,
            snapshot.stamp,
            ruleset,
            identity,
            buckets=buckets,
            degraded=tuple(claims.get("deg", ())),
        )
        order_id = placing.order_id
        view = _record(
            sql, order_id=order_id, claims=claims, request=request, priced=priced, now=now
        )
        _redeem(sql, order_id, request, priced, now)
        mark_order(sql, identity, order_id, now)
        self._take(sql, order_id, takes(quote, ruleset, identity, customer), now)
        caller = placing.caller
        sql.run(
            "INSERT INTO audit_log (at, actor, action, subject_type, subject_id, detail, key_id,"
            " role, ip, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                sql.instant(utcnow()),
                request.customer.id,
                "order.created",
                "order",
                order_id,
                sql.json(
                    {
                        "total": quote.total,
                        "discount": quote.discount_total,
                        "rules_stamp": snapshot.stamp,
                    }
                ),
                None if caller is None else caller.key_id,
                None if caller is None else caller.role,
                None if caller is None else caller.ip,
                None if caller is None else caller.request_id,
            ),
        )
        sql.run(
            "INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
            ("orders", placing.key, placing.body_hash, 201, sql.json(view), sql.instant(now)),
        )
        return view, False

    def _customer_in(
        self,
        sql: PlainSQL,
        *,
        ruleset: RuleSet,
        request: QuoteRequest,
        identity: Identity,
        tier: str | None,
        now: datetime,
        unavailable: Mapping[str, str],
    ) -> Customer:
        """:meth:`_customer` inside the order's plain-SQL transaction."""
        facts = request.customer
        kinds = ruleset.kinds
        wanted = list(request.coupons)
        held: set[str] = set()
        if wanted:
            rows = sql.all(
                "SELECT campaign_id FROM issued_coupons WHERE customer_id = ? AND state = ?"
                f" AND campaign_id IN ({sql.marks(len(wanted))})",
                (facts.id, CouponState.ISSUED.value, *wanted),
            )
            held = {row[0] for row in rows}
            _in_wallet(wanted, held)
        used: dict[str, int] = {}
        if "flash_sale" in kinds:
            flash = [c.id for c in ruleset.rules if c.kind == "flash_sale"]
            levels = self.counters.levels_plain(
                sql, [flash_units_key(rule, facts.id) for rule in flash]
            )
            used = {rule: levels[flash_units_key(rule, facts.id)] for rule in flash}
        first = "first_order" in kinds and first_order_eligible_in(sql, identity)
        places: set[str] = set()
        if "group_buy" in kinds:
            places = groups.open_memberships_in(sql, facts.id, now)
        return Customer(
            id=facts.id,
            member_tier=tier,
            first_order=first,
            groups=frozenset(places),
            coupons=frozenset(held),
            flash_sale_used=used,
            unavailable=unavailable,
        )

    def _take(self, sql: PlainSQL, order_id: str, needs: list[Need], now: datetime) -> None:
        """Take every counter the order needs (all or none) and record the reservations.

        Taken last in the transaction, so on PostgreSQL a hot counter's row lock is held for as
        short a time as possible."""
        if not needs:
            return
        refused = self.counters.take_plain(sql, [t for _, t in needs], order_id)
        if refused is not None:
            rule = next(rule for rule, t in needs if t is refused)
            used = self.counters.levels_plain(sql, [refused.key])[refused.key]
            detail, extra = refusal_detail(rule, refused, used)
            raise ConflictError(refused.refusal, detail, extra=extra)
        expires = sql.instant(now + self.reservation_ttl)
        updated = sql.instant(now)
        sql.insert(
            "reservations",
            ("order_id", "key", "amount", "state", "expires_at", "updated_at"),
            [
                (order_id, t.key, t.amount, ReservationState.RESERVED.value, expires, updated)
                for _, t in needs
            ],
        )

    # -- reading and events -----------------------------------------------------------------

    @staticmethod
    async def _load(session: AsyncSession, order_id: str, *, lock: bool = False) -> Order:
        statement = select(Order).where(Order.id == order_id)
        if lock:
            # PostgreSQL: two events on one order wait for each other. (SQLite writers are
            # serialised by BEGIN IMMEDIATE and ignore FOR UPDATE.)
            statement = statement.with_for_update()
        order = await session.scalar(
            statement.options(
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
        """Move an order by a shop event; refunds are computed per line from what was paid.

        Paid confirms the order's reservations (and counts towards its group); cancelled gives
        back everything the order held."""
        at = event.at or now
        given: list[Part] = []
        async with self._db.write() as session:
            order = await self._load(session, order_id, lock=True)
            before = {"status": order.status, "refunded_total": order.refunded_total}
            amount = await _EVENTS[event.type](session, order, event)
            order.updated_at = at
            if event.type == "paid":
                await self._confirm(session, order.id, at)
            elif event.type == "cancelled":
                given = await self._release(session, order, at)
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
            view = order_view(order)
        await self._given_back(given)
        return view

    @staticmethod
    async def _confirm(session: AsyncSession, order_id: str, at: datetime) -> None:
        await session.execute(
            update(Reservation)
            .where(Reservation.order_id == order_id, Reservation.state == ReservationState.RESERVED)
            .values(state=ReservationState.CONFIRMED, updated_at=at)
        )
        await groups.member_paid(session, order_id, at)

    async def _release(self, session: AsyncSession, order: Order, at: datetime) -> list[Part]:
        """Give back what a cancelled or expired order held: its reservations (stock, budget,
        limits), its coupons, its identity marks and its group place. Returns what a
        non-transactional counter store must still be given back after the commit."""
        # Conditional on the state, so of two releases racing (a cancellation and the
        # sweeper) only one gets the rows back and gives the counters back.
        released = await session.execute(
            update(Reservation)
            .where(
                Reservation.order_id == order.id,
                Reservation.state != ReservationState.RELEASED,
            )
            .values(state=ReservationState.RELEASED, updated_at=at)
            .returning(Reservation.key, Reservation.amount)
            .execution_options(synchronize_session=False)
        )
        parts: list[Part] = [(key, amount) for key, amount in released.all()]
        redemptions = await session.scalars(
            select(Redemption).where(
                Redemption.order_id == order.id, Redemption.released_at.is_(None)
            )
        )
        for redemption in redemptions.all():
            redemption.released_at = at
            if redemption.coupon_id is not None:
                await session.execute(
                    update(IssuedCoupon)
                    .where(IssuedCoupon.id == redemption.coupon_id)
                    .values(state=CouponState.ISSUED, redeemed_at=None, order_id=None)
                )
        await forget_order(session, order.id)
        await groups.order_left(session, order.id)
        if self.counters.transactional:
            await self.counters.give_back(session, parts)
            return []
        return parts

    async def _given_back(self, parts: list[Part]) -> None:
        if not parts:
            return
        # After the commit: if this process dies first, or Redis does not answer, the counter
        # stays high — it can undersell, never oversell (README, Runtime guards). The release
        # itself is committed, so the caller is told it happened, not a 503.
        try:
            async with self._db.read() as session:
                await self.counters.give_back(session, parts)
        except (RedisError, UnavailableError) as exc:
            log.warning(
                "counters: could not give back %s (%s); they stay high: the shop may undersell",
                ", ".join(f"{key} {amount}" for key, amount in parts),
                exc,
            )

    # -- groups -----------------------------------------------------------------------------

    async def open_group(self, rule_id: str, facts: Any, now: datetime) -> dict[str, Any]:
        """Open a group of the live group-buy rule ``rule_id`` led by this customer."""
        spec = (await self._live.current()).ruleset.spec(rule_id)
        if not isinstance(spec, GroupBuy):
            raise NotFoundError("group_buy_not_live", f"no live group-buy rule {rule_id!r}")
        identity = self.identity(facts)
        async with self._db.write() as session:
            group_id = await groups.open_group(session, spec=spec, identity=identity, now=now)
        return await self.get_group(group_id)

    async def join_group(self, group_id: str, facts: Any, now: datetime) -> dict[str, Any]:
        """Give this customer a place in the group, if one is left for a new identity."""
        identity = self.identity(facts)
        try:
            async with self._db.write() as session:
                await groups.join_group(session, group_id=group_id, identity=identity, now=now)
        except IntegrityError:
            raise groups.same_identity() from None
        return await self.get_group(group_id)

    async def get_group(self, group_id: str) -> dict[str, Any]:
        """A group with its members."""
        async with self._db.read() as session:
            group = await session.get(BuyGroup, group_id)
            if group is None:
                raise NotFoundError("group_not_found", f"no group {group_id!r}")
            members = (
                await session.scalars(
                    select(GroupMember)
                    .where(GroupMember.group_id == group_id)
                    .order_by(GroupMember.joined_at, GroupMember.customer_id)
                )
            ).all()
            return groups.group_view(group, list(members))

    async def linked_accounts(self, customer_id: str) -> dict[str, Any]:
        """The accounts the identity ledger links to this one."""
        async with self._db.read() as session:
            accounts = await linked_accounts(session, customer_id)
        return {"customer_id": customer_id, "linked": accounts[1:]}

    # -- the sweeper ------------------------------------------------------------------------

    async def sweep(self, now: datetime, batch: int = 200) -> dict[str, int]:
        """Expire unpaid orders past the reservation time, close groups past their time limit
        (refunding their paid members through the payout seam), and settle what a crashed
        process left in a non-transactional counter store. Safe to run in several workers at
        once: every step is conditional on the state it changes.

        Returns:
            How many orders expired, groups expired, refunds were requested and counter
            takes were settled, and how many counters an empty counter store was raised back
            to their record (:meth:`load_counters`).
        """
        report = {"orders_expired": 0, "groups_expired": 0, "refunds_requested": 0, "settled": 0}
        # First: a Redis that does not answer stops the sweep here, before it expires orders
        # whose units it could not give back.
        report["counters_reloaded"] = await self.load_counters() or 0
        cutoff = now - self.reservation_ttl
        async with self._db.read() as session:
            due = (
                await session.scalars(
                    select(Order.id)
                    .where(Order.status == OrderStatus.CREATED, Order.created_at <= cutoff)
                    .order_by(Order.created_at)
                    .limit(batch)
                )
            ).all()
            due_groups = await groups.due_groups(session, now, batch)
        for order_id in due:
            report["orders_expired"] += await self._expire(order_id, now, cutoff)
        for group_id in due_groups:
            expired, refunds = await self._expire_group(group_id, now)
            report["groups_expired"] += expired
            report["refunds_requested"] += refunds
        report["settled"] = await self.counters.settle(60.0, self._on_record)
        return report

    async def load_counters(self) -> int | None:
        """Load a counter store that lost its data (an empty Redis) from the record: each
        counter raised to what the reservations still hold (reserved or confirmed), then marked
        loaded, so takes are admitted again. None when the store is loaded already.

        Until then every take is refused (``counters_not_loaded``), so no take is admitted
        between reading the record and loading it. A release committed meanwhile may have given
        its amount back to the empty counter before the load: that counter then stays high by
        that amount (it can undersell, never oversell)."""
        if await self.counters.loaded():
            return None
        async with self._db.read() as session:
            rows = await session.execute(
                select(Reservation.key, func.sum(Reservation.amount))
                .where(Reservation.state != ReservationState.RELEASED)
                .group_by(Reservation.key)
            )
            record = {key: int(total) for key, total in rows.all()}
        raised = await self.counters.load(record)
        # Empty with nothing on record: a new store. Empty with reservations on record: lost.
        log.log(
            logging.WARNING if record else logging.INFO,
            "counters: the counter store was empty; loaded %d counter(s) from the reservations, "
            "%d raised",
            len(record),
            raised,
        )
        return raised

    async def _on_record(self, order_ids: list[str]) -> set[str]:
        async with self._db.read() as session:
            rows = await session.scalars(select(Order.id).where(Order.id.in_(order_ids)))
            return set(rows.all())

    async def _expire(self, order_id: str, now: datetime, cutoff: datetime) -> int:
        given: list[Part] = []
        async with self._db.write() as session:
            order = await session.get(Order, order_id, with_for_update=True)
            if order is None or order.status != OrderStatus.CREATED or order.created_at > cutoff:
                return 0  # paid, cancelled or expired by someone else meanwhile
            order.status = OrderStatus.EXPIRED
            order.updated_at = now
            given = await self._release(session, order, now)
            session.add(OrderEvent(order_id=order.id, type="expired", amount=0, detail={}, at=now))
            audit.record(
                session,
                actor="sweeper",
                action="order.expired",
                subject_type="order",
                subject_id=order.id,
                detail={"reason": "not paid within the reservation time"},
            )
        await self._given_back(given)
        return 1

    async def _expire_group(self, group_id: str, now: datetime) -> tuple[int, int]:
        given: list[Part] = []
        refunds = 0
        async with self._db.write() as session:
            members = await groups.expire_group(session, group_id, now)
            for member in members:
                order = await session.get(Order, member.order_id, with_for_update=True)
                if order is None or order.status not in (OrderStatus.CREATED, OrderStatus.PAID):
                    continue
                paid = order.status == OrderStatus.PAID
                owed = order.total - order.refunded_total if paid else 0
                order.status = OrderStatus.CANCELLED if paid else OrderStatus.EXPIRED
                order.refunded_total += owed
                order.updated_at = now
                given += await self._release(session, order, now)
                if paid:
                    refunds += await self.refunds.request(
                        session,
                        order_id=order.id,
                        customer_id=order.customer_id,
                        amount=owed,
                        cause=f"group_expired:{group_id}",
                        now=now,
                    )
                session.add(
                    OrderEvent(
                        order_id=order.id,
                        type="group_expired",
                        amount=owed,
                        detail={"group_id": group_id},
                        at=now,
                    )
                )
            audit.record(
                session,
                actor="sweeper",
                action="group.expired",
                subject_type="group",
                subject_id=group_id,
                detail={"orders": len(members), "refunds_requested": refunds},
            )
        await self._given_back(given)
        return 1, refunds


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
    """Cancel before shipping; the checkout gives back what the order held."""
    if order.status not in (OrderStatus.CREATED, OrderStatus.PAID):
        raise _refuse(order, "cancelled")
    refund = order.total - order.refunded_total if order.status == OrderStatus.PAID else 0
    order.status = OrderStatus.CANCELLED
    order.refunded_total += refund
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
