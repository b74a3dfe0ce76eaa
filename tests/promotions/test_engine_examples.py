"""Worked examples of the pricing engine, written the way a shop describes its promotions.

Every amount a shop would say is written in yuan through ``y("180.00")``; the engine works in fen.
Each example asserts the exact total, and where it matters the per-line allocation, the guard trips
and the words of the explanation. ``price`` also checks the quote's books on every call: each
discount's allocations sum to its amount, each line's discounts sum to what the line lost, and the
total is the list total less the discounts, never negative.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from promoguard.money import parse_minor
from promoguard.promotions.engine import PricingError, PricingPolicy, RuleSet, quote
from promoguard.promotions.model import Cart, CartLine, Customer, Quote
from promoguard.promotions.rules import Layer, Rule, parse_rule

CST = timezone(timedelta(hours=8))
NOW = datetime(2026, 11, 11, 20, 0, tzinfo=CST)
"""双11, eight in the evening, Beijing time."""

ALL: dict[str, Any] = {"all_items": True}


# -- builders ---------------------------------------------------------------------------------


def y(text: str) -> int:
    """A shop's amount in yuan as fen: ``y("180.00") == 18000``."""
    return parse_minor(text)


def item(
    sku: str,
    price: str,
    qty: int = 1,
    *,
    category: str = "general",
    tags: Iterable[str] = (),
    floor: str | None = None,
) -> CartLine:
    """A cart line at a list unit price in yuan, optionally with a floor unit price in yuan."""
    return CartLine(
        sku=sku,
        category=category,
        tags=frozenset(tags),
        unit_price=y(price),
        quantity=qty,
        floor_price=None if floor is None else y(floor),
    )


def cart(*lines: CartLine, currency: str = "CNY") -> Cart:
    return Cart(currency=currency, lines=lines)


def customer(**facts: Any) -> Customer:
    return Customer(id="c-1", **facts)


def rule(rule_id: str, kind: str, *, scope: dict[str, Any] | None = None, **fields: Any) -> Rule:
    """A validated rule spec; store-wide unless a scope is given."""
    return parse_rule({"id": rule_id, "kind": kind, "scope": scope or ALL, **fields})


def tiers(*pairs: tuple[str, str]) -> list[dict[str, int]]:
    """满减 tiers from (满, 减) pairs in yuan."""
    return [{"min_spend": y(spend), "discount": y(off)} for spend, off in pairs]


def coupon(rule_id: str, benefit: str, **fields: Any) -> Rule:
    fields.setdefault("per_user_limit", 1)
    fields.setdefault("quantity", 1000)
    return rule(rule_id, "coupon", benefit=benefit, **fields)


def check_books(q: Quote) -> None:
    """The invariants every quote keeps, whatever the rules."""
    assert q.total == q.list_total - q.discount_total
    assert q.total >= 0
    assert q.total == sum(line.final_amount for line in q.lines)
    assert q.list_total == sum(line.list_amount for line in q.lines)
    for line in q.lines:
        assert line.list_amount == line.unit_price * line.quantity
        assert sum(d.amount for d in line.discounts) == line.list_amount - line.final_amount
        assert line.final_amount >= 0
    for d in q.discounts:
        assert len(d.allocations) == len(q.lines)
        assert sum(d.allocations) == d.amount
        assert all(part >= 0 for part in d.allocations)
    for i, line in enumerate(q.lines):
        from_orders = [(d.rule_id, d.allocations[i]) for d in q.discounts if d.allocations[i]]
        assert [(d.rule_id, d.amount) for d in line.discounts] == from_orders
    assert sum(d.amount for d in q.discounts) == q.discount_total


def price(
    the_cart: Cart,
    rules: Iterable[Rule] | RuleSet,
    who: Customer | None = None,
    *,
    policy: PricingPolicy | None = None,
) -> Quote:
    q = quote(the_cart, who or customer(), rules, NOW, policy=policy)
    check_books(q)
    return q


def said(q: Quote, rule_id: str) -> list[tuple[bool, str]]:
    """What the explanation says about one rule, in order."""
    return [(e.applied, e.message) for e in q.explanation if e.rule_id == rule_id]


def refused_because(q: Quote, rule_id: str) -> str:
    """The one reason a rule was refused (a refused rule is explained once, never applied)."""
    notes = said(q, rule_id)
    assert len(notes) == 1
    assert not notes[0][0]
    return notes[0][1]


def finals(q: Quote) -> list[int]:
    return [line.final_amount for line in q.lines]


def allocations(q: Quote, rule_id: str) -> tuple[int, ...]:
    (found,) = [d for d in q.discounts if d.rule_id == rule_id]
    return found.allocations


# -- 满减: threshold ---------------------------------------------------------------------------


def test_man_200_jian_50_on_a_230_cart_pays_180():
    q = price(cart(item("A", "230.00")), [rule("mj", "threshold", tiers=tiers(("200", "50")))])

    assert q.list_total == y("230.00")
    assert q.discount_total == y("50.00")
    assert q.total == y("180.00")
    assert q.fmt(q.total) == "180.00"
    assert said(q, "mj") == [(True, "满200.00减50.00 reached with 230.00: saves 50.00")]
    (d,) = q.discounts
    assert (d.rule_id, d.kind, d.layer, d.amount, d.allocations) == (
        "mj",
        "threshold",
        Layer.ORDER,
        y("50.00"),
        (y("50.00"),),
    )
    assert q.lines[0].discounts[0].amount == y("50.00")
    assert q.trips == ()


def test_man_200_jian_50_on_a_180_cart_gives_nothing_and_says_why():
    q = price(cart(item("A", "180.00")), [rule("mj", "threshold", tiers=tiers(("200", "50")))])

    assert q.total == y("180.00")
    assert q.discount_total == 0
    assert q.discounts == ()
    assert said(q, "mj") == [(False, "threshold not met: 180.00 < 200.00")]


