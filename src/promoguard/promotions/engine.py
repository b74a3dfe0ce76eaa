"""The pricing engine: ``quote(cart, customer, rules, now) -> Quote``, pure and deterministic.

How a cart is priced, layer by layer (:class:`~promoguard.promotions.rules.Layer`):

1. **Item prices** (fixed price, flash sale, member price, group-buy). Each line takes the one
   lowest unit price among the rules that apply to it; these rules never stack with each other.
2. **Item count** (buy N get M, tiered percent), 3. **order** (threshold, percent off, first
   order), 4. **coupons** the customer holds. Within these layers rules apply one after another
   by priority (higher first, then id), each on what the lines cost after the rules before it.

An **exclusive** rule only touches lines no other rule has discounted, and closes the lines it
discounts to every later rule ("不与其他优惠同享"). Rule choice is greedy in this order, not a
search for the customer's best combination: the result is explainable and stable.

**The guard** runs inside every step: no line goes below its floor price (a discount that does not
fit on one line is spread over the other lines' headroom, and cut only when there is none), no
rule takes the lines in its scope below ``1 - max_discount_ratio`` of their list price, and no
order goes below ``1 - policy.max_discount_ratio`` of its list total. Every cut is a
:class:`~promoguard.promotions.model.GuardTrip` on the quote; the total is never negative.

Speed: rules are compiled once into a :class:`RuleSet` indexed by SKU, category and tag, and
coupons by id, so the cost of a quote grows with the rules that can match the cart, not with all
live rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timezone
from decimal import Decimal
from functools import cache
from operator import attrgetter, le
from typing import Any

from pydantic_core import TzInfo

from promoguard.money import BPS_WHOLE, allocate, formatter, percent_to_bps, price_after_bps
from promoguard.promotions.model import (
    Cart,
    CartLine,
    Customer,
    Explanation,
    GuardTrip,
    LineDiscount,
    OrderDiscount,
    Quote,
    QuoteLine,
)
from promoguard.promotions.rules import (
    BxGy,
    Coupon,
    FirstOrder,
    FixedPrice,
    FlashSale,
    GroupBuy,
    Layer,
    MemberPrice,
    PercentOff,
    Rule,
    Threshold,
    TieredPercent,
)

__all__ = ["PricingError", "PricingPolicy", "RuleSet", "quote"]


_Outcome = tuple[int, list[int] | None, str] | str
"""An evaluator's answer: (discount, per-line weights or None, why), or why nothing applies."""

_new = tuple.__new__
"""Builds an output named tuple from a plain tuple of its fields: the same value as calling the
class, without a Python-level ``__new__`` frame (the engine builds a few dozen per quote)."""

_RANK = attrgetter("rank")

_ITEM_LABEL = {
    "fixed_price": "special price",
    "flash_sale": "flash-sale price",
    "member_price": "member price",
    "group_buy": "group-buy price",
}


@cache
def _pct(bps: int) -> str:
    """Basis points as a percent for people: 1250 -> "12.5%"."""
    whole, part = divmod(bps, 100)
    return f"{whole}.{part:02d}".rstrip("0").rstrip(".") + "%" if part else f"{whole}%"


def _comparable(moment: datetime) -> datetime:
    """``moment`` as the engine compares it with others: in UTC when its zone has a fixed offset.

    Two aware datetimes in different zones compare by their instants, which makes Python ask
    both zones for their offsets every time; in one shared zone object they compare at once.
    For a fixed-offset zone the instant is the whole story, so moving it to UTC changes no
    comparison's answer. Any other zone (say a ``ZoneInfo``, where two times of the *same* zone
    compare by wall clock) is left as it is.
    """
    return moment.astimezone(UTC) if type(moment.tzinfo) in _FIXED_OFFSET else moment


_FIXED_OFFSET = (timezone, TzInfo)


class PricingError(ValueError):
    """The engine was called with something it cannot price (a naive ``now``)."""


@dataclass(frozen=True, slots=True)
class PricingPolicy:
    """Shop-wide limits the guard enforces on every quote."""

    max_discount_ratio: Decimal = Decimal("0.9")
    """No order is charged less than ``1 - max_discount_ratio`` of its list total."""

    def __post_init__(self) -> None:
        if not Decimal(0) < self.max_discount_ratio <= 1:
            raise PricingError("max_discount_ratio must be in (0, 1]")


