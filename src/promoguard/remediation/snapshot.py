"""An order's pricing snapshot, rebuilt from what checkout stored, as the engine's inputs.

Checkout records, per order: the lines in cart order (SKU, category, tags, quantity, unit price,
floor price) with what each was charged, the customer facts it was priced with (member tier,
first-order eligibility, group places, the coupons held, flash-sale units used, and the rules
left out as unavailable — rollout, stock, budget or limits), the pricing instant, the live
rules' stamp (on the quote) and one row per discount given. That is exactly what
:meth:`~promoguard.promotions.engine.RuleSet.quote` read, so pricing the snapshot again under
the rules live then gives back the recorded discounts, to the minor unit.

Everything is read as plain row tuples in a few set-based queries per batch (no ORM objects),
and the engine's inputs are built by their validating constructors (pydantic-core validates
these small models faster than ``model_construct`` skips it), so a snapshot is checked like any
cart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from orjson import loads
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.promotions.model import Cart, CartLine, Customer

__all__ = [
    "LineCache",
    "LineRecord",
    "OrderRecord",
    "PricingSnapshot",
    "cart_of",
    "customer_of",
    "load_snapshot",
    "load_snapshots",
]


class OrderRecord(NamedTuple):
    """The order's head as checkout stored it."""

    id: str
    customer_id: str
    status: str
    currency: str
    priced_at: datetime
    total: int
    refunded_total: int
    facts: dict[str, Any]
    """``orders.customer_facts``: what the customer was priced as."""
    stamp: int | None
    """The live rules' stamp the order was priced under (from its quote)."""


class LineRecord(NamedTuple):
    """One order line as checkout stored it."""

    sku: str
    category: str
    tags: tuple[str, ...]
    quantity: int
    unit_price: int
    floor_price: int | None
    final_amount: int
    refunded_quantity: int
    refunded_amount: int


Discount = tuple[str, int, int]
"""(rule id, rule version, amount) of one discount the order got."""


class PricingSnapshot(NamedTuple):
    """An order with everything needed to price it again."""

    order: OrderRecord
    lines: tuple[LineRecord, ...]
    discounts: tuple[Discount, ...]
    cart: Cart
    customer: Customer


LineCache = dict[tuple[Any, ...], CartLine]
"""Cart lines already built, by what they are made of: many orders share lines (the same SKU at
the same price and quantity), and a cart line is immutable."""

_LINE_CACHE_MAX = 100_000


def _cart_line(ln: LineRecord, cache: LineCache | None) -> CartLine:
    key = ln[:6]
    if cache is not None and (found := cache.get(key)) is not None:
        return found
    line = CartLine(
        sku=ln.sku,
        category=ln.category,
        tags=frozenset(ln.tags),
        unit_price=ln.unit_price,
        quantity=ln.quantity,
        floor_price=ln.floor_price,
    )
    if cache is not None:
        if len(cache) >= _LINE_CACHE_MAX:
            cache.clear()
        cache[key] = line
    return line


def cart_of(currency: str, lines: Sequence[LineRecord], cache: LineCache | None = None) -> Cart:
    """The cart the order was priced from, lines in cart order (``cache``: lines built before,
    shared by the orders of one plan)."""
    # The lines are validated one by one above; the cart's own check (one line per SKU) held when
    # checkout took it, and the stored lines are the same lines, so it is not run again.
    return Cart.model_construct(
        currency=currency, lines=tuple([_cart_line(ln, cache) for ln in lines])
    )


def customer_of(facts: Mapping[str, Any], *, member_tier: str | None = None) -> Customer:
    """The customer facts the order was priced with (``member_tier`` replaces the recorded
    tier when given: a degraded quote priced without one)."""
    # Built without validation: checkout validated these facts before it stored them, and the
    # fields are given their exact types here (a plan builds one per affected order).
    return Customer.model_construct(
        id=facts["id"],
        member_tier=member_tier if member_tier is not None else facts.get("member_tier"),
        first_order=bool(facts.get("first_order", False)),
        groups=frozenset(facts.get("groups") or ()),
        coupons=frozenset(facts.get("coupons") or ()),
        flash_sale_used=dict(facts.get("flash_sale_used") or {}),
        unavailable=dict(facts.get("unavailable") or {}),
    )