@pytest.mark.parametrize(
    ("cart_total", "pays"),
    [
        ("199.99", "199.99"),
        ("200.00", "180.00"),
        ("299.99", "279.99"),
        ("300.00", "250.00"),
        ("499.99", "449.99"),
        ("520.00", "420.00"),
    ],
)
def test_multi_tier_man_jian_takes_the_highest_tier_reached(cart_total, pays):
    rules = [rule("mj", "threshold", tiers=tiers(("200", "20"), ("300", "50"), ("500", "100")))]

    q = price(cart(item("A", cart_total)), rules)

    assert q.total == y(pays)


def test_multi_tier_man_jian_on_520_splits_100_over_two_lines_by_largest_remainder():
    rules = [rule("mj", "threshold", tiers=tiers(("200", "20"), ("300", "50"), ("500", "100")))]

    q = price(cart(item("A", "320.00"), item("B", "200.00")), rules)

    # 100.00 over 320/200: 61.538.. -> 61.53, 38.461.. -> 38.46, the spare fen goes to the
    # larger remainder (A's .8 beats B's .1): 61.54 + 38.46.
    assert q.total == y("420.00")
    assert allocations(q, "mj") == (y("61.54"), y("38.46"))
    assert finals(q) == [y("258.46"), y("161.54")]
    assert said(q, "mj") == [(True, "满500.00减100.00 reached with 520.00: saves 100.00")]


def test_mei_man_200_jian_20_capped_at_60_on_750_takes_three_steps_uncapped():
    rules = [
        rule("mm", "threshold", tiers=tiers(("200", "20")), repeat=True, repeat_cap=y("60.00"))
    ]

    q = price(cart(item("A", "750.00")), rules)

    assert q.total == y("690.00")
    assert said(q, "mm") == [(True, "每满200.00减20.00 ×3 on 750.00: saves 60.00")]
    assert "capped" not in said(q, "mm")[0][1]


def test_mei_man_200_jian_20_capped_at_60_on_1000_hits_the_cap():
    rules = [
        rule("mm", "threshold", tiers=tiers(("200", "20")), repeat=True, repeat_cap=y("60.00"))
    ]

    q = price(cart(item("A", "1000.00")), rules)

    # 5 × 20.00 = 100.00, capped at 60.00.
    assert q.total == y("940.00")
    assert said(q, "mm") == [
        (True, "每满200.00减20.00 ×5 on 1000.00, capped at 60.00: saves 60.00")
    ]
    assert q.trips == ()  # the cap is the rule's own shape, not a guard cut


def test_mei_man_without_a_cap_repeats_every_full_step():
    rules = [rule("mm", "threshold", tiers=tiers(("100", "10")), repeat=True)]

    assert price(cart(item("A", "399.99")), rules).total == y("369.99")
    assert price(cart(item("A", "99.99")), rules).total == y("99.99")


# -- 第二件半价 / 买赠: bxgy --------------------------------------------------------------------


def _bogo(**fields: Any) -> Rule:
    fields.setdefault("buy", 1)
    fields.setdefault("get", 1)
    fields.setdefault("percent", "50")
    return rule("bogo", "bxgy", **fields)


def test_second_item_half_price_on_two_100_units_pays_150():
    q = price(cart(item("A", "100.00", 2)), [_bogo()])

    assert q.total == y("150.00")
    assert q.lines[0].discounts[0].kind == "bxgy"
    assert q.discounts[0].layer == Layer.COUNT
    assert said(q, "bogo") == [(True, "buy 1 get 1 at 50% off, ×1: saves 50.00")]


def test_second_item_half_price_discounts_the_cheaper_unit():
    q = price(cart(item("A", "100.00"), item("B", "60.00")), [_bogo()])

    assert q.total == y("130.00")
    assert allocations(q, "bogo") == (0, y("30.00"))
    assert finals(q) == [y("100.00"), y("30.00")]


def test_second_item_half_price_takes_cheapest_units_across_lines():
    # 4 units -> 2 half-price units: B's one 40.00 unit, then one of A's 100.00 units.
    q = price(cart(item("A", "100.00", 3), item("B", "40.00")), [_bogo()])

    assert q.total == y("340.00") - y("20.00") - y("50.00")
    assert allocations(q, "bogo") == (y("50.00"), y("20.00"))


def test_buy_two_get_one_free_on_three_units():
    q = price(cart(item("A", "50.00", 3)), [_bogo(buy=2, get=1, percent="100")])

    assert q.total == y("100.00")
    assert said(q, "bogo") == [(True, "buy 2 get 1 at 100% off, ×1: saves 50.00")]


def test_buy_two_get_one_free_needs_three_units():
    q = price(cart(item("A", "50.00", 2)), [_bogo(buy=2, get=1, percent="100")])

    assert q.total == y("100.00")
    assert said(q, "bogo") == [(False, "2 unit(s) in scope, needs 3 for buy 2 get 1")]


@pytest.mark.parametrize(
    ("max_applications", "pays"),
    [(None, "450.00"), (3, "450.00"), (2, "500.00"), (1, "550.00")],
)
def test_bxgy_max_applications_limits_the_discounted_units(max_applications, pays):
    q = price(cart(item("A", "100.00", 6)), [_bogo(max_applications=max_applications)])

    assert q.total == y(pays)


# -- 折扣 and 阶梯折扣: percent_off, tiered_percent ---------------------------------------------


@pytest.mark.parametrize(
    ("cart_total", "pays", "message"),
    [
        ("100.00", "80.00", "20% off 100.00: saves 20.00"),
        ("150.00", "120.00", "20% off 150.00: saves 30.00"),
        ("200.00", "170.00", "20% off 200.00, capped at 30.00: saves 30.00"),
    ],
)
def test_ba_zhe_with_a_30_cap(cart_total, pays, message):
    rules = [rule("dz", "percent_off", percent="20", cap=y("30.00"))]

    q = price(cart(item("A", cart_total)), rules)

    assert q.total == y(pays)
    assert said(q, "dz") == [(True, message)]