def _bps(percent: Decimal | None) -> int:
    return 0 if percent is None else percent_to_bps(percent)


def _ratio_bps(ratio: Decimal) -> int:
    return int(ratio * BPS_WHOLE)


class _Compiled:
    """A rule prepared for pricing: the spec plus the exact integers the engine needs."""

    __slots__ = (
        "all_items",
        "categories",
        "currency",
        "ended",
        "ends",
        "everywhere",
        "ex_cats",
        "ex_skus",
        "ex_tags",
        "exclusive",
        "has_exclusions",
        "id",
        "item",
        "kind",
        "layer",
        "not_started",
        "param",
        "rank",
        "ratio_bps",
        "skus",
        "spec",
        "starts",
        "tags",
        "version",
    )

    def __init__(self, spec: Rule) -> None:
        self.spec = spec
        self.id = spec.id
        self.version = spec.version
        self.kind = spec.kind
        self.layer = spec.LAYER
        self.item = spec.LAYER is Layer.ITEM
        self.rank = 0
        self.exclusive = spec.exclusive
        self.ratio_bps = (
            None if spec.max_discount_ratio is None else _ratio_bps(spec.max_discount_ratio)
        )
        # The window, ready to compare with the pricing instant, and the words for each side.
        self.starts = None if spec.valid_from is None else _comparable(spec.valid_from)
        self.ends = None if spec.valid_until is None else _comparable(spec.valid_until)
        self.not_started = (
            "" if spec.valid_from is None else f"not started: starts {spec.valid_from.isoformat()}"
        )
        self.ended = "" if spec.valid_until is None else f"ended {spec.valid_until.isoformat()}"
        self.currency = spec.currency
        self.ex_skus = spec.scope.exclude_skus
        self.ex_cats = spec.scope.exclude_categories
        self.ex_tags = spec.scope.exclude_tags
        self.has_exclusions = bool(self.ex_skus or self.ex_cats or self.ex_tags)
        # The scope again, read from the spec once: a pydantic attribute costs more to read.
        self.all_items = spec.scope.all_items
        self.skus = spec.scope.skus
        self.categories = spec.scope.categories
        self.tags = spec.scope.tags
        self.everywhere = self.all_items and not self.has_exclusions
        # Evaluators run only when the cart is in the rule's currency: its amounts can be
        # written out now, once, instead of on every quote.
        self.param: Any = _PARAMS[type(spec)](spec, formatter(spec.currency))

    def covers(self, line: CartLine) -> bool:
        """Tell whether the rule's scope takes in this line (what the indexes answer in bulk)."""
        if self.has_exclusions and self.excludes(line):
            return False
        return (
            self.all_items
            or line.sku in self.skus
            or line.category in self.categories
            or bool(self.tags and line.tags & self.tags)
        )

    def excludes(self, line: CartLine) -> bool:
        """Tell whether the scope's exclusions take this line out."""
        return (
            line.sku in self.ex_skus
            or line.category in self.ex_cats
            or bool(self.ex_tags and line.tags & self.ex_tags)
        )


_Format = Callable[[int], str]


def _threshold_param(s: Threshold, fmt: _Format) -> tuple[Any, ...]:
    # Each tier with its words ("满200.00减20.00"; a repeating one adds 每 in front).
    tiers = tuple(
        (t.min_spend, t.discount, f"满{fmt(t.min_spend)}减{fmt(t.discount)}") for t in s.tiers
    )
    capped = "" if s.repeat_cap is None else f", capped at {fmt(s.repeat_cap)}"
    return tiers, s.repeat, s.repeat_cap, f" < {fmt(s.tiers[0].min_spend)}", capped


def _first_order_param(s: FirstOrder, fmt: _Format) -> tuple[Any, ...]:
    saves = "" if s.discount is None else f"first order, {fmt(s.discount)} off"
    return s.discount, _bps(s.percent), s.cap, s.min_spend, f" < {fmt(s.min_spend)}", saves


