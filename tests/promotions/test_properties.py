"""Property tests for the pricing engine: invariants that hold for every cart and rule set.

The strategies draw from a small catalogue (skus s0..s9, categories c0..c2, tags t0..t2) so that
rules actually match lines, and produce valid specs of every rule kind with random scopes,
exclusivity, priorities, per-rule ratio caps and validity windows around a fixed ``NOW``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promoguard.money import BPS_WHOLE, price_after_bps
from promoguard.promotions.engine import PricingPolicy, RuleSet, quote
from promoguard.promotions.model import Cart, CartLine, Customer, Quote
from promoguard.promotions.rules import Layer, Rule, parse_rule

NOW = datetime(2026, 11, 11, 20, 0, tzinfo=UTC)
SKUS = [f"s{i}" for i in range(10)]
CATEGORIES = ["c0", "c1", "c2"]
TAGS = ["t0", "t1", "t2"]
TIERS = ["gold", "silver"]

PROPERTY = settings(
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- value strategies ---------------------------------------------------------------------------

percents = st.one_of(
    st.sampled_from([Decimal(10), Decimal(20), Decimal(50), Decimal(100), Decimal("12.5")]),
    st.integers(1, 10_000).map(lambda n: Decimal(n).scaleb(-2)),
)
ratios = st.one_of(
    st.sampled_from([Decimal("0.1"), Decimal("0.3"), Decimal("0.5"), Decimal(1)]),
    st.integers(1, 10_000).map(lambda n: Decimal(n).scaleb(-4)),
)
amounts = st.one_of(st.integers(1, 300_000), st.sampled_from([1, 100, 5_000, 10_000, 50_000]))
prices = st.one_of(st.integers(0, 200_000), st.sampled_from([0, 1, 999, 10_000, 19_900]))

WINDOWS = [
    (None, None),
    (NOW - timedelta(days=1), None),
    (None, NOW + timedelta(days=1)),
    (NOW - timedelta(days=1), NOW + timedelta(days=1)),
    (NOW, None),  # starts exactly now: in force
    (None, NOW),  # ended exactly now: not in force
    (NOW + timedelta(hours=1), None),  # not started
    (NOW - timedelta(days=2), NOW - timedelta(days=1)),  # over
]


def _in_window(valid_from: datetime | None, valid_until: datetime | None) -> bool:
    return (valid_from is None or valid_from <= NOW) and (valid_until is None or valid_until > NOW)


def subsets(items: list[str], *, nonempty: bool = False) -> st.SearchStrategy[list[str]]:
    """A subset of ``items`` from one integer bitmask: cheap to draw, shrinks towards the first."""
    return st.integers(1 if nonempty else 0, 2 ** len(items) - 1).map(
        lambda mask: [item for bit, item in enumerate(items) if mask >> bit & 1]
    )


@st.composite
def scopes(draw: st.DrawFn) -> dict[str, Any]:
    mode = draw(
        st.sampled_from(
            ["skus", "categories", "categories", "tags", "all_items", "all_items", "mixed"]
        )
    )
    scope: dict[str, Any] = {}
    if mode == "all_items":
        scope["all_items"] = True
    if mode in ("skus", "mixed"):
        scope["skus"] = draw(subsets(SKUS, nonempty=True))
    if mode in ("categories", "mixed"):
        scope["categories"] = draw(subsets(CATEGORIES, nonempty=True))
    if mode in ("tags", "mixed"):
        scope["tags"] = draw(subsets(TAGS, nonempty=True))
    if draw(st.integers(0, 3)) == 0:  # occasional exclusions
        scope["exclude_skus"] = draw(subsets(SKUS[::3]))
        scope["exclude_categories"] = draw(st.sampled_from([[], [], *([c] for c in CATEGORIES)]))
        scope["exclude_tags"] = draw(st.sampled_from([[], [], *([t] for t in TAGS)]))
    return scope


@st.composite
def threshold_specs(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        spec: dict[str, Any] = {
            "repeat": True,
            "tiers": [{"min_spend": draw(amounts), "discount": draw(amounts)}],
        }
        if draw(st.booleans()):
            spec["repeat_cap"] = draw(amounts)
        return spec
    spends = draw(st.lists(amounts, min_size=1, max_size=3, unique=True))
    return {
        "tiers": [{"min_spend": s, "discount": draw(amounts)} for s in sorted(spends)],
    }


@st.composite
def percent_off_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"percent": draw(percents)}
    if draw(st.booleans()):
        spec["cap"] = draw(amounts)
    if draw(st.booleans()):
        spec["min_spend"] = draw(st.integers(0, 300_000))
    return spec


@st.composite
def tiered_percent_specs(draw: st.DrawFn) -> dict[str, Any]:
    needs = draw(st.lists(st.integers(1, 8), min_size=1, max_size=3, unique=True))
    return {"tiers": [{"min_quantity": n, "percent": draw(percents)} for n in sorted(needs)]}


@st.composite
def bxgy_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"buy": draw(st.integers(1, 3)), "get": draw(st.integers(1, 2))}
    if draw(st.booleans()):
        spec["percent"] = draw(percents)
    if draw(st.booleans()):
        spec["max_applications"] = draw(st.integers(1, 3))
    return spec


@st.composite
def member_price_specs(draw: st.DrawFn) -> dict[str, Any]:
    tiers = draw(st.lists(st.sampled_from(TIERS), min_size=1, max_size=2, unique=True))
    offers = []
    for tier in tiers:
        if draw(st.booleans()):
            offers.append({"tier": tier, "price": draw(amounts)})
        else:
            offers.append({"tier": tier, "percent": draw(percents)})
    return {"offers": offers}


@st.composite
def first_order_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        spec["discount"] = draw(amounts)
    else:
        spec["percent"] = draw(percents)
        if draw(st.booleans()):
            spec["cap"] = draw(amounts)
    if draw(st.booleans()):
        spec["min_spend"] = draw(st.integers(0, 300_000))
    return spec


@st.composite
def coupon_specs(draw: st.DrawFn) -> dict[str, Any]:
    benefit = draw(st.sampled_from(["threshold", "percent", "no_threshold"]))
    spec: dict[str, Any] = {
        "benefit": benefit,
        "per_user_limit": draw(st.integers(1, 3)),
        "quantity": draw(st.integers(1, 1_000)),
    }
    if benefit == "threshold":
        spec["min_spend"] = draw(amounts)
        spec["discount"] = draw(amounts)
    elif benefit == "percent":
        spec["percent"] = draw(percents)
        if draw(st.booleans()):
            spec["cap"] = draw(amounts)
        if draw(st.booleans()):
            spec["min_spend"] = draw(st.integers(0, 300_000))
    else:
        spec["discount"] = draw(amounts)
    return spec


KIND_SPECS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "threshold": threshold_specs(),
    "percent_off": percent_off_specs(),
    "tiered_percent": tiered_percent_specs(),
    "fixed_price": st.fixed_dictionaries({"price": amounts}),
    "bxgy": bxgy_specs(),
    "member_price": member_price_specs(),
    "first_order": first_order_specs(),
    "group_buy": st.fixed_dictionaries({"price": amounts, "group_size": st.integers(2, 5)}),
    "flash_sale": st.fixed_dictionaries(
        {"price": amounts, "stock": st.integers(1, 100), "per_user_limit": st.integers(1, 5)}
    ),
    "coupon": coupon_specs(),
}

ALL_KINDS = tuple(sorted(KIND_SPECS))
ITEM_KINDS = ("fixed_price", "flash_sale", "group_buy", "member_price")


@st.composite
def rule_specs(draw: st.DrawFn, kinds: tuple[str, ...] = ALL_KINDS) -> dict[str, Any]:
    """A valid spec of one of ``kinds``, without its ``id`` (the caller numbers the rules)."""
    kind = draw(st.sampled_from(kinds))
    spec = {"kind": kind, **draw(KIND_SPECS[kind]), "scope": draw(scopes())}
    spec["exclusive"] = draw(st.integers(0, 4)) == 0
    spec["priority"] = draw(st.one_of(st.integers(-2, 3), st.sampled_from([-1000, 1000])))
    if draw(st.integers(0, 3)) == 0:
        spec["max_discount_ratio"] = draw(ratios)
    valid_from, valid_until = draw(st.one_of(st.just((None, None)), st.sampled_from(WINDOWS)))
    if valid_from is not None:
        spec["valid_from"] = valid_from
    if valid_until is not None:
        spec["valid_until"] = valid_until
    return spec


def numbered(specs: list[dict[str, Any]], prefix: str = "r") -> list[Rule]:
    """Give each spec a unique id and validate it."""
    return [parse_rule({**spec, "id": f"{prefix}{n}"}) for n, spec in enumerate(specs)]


@st.composite
def cart_lines(draw: st.DrawFn, sku: str) -> CartLine:
    unit_price = draw(prices)
    floor: int | None = None
    floor_mode = draw(st.sampled_from(["none", "none", "below", "above"]))
    if floor_mode == "below":
        floor = draw(st.integers(0, unit_price))
    elif floor_mode == "above":
        floor = draw(st.integers(unit_price, unit_price + 100_000))
    return CartLine(
        sku=sku,
        category=draw(st.sampled_from(CATEGORIES)),
        tags=frozenset(draw(subsets(TAGS))),
        unit_price=unit_price,
        quantity=draw(st.integers(1, 5)),
        floor_price=floor,
    )


@st.composite
def carts(draw: st.DrawFn) -> Cart:
    skus = draw(st.lists(st.sampled_from(SKUS), min_size=1, max_size=8, unique=True))
    return Cart(lines=tuple(draw(cart_lines(sku)) for sku in skus))


@st.composite
def customers(draw: st.DrawFn, rule_ids: list[str]) -> Customer:
    ids = [*rule_ids, "not-a-rule"]
    flash = draw(subsets(ids))
    return Customer(
        id="cust-1",
        member_tier=draw(st.sampled_from([None, *TIERS, "bronze"])),
        first_order=draw(st.sampled_from([True, True, False])),
        groups=frozenset(draw(subsets(ids))),
        coupons=frozenset(draw(subsets(ids))),
        flash_sale_used={rule_id: draw(st.integers(0, 6)) for rule_id in flash},
    )


@st.composite
def scenarios(
    draw: st.DrawFn,
    kinds: tuple[str, ...] = ALL_KINDS,
    tweak: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> tuple[list[Rule], Cart, Customer]:
    specs = draw(st.lists(rule_specs(kinds), min_size=1, max_size=8))
    rules = numbered([tweak(spec) for spec in specs] if tweak else specs)
    cart = draw(carts())
    customer = draw(customers([r.id for r in rules]))
    return rules, cart, customer


def in_scope(rule: Rule, line: CartLine) -> bool:
    return rule.scope.covers(line.sku, line.category, line.tags)


def ratio_bps(ratio: Decimal) -> int:
    return int(ratio * BPS_WHOLE)


# -- 1. totals add up, discounts only ever lower a price ------------------------------------------


@PROPERTY
@given(scenarios())
def test_totals_add_up_and_no_line_rises_or_goes_negative(scenario):
    rules, cart, customer = scenario
    q = quote(cart, customer, rules, NOW)

    assert q.total >= 0
    assert q.total == sum(line.final_amount for line in q.lines)
    assert q.list_total == sum(line.unit_price * line.quantity for line in cart.lines)
    assert q.discount_total == q.list_total - q.total
    assert [line.sku for line in q.lines] == [line.sku for line in cart.lines]
    for qline, line in zip(q.lines, cart.lines, strict=True):
        assert qline.list_amount == line.unit_price * line.quantity
        assert 0 <= qline.final_amount <= qline.list_amount


# -- 2. floor prices ------------------------------------------------------------------------------


@PROPERTY
@given(scenarios())
def test_no_line_goes_below_its_floor_price(scenario):
    rules, cart, customer = scenario
    q = quote(cart, customer, rules, NOW)

    for qline, line in zip(q.lines, cart.lines, strict=True):
        if line.floor_price is not None:
            assert qline.final_amount >= min(line.floor_price * line.quantity, qline.list_amount)


# -- 3. order-level policy ------------------------------------------------------------------------


@PROPERTY
@given(
    scenarios(),
    st.sampled_from(
        [Decimal("0.0001"), Decimal("0.3"), Decimal("0.5"), Decimal("0.9"), Decimal(1)]
    ),
)
def test_order_never_goes_below_the_policy_ratio(scenario, max_ratio):
    rules, cart, customer = scenario
    q = quote(cart, customer, rules, NOW, policy=PricingPolicy(max_discount_ratio=max_ratio))

    allowed = q.list_total * ratio_bps(max_ratio) // BPS_WHOLE
    assert q.discount_total <= allowed
    assert q.total >= q.list_total - allowed


# -- 4. allocations are exact ---------------------------------------------------------------------


@PROPERTY
@given(scenarios())
def test_allocations_are_exact_and_match_the_line_discounts(scenario):
    rules, cart, customer = scenario
    q = quote(cart, customer, rules, NOW)

    for discount in q.discounts:
        assert discount.amount > 0
        assert len(discount.allocations) == len(cart.lines)
        assert all(part >= 0 for part in discount.allocations)
        assert sum(discount.allocations) == discount.amount
    assert sum(d.amount for d in q.discounts) == q.discount_total
    # The order-level view (per rule, per line) and the line-level view agree exactly.
    for i, qline in enumerate(q.lines):
        assert all(ld.amount > 0 for ld in qline.discounts)
        assert sum(ld.amount for ld in qline.discounts) == qline.list_amount - qline.final_amount
        from_orders = [(d.rule_id, d.allocations[i]) for d in q.discounts if d.allocations[i]]
        assert [(ld.rule_id, ld.amount) for ld in qline.discounts] == from_orders
    # Each rule is granted at most once per quote.
    assert len({d.rule_id for d in q.discounts}) == len(q.discounts)


# -- 5. determinism -------------------------------------------------------------------------------


@PROPERTY
@given(scenarios())
def test_quoting_twice_gives_the_same_quote(scenario):
    rules, cart, customer = scenario
    first = quote(cart, customer, rules, NOW)
    second = quote(cart, customer, rules, NOW)

    assert isinstance(first, Quote)
    assert first == second


# -- 6. line order ------------------------------------------------------------------------------
#
# The engine prices lines in SKU order and answers in cart order, so every tie (a rounding
# remainder of an allocation, equally cheap units for buy N get M, flash-sale units) breaks the
# same way whatever order the cart lists its lines in. Two carts that differ only in line order
# therefore get the same quote, line for line, including every allocation.


def _by_sku(q: Quote) -> dict[str, tuple[int, int, tuple[Any, ...]]]:
    return {line.sku: (line.list_amount, line.final_amount, line.discounts) for line in q.lines}


def _allocations_by_sku(q: Quote) -> list[tuple[str, dict[str, int]]]:
    skus = [line.sku for line in q.lines]
    return [(d.rule_id, dict(zip(skus, d.allocations, strict=True))) for d in q.discounts]


@PROPERTY
@given(st.data())
def test_the_order_of_cart_lines_changes_nothing(data):
    rules, cart, customer = data.draw(scenarios())
    permuted = Cart(lines=tuple(data.draw(st.permutations(cart.lines))))
    q = quote(cart, customer, rules, NOW)
    p = quote(permuted, customer, rules, NOW)

    assert p.total == q.total
    assert _by_sku(p) == _by_sku(q)
    assert _allocations_by_sku(p) == _allocations_by_sku(q)
    assert [line.sku for line in p.lines] == [line.sku for line in permuted.lines]
    assert p.trips == q.trips


# -- 7. RuleSet and the one-shot helper agree -----------------------------------------------------


@PROPERTY
@given(scenarios())
def test_a_compiled_ruleset_prices_like_the_one_shot_helper(scenario):
    rules, cart, customer = scenario
    ruleset = RuleSet(rules)
    expected = quote(cart, customer, rules, NOW)

    assert ruleset.quote(cart, customer, NOW) == expected
    assert quote(cart, customer, ruleset, NOW) == expected
    # A compiled rule set keeps no state between quotes.
    assert ruleset.quote(cart, customer, NOW) == expected


# -- 8. rules that match nothing change nothing ---------------------------------------------------


@PROPERTY
@given(scenarios(), rule_specs(), st.sampled_from(["skus", "categories", "tags"]))
def test_a_rule_matching_no_line_changes_nothing(scenario, extra, field):
    rules, cart, customer = scenario
    # Point the extra rule at a sku, category or tag no cart line has.
    extra = {**extra, "id": "zz-unmatched", "scope": {field: ["absent"]}}
    with_extra = [*rules, parse_rule(extra)]
    customer = customer.model_copy(
        update={
            "coupons": customer.coupons | {"zz-unmatched"},
            "groups": customer.groups | {"zz-unmatched"},
        }
    )

    assert quote(cart, customer, with_extra, NOW) == quote(cart, customer, rules, NOW)


# -- 9. per-rule ratio cap ----------------------------------------------------------------------


@PROPERTY
@given(scenarios())
def test_a_rule_never_takes_more_than_its_ratio_of_the_list_price_in_scope(scenario):
    """The guard keeps the lines a rule works on at or above ``list * (1 - r)`` *after* that rule,
    counting earlier rules' discounts too, so the rule's own amount is at most ``list * r`` over
    those lines; they are a subset of the lines its scope covers."""
    rules, cart, customer = scenario
    q = quote(cart, customer, rules, NOW)
    by_id = {rule.id: rule for rule in rules}

    for discount in q.discounts:
        rule = by_id[discount.rule_id]
        covered = [in_scope(rule, line) for line in cart.lines]
        # Discounts land only on lines the rule's scope covers.
        assert all(c or not part for c, part in zip(covered, discount.allocations, strict=True))
        if rule.max_discount_ratio is not None:
            list_in_scope = sum(
                line.unit_price * line.quantity
                for line, c in zip(cart.lines, covered, strict=True)
                if c
            )
            limit = list_in_scope * ratio_bps(rule.max_discount_ratio) // BPS_WHOLE
            assert discount.amount <= limit


@PROPERTY
@given(rule_specs(), carts(), st.data())
def test_a_lone_rule_keeps_its_scope_above_its_ratio(spec, cart, data):
    """With one rule and nothing before it, the lines in scope end at or above list * (1 - r)."""
    spec = {**spec, "max_discount_ratio": data.draw(ratios)}
    rules = numbered([spec])
    customer = data.draw(customers([rules[0].id]))
    rule = rules[0]
    q = quote(cart, customer, rules, NOW)

    covered = [i for i, line in enumerate(cart.lines) if in_scope(rule, line)]
    list_in_scope = sum(q.lines[i].list_amount for i in covered)
    final_in_scope = sum(q.lines[i].final_amount for i in covered)
    assert rule.max_discount_ratio is not None
    allowed = list_in_scope * ratio_bps(rule.max_discount_ratio) // BPS_WHOLE
    assert final_in_scope >= list_in_scope - allowed


# -- 10. exclusive rules --------------------------------------------------------------------------


@PROPERTY
@given(scenarios())
def test_an_exclusive_rule_never_shares_a_line(scenario):
    rules, cart, customer = scenario
    q = quote(cart, customer, rules, NOW)
    exclusive = {rule.id for rule in rules if rule.exclusive}

    for qline in q.lines:
        ids = [ld.rule_id for ld in qline.discounts]
        if exclusive & set(ids):
            assert len(ids) == 1, ids


# -- 11. who is eligible --------------------------------------------------------------------------


def _item_price_after(rule: Rule, line: CartLine, customer: Customer) -> int:
    """The lowest line amount an item-price rule can give this line (flash ignores its limit)."""
    if rule.kind == "member_price":
        offer = next(o for o in rule.offers if o.tier == customer.member_tier)
        if offer.price is not None:
            return offer.price * line.quantity
        assert offer.percent is not None
        bps = int(offer.percent * 100)
        return price_after_bps(line.unit_price, bps) * line.quantity
    assert rule.kind in ("fixed_price", "group_buy", "flash_sale")
    return rule.price * line.quantity


@PROPERTY
@given(scenarios())
def test_only_eligible_rules_in_force_give_discounts(scenario):
    rules, cart, customer = scenario
    q = quote(cart, customer, rules, NOW)
    by_id = {rule.id: rule for rule in rules}
    per_line_item: dict[int, list[str]] = defaultdict(list)

    for discount in q.discounts:
        rule = by_id[discount.rule_id]
        assert discount.kind == rule.kind
        assert discount.layer == rule.LAYER
        assert _in_window(rule.valid_from, rule.valid_until)
        if rule.kind == "coupon":
            assert rule.id in customer.coupons
        if rule.kind == "group_buy":
            assert rule.id in customer.groups
        if rule.kind == "first_order":
            assert customer.first_order
        if rule.kind == "member_price":
            assert customer.member_tier in {o.tier for o in rule.offers}
        if rule.kind == "flash_sale":
            left = rule.per_user_limit - customer.flash_sale_used.get(rule.id, 0)
            assert left > 0
            savings = [max(0, line.unit_price - rule.price) for line in cart.lines]
            assert discount.amount <= left * max(savings)
        if rule.LAYER is Layer.ITEM:
            for i, part in enumerate(discount.allocations):
                if part:
                    per_line_item[i].append(rule.id)
                    line = cart.lines[i]
                    assert part <= line.unit_price * line.quantity - _item_price_after(
                        rule, line, customer
                    )
    # Item prices never stack: one item-price rule per line at most.
    assert all(len(ids) == 1 for ids in per_line_item.values())
    # Discounts are listed layer by layer.
    layers = [d.layer for d in q.discounts]
    assert layers == sorted(layers)