def test_percent_discount_rounds_down_so_the_price_rounds_up():
    # 12.5% of 99.99 is 12.49875: the shop gives 12.49, the customer pays 87.50.
    q = price(cart(item("A", "99.99")), [rule("dz", "percent_off", percent="12.5")])

    assert q.total == y("87.50")
    assert said(q, "dz") == [(True, "12.5% off 99.99: saves 12.49")]


def test_percent_off_minimum_spend():
    rules = [rule("dz", "percent_off", percent="10", min_spend=y("100.00"))]

    q = price(cart(item("A", "99.00")), rules)

    assert q.total == y("99.00")
    assert said(q, "dz") == [(False, "minimum spend not met: 99.00 < 100.00")]


@pytest.mark.parametrize(
    ("qty", "pays", "message"),
    [
        (1, "50.00", "1 unit(s) in scope, the first tier needs 2"),
        (2, "90.00", "2 units ≥ 2: 10% off: saves 10.00"),
        (3, "120.00", "3 units ≥ 3: 20% off: saves 30.00"),
        (4, "160.00", "4 units ≥ 3: 20% off: saves 40.00"),
    ],
)
def test_tiered_percent_two_units_10_off_three_units_20_off(qty, pays, message):
    rules = [
        rule(
            "jt",
            "tiered_percent",
            tiers=[{"min_quantity": 2, "percent": "10"}, {"min_quantity": 3, "percent": "20"}],
        )
    ]

    q = price(cart(item("A", "50.00", qty)), rules)

    assert q.total == y(pays)
    assert said(q, "jt") == [(qty >= 2, message)]


def test_tiered_percent_counts_units_across_lines_and_splits_by_amount():
    rules = [
        rule(
            "jt",
            "tiered_percent",
            tiers=[{"min_quantity": 2, "percent": "10"}, {"min_quantity": 3, "percent": "20"}],
        )
    ]

    q = price(cart(item("A", "50.00"), item("B", "100.00", 2)), rules)

    # 3 units, 20% of 250.00 = 50.00, split 50:200.
    assert q.total == y("200.00")
    assert allocations(q, "jt") == (y("10.00"), y("40.00"))


# -- item prices: 特价, 会员价, 拼团, 秒杀 ---------------------------------------------------------


def test_te_jia_sets_the_unit_price():
    q = price(
        cart(item("A", "100.00", 2), item("B", "30.00")),
        [rule("tj", "fixed_price", price=y("79.90"), scope={"skus": ["A"]})],
    )

    assert q.total == y("159.80") + y("30.00")
    assert allocations(q, "tj") == (y("40.20"), 0)
    assert said(q, "tj") == [(True, "special price on A: saves 40.20")]
    assert q.discounts[0].layer == Layer.ITEM


def test_te_jia_above_the_list_price_saves_nothing():
    q = price(cart(item("A", "50.00")), [rule("tj", "fixed_price", price=y("59.00"))])

    assert q.total == y("50.00")
    assert said(q, "tj") == [(False, "no saving: a lower or equal price applies to its lines")]


def _member_rule() -> Rule:
    return rule(
        "hy",
        "member_price",
        offers=[{"tier": "gold", "price": y("85.00")}, {"tier": "silver", "percent": "5"}],
    )


@pytest.mark.parametrize(
    ("tier", "pays", "message"),
    [
        ("gold", "170.00", (True, "member price on A: saves 30.00")),
        ("silver", "190.00", (True, "member price on A: saves 10.00")),
        (None, "200.00", (False, "no member price for tier none")),
        ("bronze", "200.00", (False, "no member price for tier bronze")),
    ],
)
def test_member_price_by_tier(tier, pays, message):
    q = price(cart(item("A", "100.00", 2)), [_member_rule()], customer(member_tier=tier))

    assert q.total == y(pays)
    applied, text = message
    if applied:
        assert said(q, "hy") == [message]
    else:
        assert refused_because(q, "hy") == text


def test_member_percent_rounds_each_unit_price_up():
    # 5% off 99.99 per unit is 4.9995 -> 4.99 off, unit price 95.00.
    q = price(cart(item("A", "99.99", 3)), [_member_rule()], customer(member_tier="silver"))

    assert q.total == y("285.00")


def test_group_buy_only_for_a_complete_group_the_customer_is_in():
    rules = [rule("pt", "group_buy", price=y("59.00"), group_size=3)]
    the_cart = cart(item("A", "99.00"))

    alone = price(the_cart, rules, customer())
    in_other_group = price(the_cart, rules, customer(groups=frozenset({"another"})))
    grouped = price(the_cart, rules, customer(groups=frozenset({"pt"})))

    assert alone.total == in_other_group.total == y("99.00")
    assert refused_because(alone, "pt") == "not in a complete group for this group-buy"
    assert grouped.total == y("59.00")
    assert said(grouped, "pt") == [(True, "group-buy price on A: saves 40.00")]


def test_the_lowest_item_price_wins_and_item_prices_never_stack():
    a_b_c = {"skus": ["A", "B", "C"]}
    rules = [
        rule("tj", "fixed_price", price=y("90.00"), scope=a_b_c),
        rule("hy", "member_price", offers=[{"tier": "gold", "price": y("85.00")}], scope=a_b_c),
        rule("pt", "group_buy", price=y("80.00"), group_size=2, scope={"skus": ["A", "B"]}),
        rule(
            "ms", "flash_sale", price=y("75.00"), stock=10, per_user_limit=5, scope={"skus": ["A"]}
        ),
    ]
    who = customer(member_tier="gold", groups=frozenset({"pt"}))

    q = price(cart(item("A", "100.00"), item("B", "100.00"), item("C", "100.00")), rules, who)

    # A: flash 75 beats group 80, member 85, special 90; B: group 80; C: member 85.
    assert finals(q) == [y("75.00"), y("80.00"), y("85.00")]
    assert q.total == y("240.00")
    assert [len(line.discounts) for line in q.lines] == [1, 1, 1]
    assert [(d.rule_id, d.allocations) for d in q.discounts] == [
        ("hy", (0, 0, y("15.00"))),
        ("ms", (y("25.00"), 0, 0)),
        ("pt", (0, y("20.00"), 0)),
    ]
    assert said(q, "tj") == [(False, "no saving: a lower or equal price applies to its lines")]
    assert said(q, "ms") == [(True, "flash-sale price on A: saves 25.00")]