def _coupon_param(s: Coupon, fmt: _Format) -> tuple[Any, ...]:
    short = f"coupon needs {fmt(s.min_spend)} in scope, cart has "
    if s.discount is None:
        saves = ""
    elif s.benefit == "threshold":
        saves = f"coupon 满{fmt(s.min_spend)}减{fmt(s.discount)}"
    else:
        saves = f"no-threshold coupon, {fmt(s.discount)} off"
    return s.benefit, s.min_spend, s.discount, _bps(s.percent), s.cap, short, saves


_PARAMS: dict[type, Callable[[Any, _Format], Any]] = {
    Threshold: _threshold_param,
    PercentOff: lambda s, fmt: (_bps(s.percent), s.cap, s.min_spend, f" < {fmt(s.min_spend)}"),
    TieredPercent: lambda s, _: tuple((t.min_quantity, _bps(t.percent)) for t in s.tiers),
    FixedPrice: lambda s, _: s.price,
    BxGy: lambda s, _: (s.buy, s.get, _bps(s.percent), s.max_applications),
    MemberPrice: lambda s, _: {o.tier: (o.price, _bps(o.percent)) for o in s.offers},
    FirstOrder: _first_order_param,
    GroupBuy: lambda s, _: s.price,
    FlashSale: lambda s, _: (s.price, s.per_user_limit),
    Coupon: _coupon_param,
}


class RuleSet:
    """Live rules compiled and indexed once; price many carts against it with :meth:`quote`."""

    def __init__(self, rules: Iterable[Rule], policy: PricingPolicy | None = None) -> None:
        self.policy = policy or PricingPolicy()
        self._max_bps = _ratio_bps(self.policy.max_discount_ratio)
        compiled = sorted(
            (_Compiled(spec) for spec in rules),
            key=lambda c: (c.layer, -c.spec.priority, c.id, c.version),
        )
        self.rules: tuple[_Compiled, ...] = tuple(compiled)
        self.kinds = frozenset(rule.kind for rule in compiled)
        """The kinds of rule in the set (a caller can skip fetching facts no rule needs)."""
        self._specs = {rule.id: rule.spec for rule in compiled}
        by_sku: dict[str, list[_Compiled]] = {}
        by_category: dict[str, list[_Compiled]] = {}
        by_tag: dict[str, list[_Compiled]] = {}
        self._everywhere: list[_Compiled] = []
        self._coupons: dict[str, _Compiled] = {}
        ids = [rule.id for rule in compiled]
        if len(set(ids)) != len(ids):
            twice = sorted({i for i in ids if ids.count(i) > 1})
            raise PricingError(f"one live version per rule: {', '.join(twice)} appear twice")
        for rank, rule in enumerate(compiled):
            rule.rank = rank
            if rule.kind == "coupon":
                # A coupon can only apply when the customer holds it: look it up by id.
                self._coupons[rule.id] = rule
                continue
            if rule.all_items:
                self._everywhere.append(rule)
            for sku in rule.skus:
                by_sku.setdefault(sku, []).append(rule)
            for category in rule.categories:
                by_category.setdefault(category, []).append(rule)
            for tag in rule.tags:
                by_tag.setdefault(tag, []).append(rule)
        # Tuples: a line's candidates are then one concatenation, in rank order per index.
        self._by_sku = {sku: tuple(found) for sku, found in by_sku.items()}
        self._by_category = {cat: tuple(found) for cat, found in by_category.items()}
        self._by_tag = {tag: tuple(found) for tag, found in by_tag.items()}

    def __len__(self) -> int:
        return len(self.rules)

    def spec(self, rule_id: str) -> Rule | None:
        """The spec of the rule with this id, if it is in the set."""
        return self._specs.get(rule_id)

    def _match_wide(
        self, lines: Sequence[CartLine], customer: Customer
    ) -> dict[_Compiled, list[int]]:
        """Match the rules no index holds: store-wide ones and the coupons the customer holds."""
        matches: dict[_Compiled, list[int]] = {}
        every_line = list(range(len(lines)))
        for rule in self._everywhere:
            if not rule.has_exclusions:
                matches[rule] = every_line.copy()
                continue
            hit = [i for i, line in enumerate(lines) if not rule.excludes(line)]
            if hit:
                matches[rule] = hit
        for coupon_id in sorted(customer.coupons):
            coupon = self._coupons.get(coupon_id)
            if coupon is None:
                continue
            if coupon.everywhere:
                matches[coupon] = every_line.copy()
                continue
            hit = [i for i, line in enumerate(lines) if coupon.covers(line)]
            if hit:
                matches[coupon] = hit
        return matches

    def _match(self, lines: Sequence[CartLine], customer: Customer) -> dict[_Compiled, list[int]]:
        """Map every rule whose scope takes in a line to the indices of those lines (in order).

        Apart from :meth:`_match_wide`, rules are found through the SKU, category and tag indexes.
        """
        matches = self._match_wide(lines, customer)
        by_sku, by_cat, by_tag = self._by_sku, self._by_category, self._by_tag
        for i, line in enumerate(lines):
            found = by_sku.get(line.sku, ()) + by_cat.get(line.category, ())
            tags = line.tags
            # A frozenset iterates in an order that depends on the process's hash seed; sorted,
            # two workers explain the same cart in the same order.
            for tag in sorted(tags) if len(tags) > 1 else tags:
                found += by_tag.get(tag, ())
            for rule in found:
                if rule.has_exclusions and rule.excludes(line):
                    continue
                seen = matches.get(rule)
                if seen is None:
                    matches[rule] = [i]
                elif seen[-1] != i:  # found through both its SKU and its category, say
                    seen.append(i)
        return matches

    def quote(self, cart: Cart, customer: Customer, now: datetime) -> Quote:
        """Price ``cart`` for ``customer`` at ``now`` (timezone-aware). Pure and deterministic."""
        if now.tzinfo is None or now.utcoffset() is None:
            raise PricingError("now must be timezone-aware")
        return _Pricing(self, cart, customer, now).run()