def _aware(value: datetime | str) -> datetime:
    """A stored instant: PostgreSQL gives it aware, SQLite as UTC text without an offset."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _mark(conn: Any) -> str:
    """The driver's positional parameter mark (``?`` for SQLite, ``%s`` for psycopg)."""
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


async def load_snapshots(
    session: AsyncSession,
    order_ids: Sequence[str],
    *,
    member_tiers: Mapping[str, str] | None = None,
    cache: LineCache | None = None,
) -> list[PricingSnapshot]:
    """Snapshots of these orders (three queries), in the order of ``order_ids``; ids with no
    order are left out.

    Args:
        session: a read session.
        order_ids: the orders (a batch: a few thousand at most per call).
        member_tiers: customer id -> tier to price with instead of the recorded one.
        cache: cart lines built for earlier batches of the same plan (filled as it goes).
    """
    if not order_ids:
        return []
    ids = list(order_ids)
    # Core rows on the session's connection: no ORM result machinery per row.
    conn = await session.connection()
    # The reads go to the driver as plain SQL: thousands of ids in an IN list cost SQLAlchemy
    # more to expand and compile per batch than the database takes to answer. JSON columns come
    # as text and are decoded here: orjson is several times quicker than the column type's
    # json.loads, and an empty tag list (most lines) needs no decoding at all.
    marks = ", ".join([_mark(conn)] * len(ids))
    heads = await conn.exec_driver_sql(
        "SELECT o.id, o.customer_id, o.status, o.currency, o.priced_at, o.total,"
        " o.refunded_total, CAST(o.customer_facts AS TEXT), q.rules_stamp"
        " FROM orders o LEFT OUTER JOIN quotes q ON q.id = o.quote_id"
        f" WHERE o.id IN ({marks})",
        tuple(ids),
    )
    head_rows: list[Any] = list(heads.all())
    by_id = {
        row[0]: OrderRecord(
            row[0], row[1], row[2], row[3], _aware(row[4]), row[5], row[6], loads(row[7]), row[8]
        )
        for row in head_rows
    }
    lines: dict[str, list[LineRecord]] = {order_id: [] for order_id in by_id}
    rows = await conn.exec_driver_sql(
        "SELECT order_id, sku, category, CAST(tags AS TEXT), quantity, unit_price, floor_price,"
        " final_amount, refunded_quantity, refunded_amount FROM order_lines"
        f" WHERE order_id IN ({marks}) ORDER BY order_id, position",
        tuple(ids),
    )
    line_rows: list[Any] = list(rows.all())
    for order_id, sku, cat, text, qty, unit, floor, final, rq, ra in line_rows:
        tags: tuple[str, ...] = () if text == "[]" else tuple(loads(text))
        lines[order_id].append(LineRecord(sku, cat, tags, qty, unit, floor, final, rq, ra))
    discounts: dict[str, list[Discount]] = {order_id: [] for order_id in by_id}
    found = await conn.exec_driver_sql(
        "SELECT order_id, rule_id, rule_version, amount FROM order_discounts"
        f" WHERE order_id IN ({marks}) ORDER BY id",
        tuple(ids),
    )
    discount_rows: list[Any] = list(found.all())
    for order_id, rule_id, version, amount in discount_rows:
        discounts[order_id].append((rule_id, version, amount))
    tiers = member_tiers or {}
    snapshots = []
    for order_id in ids:
        head = by_id.get(order_id)
        if head is None:
            continue
        own = lines[order_id]
        snapshots.append(
            PricingSnapshot(
                head,
                tuple(own),
                tuple(discounts[order_id]),
                cart_of(head.currency, own, cache),
                customer_of(head.facts, member_tier=tiers.get(head.customer_id)),
            )
        )
    return snapshots


async def load_snapshot(session: AsyncSession, order_id: str) -> PricingSnapshot | None:
    """One order's snapshot, or None when there is no such order."""
    found = await load_snapshots(session, [order_id])
    return found[0] if found else None