@pytest.mark.parametrize(
    ("used", "pays", "message"),
    [
        (0, "220.00", (True, "flash-sale price on A: saves 80.00")),
        (1, "260.00", (True, "flash-sale price on A: saves 40.00")),
        (2, "300.00", (False, "per-customer limit of 2 units reached")),
        (7, "300.00", (False, "per-customer limit of 2 units reached")),
    ],
)
def test_flash_sale_per_user_limit_caps_the_discounted_units(used, pays, message):
    rules = [rule("ms", "flash_sale", price=y("60.00"), stock=100, per_user_limit=2)]
    who = customer(flash_sale_used={"ms": used})

    q = price(cart(item("A", "100.00", 3)), rules, who)

    assert q.total == y(pays)
    applied, text = message
    if applied:
        assert said(q, "ms") == [message]
    else:
        assert refused_because(q, "ms") == text


def test_flash_sale_units_go_where_they_save_most():
    rules = [rule("ms", "flash_sale", price=y("80.00"), stock=100, per_user_limit=3)]

    q = price(cart(item("A", "100.00", 2), item("B", "200.00", 2)), rules)

    # B saves 120.00 a unit, A 20.00: B's two units first, then one of A's.
    assert finals(q) == [y("80.00") + y("100.00"), y("160.00")]
    assert allocations(q, "ms") == (y("20.00"), y("240.00"))
    assert q.total == y("340.00")


def test_flash_sale_single_unit_goes_to_the_later_line_when_it_saves_more():
    rules = [rule("ms", "flash_sale", price=y("80.00"), stock=100, per_user_limit=1)]

    q = price(cart(item("A", "100.00"), item("B", "200.00")), rules)

    assert finals(q) == [y("100.00"), y("80.00")]
    assert said(q, "ms") == [(True, "flash-sale price on B: saves 120.00")]


# -- 首单 --------------------------------------------------------------------------------------


def test_first_order_amount_only_on_a_first_order():
    rules = [rule("sd", "first_order", discount=y("10.00"))]
    the_cart = cart(item("A", "100.00"))

    returning = price(the_cart, rules, customer())
    first = price(the_cart, rules, customer(first_order=True))

    assert returning.total == y("100.00")
    assert said(returning, "sd") == [(False, "not a first order for this customer's identity")]
    assert first.total == y("90.00")
    assert said(first, "sd") == [(True, "first order, 10.00 off: saves 10.00")]


@pytest.mark.parametrize(
    ("cart_total", "pays", "message"),
    [
        ("100.00", "90.00", "10% off 100.00: saves 10.00"),
        ("300.00", "285.00", "10% off 300.00, capped at 15.00: saves 15.00"),
    ],
)
def test_first_order_percent_with_cap(cart_total, pays, message):
    rules = [rule("sd", "first_order", percent="10", cap=y("15.00"))]

    q = price(cart(item("A", cart_total)), rules, customer(first_order=True))

    assert q.total == y(pays)
    assert said(q, "sd") == [(True, message)]


def test_first_order_minimum_spend():
    rules = [rule("sd", "first_order", discount=y("10.00"), min_spend=y("100.00"))]

    q = price(cart(item("A", "50.00")), rules, customer(first_order=True))

    assert q.total == y("50.00")
    assert said(q, "sd") == [(False, "minimum spend not met: 50.00 < 100.00")]


# -- 优惠券 ------------------------------------------------------------------------------------


def test_a_coupon_applies_only_when_the_customer_holds_it():
    rules = [coupon("q15", "threshold", min_spend=y("100.00"), discount=y("15.00"))]
    the_cart = cart(item("A", "120.00"))

    without = price(the_cart, rules, customer())
    other = price(the_cart, rules, customer(coupons=frozenset({"q99"})))
    held = price(the_cart, rules, customer(coupons=frozenset({"q15"})))

    assert without.total == other.total == y("120.00")
    assert said(without, "q15") == []
    assert held.total == y("105.00")
    assert held.discounts[0].layer == Layer.COUPON
    assert said(held, "q15") == [(True, "coupon 满100.00减15.00: saves 15.00")]


def test_threshold_coupon_below_its_minimum_spend():
    rules = [coupon("q15", "threshold", min_spend=y("100.00"), discount=y("15.00"))]

    q = price(cart(item("A", "99.00")), rules, customer(coupons=frozenset({"q15"})))

    assert q.total == y("99.00")
    assert said(q, "q15") == [(False, "coupon needs 100.00 in scope, cart has 99.00")]


@pytest.mark.parametrize(
    ("cart_total", "pays", "message"),
    [
        ("150.00", "135.00", "10% off 150.00: saves 15.00"),
        ("300.00", "280.00", "10% off 300.00, capped at 20.00: saves 20.00"),
    ],
)
def test_percent_coupon_with_cap(cart_total, pays, message):
    rules = [coupon("q10", "percent", percent="10", cap=y("20.00"))]

    q = price(cart(item("A", cart_total)), rules, customer(coupons=frozenset({"q10"})))

    assert q.total == y(pays)
    assert said(q, "q10") == [(True, message)]


def test_no_threshold_coupon():
    rules = [coupon("q5", "no_threshold", discount=y("5.00"))]

    q = price(cart(item("A", "12.00")), rules, customer(coupons=frozenset({"q5"})))

    assert q.total == y("7.00")
    assert said(q, "q5") == [(True, "no-threshold coupon, 5.00 off: saves 5.00")]