def quote(
    cart: Cart,
    customer: Customer,
    rules: RuleSet | Iterable[Rule],
    now: datetime,
    *,
    policy: PricingPolicy | None = None,
) -> Quote:
    """Price a cart under the given rules; pass a :class:`RuleSet` to price many carts fast.

    Args:
        cart: the lines to price.
        customer: the customer's facts (tier, first order, groups, coupons held).
        rules: rule specs, or a RuleSet compiled from them (``policy`` is then the RuleSet's).
        now: the pricing instant, timezone-aware; rules outside their window do not apply.
        policy: shop-wide guard limits when ``rules`` are specs.

    Returns:
        The quote, with per-line allocations, guard trips and an explanation.
    """
    ruleset = rules if isinstance(rules, RuleSet) else RuleSet(rules, policy)
    return ruleset.quote(cart, customer, now)


def _spread(total: int, weights: Sequence[int], caps: Sequence[int]) -> list[int]:
    """Allocate ``total`` by ``weights`` without any part above its cap (``total <= sum(caps)``).

    Lines whose proportional share would exceed their cap are fixed at the cap and the rest is
    spread again over the others, by weight while any has weight and by headroom after that.
    """
    parts = allocate(total, weights)
    if weights == caps or all(map(le, parts, caps)):
        return parts  # (a part never exceeds its weight, so weights == caps always fits)
    out = [0] * len(weights)
    left = total
    open_ = list(range(len(weights)))
    while True:
        w = [weights[j] for j in open_]
        if not any(w):
            w = [caps[j] for j in open_]
        sub = allocate(left, w)
        over = [j for j, p in zip(open_, sub, strict=True) if p > caps[j]]
        if not over:
            for j, p in zip(open_, sub, strict=True):
                out[j] = p
            return out
        for j in over:
            out[j] = caps[j]
            left -= caps[j]
            open_.remove(j)


@dataclass(slots=True)
class _ItemPrice:
    """The item-layer price a line takes: ``units`` of it at ``unit``, the rest at list."""

    rule: _Compiled
    unit: int
    units: int

    def amount(self, line: CartLine) -> int:
        """What the line costs at this price."""
        return self.unit * self.units + line.unit_price * (line.quantity - self.units)

    def segments(self, line: CartLine) -> list[tuple[int, int]]:
        """The line's units as (unit price, count), cheapest first."""
        rest = line.quantity - self.units
        return sorted(
            [(self.unit, self.units), (line.unit_price, rest)]
            if rest
            else [(self.unit, self.units)]
        )