# -- layering ----------------------------------------------------------------------------------


def test_four_layers_stack_item_price_then_count_then_order_then_coupon():
    rules = [
        coupon("q10", "percent", percent="10"),
        rule("mj", "threshold", tiers=tiers(("200", "30"), ("300", "60"))),
        _bogo(scope={"skus": ["cup"]}),
        rule("tj", "fixed_price", price=y("80.00"), scope={"skus": ["tea"]}),
    ]
    who = customer(coupons=frozenset({"q10"}))

    q = price(cart(item("tea", "100.00", 2), item("cup", "50.00", 2)), rules, who)

    # List 200.00 + 100.00 = 300.00, which would reach 满300减60 -- but 满减 is computed later.
    # 1. item price: tea at 80.00 -> 160.00 (saves 40.00); cup stays 100.00.
    # 2. count: cup 第二件半价 -> one 50.00 unit half off, 25.00 -> cup 75.00.
    # 3. order: 160.00 + 75.00 = 235.00 reaches only 满200减30 -> 30.00 split 160:75:
    #    tea 20.4255.. cup 9.5744.. -> 20.42 + 9.57, spare fen to tea (.55 > .44): 20.43 / 9.57,
    #    leaving tea 139.57, cup 65.43 = 205.00.
    # 4. coupon: 10% of 205.00 = 20.50 split 139.57:65.43: 13.957 / 6.543 -> 13.95 + 6.54,
    #    spare fen to tea (.7 > .3): 13.96 / 6.54, leaving tea 125.61, cup 58.89.
    assert [(d.rule_id, d.layer, d.amount) for d in q.discounts] == [
        ("tj", Layer.ITEM, y("40.00")),
        ("bogo", Layer.COUNT, y("25.00")),
        ("mj", Layer.ORDER, y("30.00")),
        ("q10", Layer.COUPON, y("20.50")),
    ]
    assert allocations(q, "mj") == (y("20.43"), y("9.57"))
    assert allocations(q, "q10") == (y("13.96"), y("6.54"))
    assert finals(q) == [y("125.61"), y("58.89")]
    assert q.total == y("184.50")
    assert q.discount_total == y("115.50")
    assert said(q, "mj") == [(True, "满200.00减30.00 reached with 235.00: saves 30.00")]
    assert said(q, "q10") == [(True, "10% off 205.00: saves 20.50")]
    assert [d.rule_id for d in q.lines[0].discounts] == ["tj", "mj", "q10"]
    assert [d.rule_id for d in q.lines[1].discounts] == ["bogo", "mj", "q10"]
    assert q.trips == ()


def test_coupon_threshold_is_judged_on_what_remains_after_man_jian():
    rules = [
        rule("mj", "threshold", tiers=tiers(("200", "30"))),
        coupon("q", "threshold", min_spend=y("200.00"), discount=y("20.00")),
    ]

    q = price(cart(item("A", "210.00")), rules, customer(coupons=frozenset({"q"})))

    assert q.total == y("180.00")
    assert said(q, "q") == [(False, "coupon needs 200.00 in scope, cart has 180.00")]


# -- priority ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("big_priority", "small_priority", "applied", "missed", "pays"),
    [
        (10, 0, "big", "small", "170.00"),
        (0, 10, "small", "big", "190.00"),
    ],
)
def test_higher_priority_applies_first_within_a_layer(
    big_priority, small_priority, applied, missed, pays
):
    rules = [
        rule("big", "threshold", tiers=tiers(("200", "50")), priority=big_priority),
        rule("small", "threshold", tiers=tiers(("200", "30")), priority=small_priority),
    ]

    q = price(cart(item("A", "220.00")), rules)

    # Whichever applies first takes the cart below 200.00 for the other.
    assert [d.rule_id for d in q.discounts] == [applied]
    assert q.total == y(pays)
    left = q.fmt(q.total)
    assert said(q, missed) == [(False, f"threshold not met: {left} < 200.00")]


def test_equal_priority_applies_in_id_order_each_on_the_reduced_amount():
    rules = [
        rule("b-pct", "percent_off", percent="10"),
        rule("a-cut", "threshold", tiers=tiers(("100", "20"))),
    ]

    q = price(cart(item("A", "200.00")), rules)

    # a-cut first: 200 -> 180; then 10% of 180.00 = 18.00.
    assert [(d.rule_id, d.amount) for d in q.discounts] == [
        ("a-cut", y("20.00")),
        ("b-pct", y("18.00")),
    ]
    assert q.total == y("162.00")


# -- exclusivity ------------------------------------------------------------------------------


def test_exclusive_rule_skips_discounted_lines_and_closes_its_own():
    rules = [
        rule("tj", "fixed_price", price=y("90.00"), scope={"skus": ["A"]}),
        rule("dj", "threshold", tiers=tiers(("100", "20")), exclusive=True),
        coupon("q10", "no_threshold", discount=y("10.00")),
    ]

    q = price(
        cart(item("A", "100.00"), item("B", "150.00")),
        rules,
        customer(coupons=frozenset({"q10"})),
    )

    # dj sees only B (A took a special price): 150.00 reaches 满100减20, all on B.
    # B is then closed, so the coupon lands on A alone.
    assert allocations(q, "dj") == (0, y("20.00"))
    assert said(q, "dj") == [(True, "满100.00减20.00 reached with 150.00: saves 20.00")]
    assert allocations(q, "q10") == (y("10.00"), 0)
    assert finals(q) == [y("80.00"), y("130.00")]
    assert q.total == y("210.00")


def test_exclusive_threshold_does_not_count_lines_already_discounted():
    rules = [
        rule("tj", "fixed_price", price=y("90.00"), scope={"skus": ["A"]}),
        rule("dj", "threshold", tiers=tiers(("100", "20")), exclusive=True),
    ]

    q = price(cart(item("A", "100.00"), item("B", "80.00")), rules)

    assert q.total == y("170.00")
    assert said(q, "dj") == [(False, "threshold not met: 80.00 < 100.00")]


def test_exclusive_rule_with_every_line_discounted_does_not_apply():
    rules = [
        rule("tj", "fixed_price", price=y("90.00")),
        rule("dj", "threshold", tiers=tiers(("10", "5")), exclusive=True),
    ]

    q = price(cart(item("A", "100.00")), rules)

    assert q.total == y("90.00")
    assert [d.rule_id for d in q.discounts] == ["tj"]
    assert said(q, "dj") == [(False, "exclusive, and every line in scope is already discounted")]


def test_exclusive_higher_priority_rule_closes_its_lines_to_later_rules_in_its_layer():
    rules = [
        rule("dj", "percent_off", percent="10", exclusive=True, priority=5),
        rule("mj", "threshold", tiers=tiers(("100", "10"))),
    ]

    q = price(cart(item("A", "200.00")), rules)

    assert q.total == y("180.00")
    assert [d.rule_id for d in q.discounts] == ["dj"]
    assert said(q, "mj") == [(False, "every line in scope already takes an exclusive offer")]


def test_exclusive_item_price_closes_the_line_to_order_rules():
    rules = [
        rule("tj", "fixed_price", price=y("150.00"), scope={"skus": ["A"]}, exclusive=True),
        rule("mj", "threshold", tiers=tiers(("100", "10"))),
    ]

    q = price(cart(item("A", "200.00"), item("B", "120.00")), rules)

    # A is closed at 150.00; 满减 sees only B's 120.00.
    assert allocations(q, "mj") == (0, y("10.00"))
    assert said(q, "mj") == [(True, "满100.00减10.00 reached with 120.00: saves 10.00")]
    assert q.total == y("260.00")


# -- scope, window, currency ------------------------------------------------------------------


def test_scope_exclusions_leave_lines_out_of_the_threshold():
    scope = {
        "all_items": True,
        "exclude_categories": ["gift-card"],
        "exclude_skus": ["X"],
        "exclude_tags": ["clearance"],
    }
    rules = [rule("mj", "threshold", tiers=tiers(("200", "30")), scope=scope)]

    short = price(
        cart(
            item("A", "150.00"),
            item("G", "100.00", category="gift-card"),
            item("X", "100.00"),
            item("T", "100.00", tags={"clearance", "summer"}),
        ),
        rules,
    )
    reached = price(cart(item("A", "250.00"), item("G", "100.00", category="gift-card")), rules)

    assert short.total == y("450.00")
    assert said(short, "mj") == [(False, "threshold not met: 150.00 < 200.00")]
    assert reached.total == y("320.00")
    assert allocations(reached, "mj") == (y("30.00"), 0)


def test_scope_by_category_and_tag():
    rules = [
        rule("tj", "fixed_price", price=y("10.00"), scope={"categories": ["fruit"]}),
        rule("dz", "percent_off", percent="50", scope={"tags": ["double11"]}),
    ]

    q = price(
        cart(
            item("apple", "12.00", category="fruit"),
            item("cup", "40.00", tags={"double11"}),
            item("pen", "5.00"),
        ),
        rules,
    )

    assert finals(q) == [y("10.00"), y("20.00"), y("5.00")]


def test_rules_outside_their_window_or_currency_do_not_apply():
    rules = [
        rule(
            "soon", "threshold", tiers=tiers(("50", "10")), valid_from="2026-11-12T00:00:00+08:00"
        ),
        rule(
            "over", "threshold", tiers=tiers(("50", "10")), valid_until="2026-11-11T00:00:00+08:00"
        ),
        rule("usd", "threshold", tiers=tiers(("50", "10")), currency="USD"),
    ]

    q = price(cart(item("A", "100.00")), rules)

    assert q.total == y("100.00")
    assert q.discounts == ()
    assert said(q, "soon") == [(False, "not started: starts 2026-11-12T00:00:00+08:00")]
    assert said(q, "over") == [(False, "ended 2026-11-11T00:00:00+08:00")]
    assert said(q, "usd") == [(False, "rule is priced in USD, the cart in CNY")]


def test_window_starts_inclusive_and_ends_exclusive():
    at_now = NOW.isoformat()
    starts_now = rule("starts", "threshold", tiers=tiers(("50", "10")), valid_from=at_now)
    ends_now = rule("ends", "threshold", tiers=tiers(("50", "10")), valid_until=at_now)

    q = price(cart(item("A", "100.00")), [starts_now, ends_now])

    assert [d.rule_id for d in q.discounts] == ["starts"]
    assert said(q, "ends") == [(False, f"ended {at_now}")]
    assert q.total == y("90.00")


def test_window_compares_instants_not_wall_clocks():
    # Ends at 13:00 UTC = 21:00 Beijing, an hour after NOW.
    rules = [
        rule(
            "utc",
            "threshold",
            tiers=tiers(("50", "10")),
            valid_until="2026-11-11T13:00:00+00:00",
        )
    ]

    assert price(cart(item("A", "100.00")), rules).total == y("90.00")


# -- the guard ---------------------------------------------------------------------------------


def test_a_line_keeps_its_floor_price():
    rules = [rule("tj", "fixed_price", price=y("80.00"))]

    q = price(cart(item("A", "100.00", floor="90.00")), rules)

    assert q.total == y("90.00")
    (trip,) = q.trips
    assert (trip.rule_id, trip.limit, trip.requested, trip.granted) == (
        "tj",
        "line_floor",
        y("20.00"),
        y("10.00"),
    )
    assert trip.detail == "the lines in scope can give 10.00 above their floor prices"
    assert said(q, "tj") == [(True, "special price on A: saves 10.00")]