class _Pricing:
    """The state of one quote while the layers apply; thrown away afterwards."""

    def __init__(self, ruleset: RuleSet, cart: Cart, customer: Customer, now: datetime) -> None:
        self.customer = customer
        self.unavailable = customer.unavailable
        self.clock = _comparable(now)
        self.cur = currency = cart.currency
        self.fmt = formatter(currency)
        # Lines are priced in SKU order and put back in cart order at the end: every tie (a
        # rounding remainder, equally cheap units) then breaks the same way however the cart
        # lists its lines, so the line order can never change what anyone pays.
        in_cart = cart.lines
        skus = [line.sku for line in in_cart]
        self.cart_order = cart_order = sorted(range(len(skus)), key=skus.__getitem__)
        self.lines = lines = tuple([in_cart[i] for i in cart_order])
        heads: list[tuple[str, int, int]] = []
        listed: list[int] = []
        floors: list[int] = []
        for line, i in zip(lines, cart_order, strict=True):
            unit, quantity, floor = line.unit_price, line.quantity, line.floor_price
            price = unit * quantity
            heads.append((skus[i], quantity, unit))
            listed.append(price)
            floors.append(0 if floor is None else min(floor * quantity, price))
        self.heads = heads
        """Each line's sku, quantity and unit price: how its QuoteLine starts."""
        self.listed = listed
        self.floors = floors
        self.amount = list(listed)
        self.segments: dict[int, list[tuple[int, int]]] = {}
        """Lines whose units differ in price after the item layer: (unit price, count), cheapest
        first. Other lines' units all cost their unit price."""
        self.closed: set[int] = set()
        """Lines an exclusive rule discounted: no later rule touches them. (A line some rule
        discounted is one whose ``line_discounts`` list is not empty.)"""
        self.list_total = sum(listed)
        self.order_allowed = self.list_total * ruleset._max_bps // BPS_WHOLE
        self.given = 0
        self.line_discounts: list[list[LineDiscount]] = [[] for _ in lines]
        self.discounts: list[OrderDiscount] = []
        self.trips: list[GuardTrip] = []
        self.notes: list[Explanation] = []
        self.matches = ruleset._match(lines, customer)

    def note(self, rule: _Compiled, applied: bool, message: str) -> None:
        self.notes.append(_new(Explanation, (rule.id, rule.version, applied, message)))

    def trip(self, rule: _Compiled, limit: str, requested: int, granted: int, why: str) -> None:
        self.trips.append(_new(GuardTrip, (rule.id, limit, requested, granted, why)))

    def run(self) -> Quote:
        in_force = self._in_force
        active = [rule for rule in self.matches if in_force(rule)]
        active.sort(key=_RANK)
        item_rules = [rule for rule in active if rule.item]
        if item_rules:
            self._item_layer(item_rules)
        apply = self._apply
        for rule in active:
            if not rule.item:
                apply(rule)
        in_cart_order = [0] * len(self.cart_order)
        for pos, i in enumerate(self.cart_order):
            in_cart_order[i] = pos
        heads, listed, amount, line_discounts = (
            self.heads,
            self.listed,
            self.amount,
            self.line_discounts,
        )
        quote_lines = tuple(
            [
                _new(QuoteLine, heads[i] + (listed[i], amount[i], tuple(line_discounts[i])))
                for i in in_cart_order
            ]
        )
        total = sum(amount)
        return _new(
            Quote,
            (
                self.cur,
                quote_lines,
                self.list_total,
                self.list_total - total,
                total,
                tuple(self.discounts),
                tuple(self.trips),
                tuple(self.notes),
            ),
        )

    def _in_force(self, rule: _Compiled) -> bool:
        if rule.currency != self.cur:
            self.note(rule, False, f"rule is priced in {rule.currency}, the cart in {self.cur}")
            return False
        if rule.starts is not None and self.clock < rule.starts:
            self.note(rule, False, rule.not_started)
            return False
        if rule.ends is not None and self.clock >= rule.ends:
            self.note(rule, False, rule.ended)
            return False
        unavailable = self.unavailable
        if unavailable and (why := unavailable.get(rule.id)) is not None:
            self.note(rule, False, f"not available: {why}")
            return False
        return True

    # -- layer 1: item prices ---------------------------------------------------------------

    def _unit_offer(self, rule: _Compiled) -> str | int | None:
        """The unit price this rule offers this customer (None: it depends on the line), or why
        it offers none."""
        kind, param, customer = rule.kind, rule.param, self.customer
        if kind == "member_price":
            tier = customer.member_tier
            if tier is None or tier not in param:
                return f"no member price for tier {tier or 'none'}"
            return None
        if kind == "group_buy" and rule.id not in customer.groups:
            return "not in a complete group for this group-buy"
        if kind == "flash_sale":
            price, limit = param
            if limit - customer.flash_sale_used.get(rule.id, 0) <= 0:
                return f"per-customer limit of {limit} units reached"
            return int(price)
        return int(param)

    def _item_layer(self, rules: list[_Compiled]) -> None:
        """Give each line the lowest unit price on offer; a line takes one item-price rule.

        Unlimited prices (special, member, group-buy) are settled first. Flash sales come after,
        in rank order, because their units are limited per customer: a flash sale puts its units
        on the lines where it beats the line's best price so far by the most per unit (then by
        SKU), so neither the cart's line order nor the rule ids decide who gets them.
        """
        lines = self.lines
        best: dict[int, _ItemPrice] = {}
        offers: list[tuple[_Compiled, int | None]] = []
        for rule in rules:
            offer = self._unit_offer(rule)
            if isinstance(offer, str):
                self.note(rule, False, offer)
            else:
                offers.append((rule, offer))
        self._lowest_prices(offers, best)
        for rule, offer in offers:
            if rule.kind == "flash_sale":
                self._flash(rule, int(offer or 0), best)
        won: dict[_Compiled, dict[int, int]] = {}
        for i in sorted(best):
            item, line = best[i], lines[i]
            won.setdefault(item.rule, {})[i] = self.listed[i] - item.amount(line)
            self.segments[i] = item.segments(line)
        for rule, _ in offers:
            parts = won.get(rule)
            if parts is None:
                self.note(rule, False, "no saving: a lower or equal price applies to its lines")
                continue
            skus = ", ".join(lines[i].sku for i in parts)
            label = f"{_ITEM_LABEL[rule.kind]} on {skus}"
            self._grant(rule, sum(parts.values()), list(parts), list(parts.values()), label)

    def _lowest_prices(
        self, offers: list[tuple[_Compiled, int | None]], best: dict[int, _ItemPrice]
    ) -> None:
        """Settle the unlimited item prices: each line its lowest."""
        lines = self.lines
        for rule, offer in offers:
            if rule.kind == "flash_sale":
                continue
            for i in self.matches[rule]:
                line = lines[i]
                if offer is None:
                    price, off_bps = rule.param[self.customer.member_tier]
                    unit = price if price is not None else price_after_bps(line.unit_price, off_bps)
                else:
                    unit = offer
                current = best.get(i)
                if unit < (line.unit_price if current is None else current.unit):
                    best[i] = _ItemPrice(rule, unit, line.quantity)

    def _flash(self, rule: _Compiled, price: int, best: dict[int, _ItemPrice]) -> None:
        """Place one flash sale's limited units (see :meth:`_item_layer`)."""
        lines = self.lines
        left = rule.param[1] - self.customer.flash_sale_used.get(rule.id, 0)

        def unit_now(i: int) -> int:
            current = best.get(i)
            return lines[i].unit_price if current is None else current.unit

        order = sorted(self.matches[rule], key=lambda i: (price - unit_now(i), lines[i].sku))
        for i in order:
            if left <= 0 or price >= unit_now(i):
                break
            line = lines[i]
            offer = _ItemPrice(rule, price, min(line.quantity, left))
            current = best.get(i)
            if current is not None and offer.amount(line) >= current.amount(line):
                continue
            # (Units an earlier flash sale had placed on this line are left unused.)
            best[i] = offer
            left -= offer.units

    # -- layers 2-4 -------------------------------------------------------------------------

    def _apply(self, rule: _Compiled) -> None:
        closed = self.closed
        in_scope = self.matches[rule]
        idx = [i for i in in_scope if i not in closed] if closed else in_scope.copy()
        if not idx:
            self.note(rule, False, "every line in scope already takes an exclusive offer")
            return
        if rule.exclusive:
            discounted = self.line_discounts
            idx = [i for i in idx if not discounted[i]]
            if not idx:
                self.note(rule, False, "exclusive, and every line in scope is already discounted")
                return
        outcome = _EVALUATE[rule.kind](self, rule, idx)
        if isinstance(outcome, str):
            self.note(rule, False, outcome)
            return
        requested, weights, why = outcome
        if requested <= 0:
            self.note(rule, False, f"{why}: rounds down to nothing")
            return
        self._grant(rule, requested, idx, weights, why)

    def _grant(
        self,
        rule: _Compiled,
        requested: int,
        idx: list[int],
        weights: list[int] | None,
        why: str,
    ) -> None:
        """Apply the guard to a rule's discount, split it over its lines and record it.

        ``weights`` of None means one discount on the lines together: it is spread over their
        headroom above the floor prices. Per-line amounts (item prices, buy N get M) are capped
        line by line instead, so one line's cut never lands on another line.
        """
        amount = self.amount
        floors = self.floors
        caps = [amount[i] - floors[i] for i in idx]  # the guard keeps every line >= its floor
        shares = (
            None if weights is None else [min(w, c) for w, c in zip(weights, caps, strict=True)]
        )
        granted = self._guard(rule, requested, idx, sum(caps) if shares is None else sum(shares))
        if granted <= 0:
            self.note(rule, False, f"held back by the guard (asked {self.fmt(requested)})")
            return
        if shares is None:
            parts = _spread(granted, [amount[i] for i in idx], caps)
        else:
            parts = allocate(granted, shares)
        allocations = [0] * len(amount)  # in cart order, like the quote's lines
        cart_order, line_discounts = self.cart_order, self.line_discounts
        rule_id, version, kind = rule.id, rule.version, rule.kind
        for i, part in zip(idx, parts, strict=True):
            if part:
                amount[i] -= part
                allocations[cart_order[i]] = part
                line_discounts[i].append(_new(LineDiscount, (rule_id, version, kind, part)))
        if rule.exclusive:
            self.closed.update(i for i, part in zip(idx, parts, strict=True) if part)
        self.given += granted
        self.discounts.append(
            _new(
                OrderDiscount,
                (rule_id, version, kind, rule.layer, granted, tuple(allocations)),
            )
        )
        self.notes.append(
            _new(Explanation, (rule_id, version, True, f"{why}: saves {self.fmt(granted)}"))
        )

    def _guard(self, rule: _Compiled, requested: int, idx: list[int], available: int) -> int:
        """How much of ``requested`` the guard lets the rule give, with a trip for every cut;
        ``available`` is what the lines in scope can give above their floor prices."""
        granted = requested
        if available < requested:
            self.trip(
                rule,
                "line_floor",
                requested,
                available,
                f"the lines in scope can give {self.fmt(available)} above their floor prices",
            )
            granted = available
        if rule.ratio_bps is not None:
            list_sum = sum(map(self.listed.__getitem__, idx))
            room = max(0, list_sum * rule.ratio_bps // BPS_WHOLE - list_sum + self.base(idx))
            if granted > room:
                self.trip(
                    rule,
                    "rule_max_ratio",
                    granted,
                    room,
                    f"the rule may take at most {rule.spec.max_discount_ratio} of "
                    f"{self.fmt(list_sum)} list price in its scope",
                )
                granted = room
        order_room = max(0, self.order_allowed - self.given)
        if granted > order_room:
            self.trip(
                rule,
                "order_max_ratio",
                granted,
                order_room,
                f"the order may not go below {self.fmt(self.list_total - self.order_allowed)}",
            )
            granted = order_room
        return granted

    # -- evaluators: a discount and optional per-line weights, or the reason there is none -----

    def base(self, idx: list[int]) -> int:
        return sum(map(self.amount.__getitem__, idx))

    def threshold(self, rule: _Compiled, idx: list[int]) -> _Outcome:
        tiers, repeat, repeat_cap, short, capped = rule.param
        base = self.base(idx)
        if base < tiers[0][0]:
            return f"threshold not met: {self.fmt(base)}{short}"
        if repeat:
            step, each, words = tiers[0]
            times = base // step
            why = f"每{words} ×{times} on {self.fmt(base)}"
            if repeat_cap is not None and times * each > repeat_cap:
                return repeat_cap, None, why + capped
            return times * each, None, why
        _, saving, words = [t for t in tiers if base >= t[0]][-1]
        return saving, None, f"{words} reached with {self.fmt(base)}"

    def percent_off(self, rule: _Compiled, idx: list[int]) -> _Outcome:
        off_bps, cap, min_spend, short = rule.param
        base = self.base(idx)
        if base < min_spend:
            return f"minimum spend not met: {self.fmt(base)}{short}"
        return self._percent(base, off_bps, cap)

    def _percent(self, base: int, off_bps: int, cap: int | None) -> tuple[int, None, str]:
        saving = base * off_bps // BPS_WHOLE
        why = f"{_pct(off_bps)} off {self.fmt(base)}"
        if cap is not None and saving > cap:
            return cap, None, f"{why}, capped at {self.fmt(cap)}"
        return saving, None, why

    def first_order(self, rule: _Compiled, idx: list[int]) -> _Outcome:
        if not self.customer.first_order:
            return "not a first order for this customer's identity"
        discount, off_bps, cap, min_spend, short, saves = rule.param
        base = self.base(idx)
        if base < min_spend:
            return f"minimum spend not met: {self.fmt(base)}{short}"
        if discount is not None:
            return int(discount), None, saves
        return self._percent(base, off_bps, cap)

    def tiered_percent(self, rule: _Compiled, idx: list[int]) -> _Outcome:
        lines = self.lines
        units = sum(lines[i].quantity for i in idx)
        reached = [t for t in rule.param if units >= t[0]]
        if not reached:
            return f"{units} unit(s) in scope, the first tier needs {rule.param[0][0]}"
        need, off_bps = reached[-1]
        base = self.base(idx)
        return base * off_bps // BPS_WHOLE, None, f"{units} units ≥ {need}: {_pct(off_bps)} off"

    def bxgy(self, rule: _Compiled, idx: list[int]) -> _Outcome:
        buy, get, off_bps, max_apps = rule.param
        lines, amount = self.lines, self.amount
        units = sum(lines[i].quantity for i in idx)
        applications = units // (buy + get)
        if max_apps is not None:
            applications = min(applications, max_apps)
        if not applications:
            return f"{units} unit(s) in scope, needs {buy + get} for buy {buy} get {get}"
        why = f"buy {buy} get {get} at {_pct(off_bps)} off, ×{applications}"
        # The discounted units are the cheapest ones in scope. A line's units can differ in
        # price (a flash sale on some of them); each is valued at its item-layer price scaled by
        # what the line costs now. Ties go to the earlier line (same value, same discount).
        units_by_value = []
        for pos, i in enumerate(idx):
            segments = self.segments.get(i) or [(lines[i].unit_price, lines[i].quantity)]
            seg_total = sum(price * count for price, count in segments)
            for price, count in segments:
                value = price * amount[i] // seg_total if seg_total else 0
                units_by_value.append((value, pos, count))
        units_by_value.sort()
        free = applications * get
        weights = [0] * len(idx)
        room = [amount[i] - self.floors[i] for i in idx]
        # First the cheapest units whose line can give their whole discount above its floor
        # price; only if too few can, the cheapest of the rest (and the guard cuts those).
        unused = [count for _, _, count in units_by_value]
        for must_fit in (True, False):
            for n, (value, pos, _) in enumerate(units_by_value):
                each = value * off_bps // BPS_WHOLE
                take = min(free, unused[n])
                if must_fit and each:
                    take = min(take, room[pos] // each)
                weights[pos] += take * each
                room[pos] -= take * each
                unused[n] -= take
                free -= take
                if not free:
                    return sum(weights), weights, why
        return sum(weights), weights, why

    def coupon(self, rule: _Compiled, idx: list[int]) -> _Outcome:
        benefit, min_spend, discount, off_bps, cap, short, saves = rule.param
        base = self.base(idx)
        if base < min_spend:
            return f"{short}{self.fmt(base)}"
        if benefit == "percent":
            return self._percent(base, off_bps, cap)
        return int(discount), None, saves


_EVALUATE: dict[str, Callable[[_Pricing, _Compiled, list[int]], _Outcome]] = {
    "threshold": _Pricing.threshold,
    "percent_off": _Pricing.percent_off,
    "first_order": _Pricing.first_order,
    "tiered_percent": _Pricing.tiered_percent,
    "bxgy": _Pricing.bxgy,
    "coupon": _Pricing.coupon,
}