def test_an_order_discount_that_does_not_fit_one_line_moves_to_the_others():
    rules = [rule("mj", "threshold", tiers=tiers(("200", "50")))]

    q = price(cart(item("A", "100.00", floor="90.00"), item("B", "100.00")), rules)

    # An even split would put 25.00 on A, which has only 10.00 above its floor.
    assert q.total == y("150.00")
    assert allocations(q, "mj") == (y("10.00"), y("40.00"))
    assert finals(q) == [y("90.00"), y("60.00")]
    assert q.trips == ()


def test_an_order_discount_is_cut_when_no_line_has_headroom_left():
    rules = [rule("mj", "threshold", tiers=tiers(("200", "50")))]

    q = price(cart(item("A", "100.00", floor="95.00"), item("B", "100.00", floor="90.00")), rules)

    assert finals(q) == [y("95.00"), y("90.00")]
    assert [(t.rule_id, t.limit, t.requested, t.granted) for t in q.trips] == [
        ("mj", "line_floor", y("50.00"), y("15.00"))
    ]


def test_floor_is_per_unit_times_quantity():
    rules = [rule("dz", "percent_off", percent="50")]

    q = price(cart(item("A", "10.00", 3, floor="8.00")), rules)

    assert q.total == y("24.00")
    assert q.trips[0].requested == y("15.00")
    assert q.trips[0].granted == y("6.00")


def test_rule_max_discount_ratio_trip():
    rules = [rule("dz", "percent_off", percent="50", max_discount_ratio="0.3")]

    q = price(cart(item("A", "200.00")), rules)

    assert q.total == y("140.00")
    (trip,) = q.trips
    assert (trip.rule_id, trip.limit, trip.requested, trip.granted) == (
        "dz",
        "rule_max_ratio",
        y("100.00"),
        y("60.00"),
    )
    assert trip.detail == "the rule may take at most 0.3 of 200.00 list price in its scope"


def test_rule_max_discount_ratio_counts_what_earlier_rules_took():
    rules = [
        rule("tj", "fixed_price", price=y("150.00")),
        rule("dz", "percent_off", percent="50", max_discount_ratio="0.3"),
    ]

    q = price(cart(item("A", "200.00")), rules)

    # The lines may not go below 70% of 200.00 = 140.00; the special price already took 50.00.
    assert q.total == y("140.00")
    assert [(t.limit, t.requested, t.granted) for t in q.trips] == [
        ("rule_max_ratio", y("75.00"), y("10.00"))
    ]


def test_policy_order_cap_trip():
    rules = [coupon("q80", "no_threshold", discount=y("80.00"))]

    q = price(
        cart(item("A", "60.00"), item("B", "40.00")),
        rules,
        customer(coupons=frozenset({"q80"})),
        policy=PricingPolicy(max_discount_ratio=Decimal("0.5")),
    )

    assert q.total == y("50.00")
    assert allocations(q, "q80") == (y("30.00"), y("20.00"))
    (trip,) = q.trips
    assert (trip.rule_id, trip.limit, trip.requested, trip.granted) == (
        "q80",
        "order_max_ratio",
        y("80.00"),
        y("50.00"),
    )
    assert trip.detail == "the order may not go below 50.00"


def test_policy_order_cap_counts_every_layer():
    rules = [
        rule("tj", "fixed_price", price=y("70.00")),
        rule("mj", "threshold", tiers=tiers(("50", "40"))),
    ]

    q = price(
        cart(item("A", "100.00")), rules, policy=PricingPolicy(max_discount_ratio=Decimal("0.5"))
    )

    # 30.00 taken by the special price leaves 20.00 of the 50.00 the order may lose.
    assert q.total == y("50.00")
    assert [(t.rule_id, t.limit, t.requested, t.granted) for t in q.trips] == [
        ("mj", "order_max_ratio", y("40.00"), y("20.00"))
    ]


def test_a_rule_the_guard_holds_back_entirely_does_not_apply():
    rules = [
        rule("tj", "fixed_price", price=y("50.00")),
        rule("mj", "threshold", tiers=tiers(("10", "5"))),
    ]

    q = price(
        cart(item("A", "100.00")), rules, policy=PricingPolicy(max_discount_ratio=Decimal("0.5"))
    )

    assert q.total == y("50.00")
    assert said(q, "mj") == [(False, "held back by the guard (asked 5.00)")]


def test_huge_no_threshold_coupon_never_makes_the_total_negative():
    rules = [coupon("huge", "no_threshold", discount=y("1000000.00"))]
    the_cart = cart(item("A", "60.00"), item("B", "40.00"))
    who = customer(coupons=frozenset({"huge"}))

    default = price(the_cart, rules, who)
    anything_goes = price(
        the_cart, rules, who, policy=PricingPolicy(max_discount_ratio=Decimal("1"))
    )

    assert default.total == y("10.00")  # the default policy keeps 10% of the list total
    assert [(t.limit, t.requested, t.granted) for t in default.trips] == [
        ("line_floor", y("1000000.00"), y("100.00")),
        ("order_max_ratio", y("100.00"), y("90.00")),
    ]
    assert anything_goes.total == 0
    assert finals(anything_goes) == [0, 0]
    assert anything_goes.discount_total == y("100.00")


# -- allocation -------------------------------------------------------------------------------


def test_order_discount_of_100_over_100_200_300_by_largest_remainder():
    rules = [rule("mj", "threshold", tiers=tiers(("600", "100")))]

    q = price(cart(item("A", "100.00"), item("B", "200.00"), item("C", "300.00")), rules)

    # 100.00 × 1/6, 2/6, 3/6 = 16.666.., 33.333.., 50.00 -> 16.66 + 33.33 + 50.00 = 99.99;
    # the spare fen goes to the largest remainder, A's (.67 of a fen beats B's .33).
    assert allocations(q, "mj") == (y("16.67"), y("33.33"), y("50.00"))
    assert sum(allocations(q, "mj")) == y("100.00")
    assert finals(q) == [y("83.33"), y("166.67"), y("250.00")]
    assert q.total == y("500.00")
    for line in q.lines:
        assert sum(d.amount for d in line.discounts) == line.list_amount - line.final_amount
        assert line.discount == line.list_amount - line.final_amount


def test_remainder_ties_go_to_the_earlier_line():
    rules = [rule("mj", "threshold", tiers=tiers(("0.03", "0.01")))]

    q = price(cart(item("A", "1.00"), item("B", "1.00"), item("C", "1.00")), rules)

    assert allocations(q, "mj") == (1, 0, 0)


def test_allocation_follows_cart_order_not_rule_scope_order():
    rules = [rule("mj", "threshold", tiers=tiers(("100", "30")), scope={"skus": ["C", "A"]})]

    q = price(cart(item("A", "50.00"), item("B", "70.00"), item("C", "100.00")), rules)

    assert allocations(q, "mj") == (y("10.00"), 0, y("20.00"))
    assert q.total == y("190.00")


# -- API edges ----------------------------------------------------------------------------------


def test_naive_now_is_refused():
    naive = datetime(2026, 11, 11, 20, 0)  # noqa: DTZ001 - the point of the test

    with pytest.raises(PricingError, match="timezone-aware"):
        quote(cart(item("A", "1.00")), customer(), [], naive)


def test_two_rules_with_the_same_id_are_refused():
    rules = [
        rule("dup", "threshold", tiers=tiers(("100", "10"))),
        rule("dup", "percent_off", percent="5", version=2),
    ]

    with pytest.raises(PricingError, match="dup"):
        RuleSet(rules)


def test_quote_with_a_ruleset_equals_quote_with_the_list():
    rules = [
        rule("tj", "fixed_price", price=y("80.00"), scope={"skus": ["tea"]}),
        _bogo(scope={"skus": ["cup"]}),
        rule("mj", "threshold", tiers=tiers(("200", "30"), ("300", "60"))),
        coupon("q10", "percent", percent="10"),
        rule("late", "threshold", tiers=tiers(("1", "1")), valid_from="2027-01-01T00:00:00+08:00"),
    ]
    the_cart = cart(item("tea", "100.00", 2), item("cup", "50.00", 2))
    who = customer(coupons=frozenset({"q10"}))
    policy = PricingPolicy(max_discount_ratio=Decimal("0.3"))

    assert quote(the_cart, who, RuleSet(rules), NOW) == quote(the_cart, who, rules, NOW)
    assert quote(the_cart, who, RuleSet(rules, policy), NOW) == quote(
        the_cart, who, rules, NOW, policy=policy
    )
    ruleset = RuleSet(rules)
    assert len(ruleset) == 5
    assert quote(the_cart, who, ruleset, NOW) == quote(the_cart, who, ruleset, NOW)


def test_the_same_rules_in_any_order_price_the_same():
    rules = [
        rule("tj", "fixed_price", price=y("80.00"), scope={"skus": ["tea"]}),
        _bogo(scope={"skus": ["cup"]}),
        rule("mj", "threshold", tiers=tiers(("200", "30"))),
        rule("dz", "percent_off", percent="5"),
    ]
    the_cart = cart(item("tea", "100.00", 2), item("cup", "50.00", 2))

    assert price(the_cart, rules) == price(the_cart, list(reversed(rules)))


# -- regressions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("flash_id", ["a-flash", "z-flash"])
def test_a_flash_sale_does_not_spend_units_on_a_line_a_special_price_wins(flash_id):
    """秒杀 70.00 on A and B (one unit per customer), 特价 50.00 on A: A 50.00, B 70.00."""
    rules = [
        rule(
            flash_id,
            "flash_sale",
            scope={"skus": ["A", "B"]},
            price=y("70.00"),
            stock=10,
            per_user_limit=1,
        ),
        rule("b-fixed", "fixed_price", scope={"skus": ["A"]}, price=y("50.00")),
    ]

    q = price(cart(item("A", "100.00"), item("B", "100.00")), rules)

    assert finals(q) == [y("50.00"), y("70.00")]
    assert q.total == y("120.00")


def test_buy_one_get_one_frees_the_cheapest_unit_not_the_average():
    """Two units of A at 100.00, one of them on a 60.00 flash sale, then buy 1 get 1 free: the
    60.00 unit is the free one, so the customer pays 100.00 (not 80.00)."""
    rules = [
        rule(
            "ms", "flash_sale", scope={"skus": ["A"]}, price=y("60.00"), stock=10, per_user_limit=1
        ),
        rule("b1g1", "bxgy", buy=1, get=1),
    ]

    q = price(cart(item("A", "100.00", 2)), rules)

    assert q.total == y("100.00")
    assert [d.amount for d in q.discounts] == [y("40.00"), y("60.00")]


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_buy_one_get_one_frees_a_unit_whose_line_can_give_it(order):
    """Two 100.00 lines, b may not go below 100.00: a is the free one, whatever the line order."""
    lines = {"a": item("a", "100.00"), "b": item("b", "100.00", floor="100.00")}

    q = price(cart(*(lines[sku] for sku in order)), [rule("b1g1", "bxgy", buy=1, get=1)])

    assert q.total == y("100.00")
    assert q.trips == ()
    assert {line.sku: line.final_amount for line in q.lines} == {"a": 0, "b": y("100.00")}


def test_rounding_remainders_do_not_depend_on_line_order():
    """满0.01减0.01 over two 1.00 lines then an exclusive 50 % off a: same quote either way."""
    rules = [
        rule("one-fen", "threshold", tiers=[{"min_spend": 1, "discount": 1}], priority=10),
        rule("half-a", "percent_off", scope={"skus": ["a"]}, percent="50", exclusive=True),
    ]
    a, b = item("a", "1.00"), item("b", "1.00")

    forward, backward = price(cart(a, b), rules), price(cart(b, a), rules)

    assert forward.total == backward.total
    assert {ln.sku: ln.final_amount for ln in forward.lines} == {
        ln.sku: ln.final_amount for ln in backward.lines
    }
