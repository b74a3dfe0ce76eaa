"""Impact simulation: synthetic samples, both sides of the comparison, the budget forecast and the
expected profile. Carts are crafted so every figure can be worked out by hand (amounts in fen)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from promoguard.promotions.catalogue import Catalogue, CatalogueItem
from promoguard.promotions.engine import PricingError, PricingPolicy
from promoguard.promotions.model import Cart, CartLine, Customer
from promoguard.promotions.rules import Rule, parse_rule
from promoguard.promotions.simulate import (
    Sample,
    SimulationReport,
    nearest_rank,
    pricing_instant,
    simulate,
    synthetic_sample,
)

NOW = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)
ALL: dict[str, Any] = {"all_items": True}


# -- builders ---------------------------------------------------------------------------------


def rule(rule_id: str, kind: str, *, scope: dict[str, Any] | None = None, **fields: Any) -> Rule:
    """A validated rule spec; store-wide unless a scope is given."""
    return parse_rule({"id": rule_id, "kind": kind, "scope": scope or ALL, **fields})


def ten_off(rule_id: str = "cand", **fields: Any) -> Rule:
    return rule(rule_id, "percent_off", percent="10", **fields)


def line(sku: str, price: int, qty: int = 1, *, category: str = "general", **kw: Any) -> CartLine:
    return CartLine(sku=sku, category=category, unit_price=price, quantity=qty, **kw)


def sample(*lines: CartLine, n: int = 0, **facts: Any) -> Sample:
    return Sample(cart=Cart(lines=lines), customer=Customer(id=f"c-{n}", **facts))


def flat_carts(*totals: int) -> list[Sample]:
    """One single-line cart per list total."""
    return [sample(line(f"sku-{n}", total), n=n) for n, total in enumerate(totals)]


def catalogue(items: int = 10, tiers: tuple[str, ...] = ("gold", "silver")) -> Catalogue:
    return Catalogue(
        member_tiers=frozenset(tiers),
        items=tuple(
            CatalogueItem(
                sku=f"sku-{n:02d}",
                category=f"cat-{n % 3}",
                tags=frozenset({"t"}) if n % 2 else frozenset(),
                unit_price=1000 * (n + 1),
                floor_price=500 * (n + 1) if n % 4 == 0 else None,
            )
            for n in range(items)
        ),
    )


def floats_in(value: Any, path: str = "") -> list[str]:
    """Paths of every float (or non-JSON value) in a nested structure."""
    if isinstance(value, dict):
        bad = [f"{path}.{k}<key>" for k in value if not isinstance(k, str)]
        return bad + [p for k, v in value.items() for p in floats_in(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for n, v in enumerate(value) for p in floats_in(v, f"{path}[{n}]")]
    if isinstance(value, bool | int | str) or value is None:
        return []
    return [f"{path}: {type(value).__name__}"]


# -- synthetic samples ------------------------------------------------------------------------


def test_synthetic_sample_is_the_same_for_a_seed() -> None:
    assert synthetic_sample(catalogue(), size=50, seed=7) == synthetic_sample(
        catalogue(), size=50, seed=7
    )


def test_synthetic_sample_differs_between_seeds() -> None:
    assert synthetic_sample(catalogue(), size=50, seed=1) != synthetic_sample(
        catalogue(), size=50, seed=2
    )


def test_synthetic_carts_are_drawn_from_the_catalogue() -> None:
    shop = catalogue()
    by_sku = {item.sku: item for item in shop.items}
    samples = synthetic_sample(shop, size=300, seed=3)
    assert len(samples) == 300
    for s in samples:
        assert s.cart.currency == shop.currency
        assert 1 <= len(s.cart.lines) <= 5
        for cart_line in s.cart.lines:
            assert cart_line == by_sku[cart_line.sku].line(cart_line.quantity)
            assert 1 <= cart_line.quantity <= 3
    sizes = Counter(len(s.cart.lines) for s in samples)
    assert set(sizes) == {1, 2, 3, 4, 5}


def test_synthetic_carts_lean_to_cheaper_items() -> None:
    shop = catalogue(items=10)
    cheap = {item.sku for item in shop.items if item.unit_price <= 5000}
    picks = Counter(
        cart_line.sku in cheap
        for s in synthetic_sample(shop, size=500, seed=0)
        for cart_line in s.cart.lines
    )
    # A uniform draw would pick each half about equally often; the lean makes it over 2:1.
    assert picks[True] > 2 * picks[False]


def test_synthetic_customers_have_a_realistic_tier_mix_and_some_first_orders() -> None:
    samples = synthetic_sample(catalogue(tiers=("gold", "silver")), size=1000, seed=5)
    assert [s.customer.id for s in samples[:3]] == ["c-sim-1", "c-sim-2", "c-sim-3"]
    assert len({s.customer.id for s in samples}) == 1000
    tiers = Counter(s.customer.member_tier for s in samples)
    assert set(tiers) == {None, "gold", "silver"}
    assert tiers[None] > 600
    first = sum(s.customer.first_order for s in samples)
    assert 50 <= first <= 150


def test_synthetic_sample_without_tiers_has_no_members() -> None:
    samples = synthetic_sample(catalogue(tiers=()), size=100, seed=0)
    assert {s.customer.member_tier for s in samples} == {None}


def test_synthetic_sample_from_a_one_item_catalogue_has_one_line_carts() -> None:
    samples = synthetic_sample(catalogue(items=1), size=20, seed=0)
    assert {len(s.cart.lines) for s in samples} == {1}


def test_synthetic_sample_refuses_an_empty_catalogue() -> None:
    with pytest.raises(ValueError, match="catalogue has no items"):
        synthetic_sample(Catalogue(), size=10)


def test_synthetic_sample_refuses_a_size_below_one() -> None:
    with pytest.raises(ValueError, match="size"):
        synthetic_sample(catalogue(), size=0)


# -- the two sides ----------------------------------------------------------------------------


def test_candidate_spend_appears_only_with_the_candidate() -> None:
    live = [rule("live-th", "threshold", tiers=[{"min_spend": 10000, "discount": 500}])]
    report = simulate(flat_carts(10000, 20000, 5000), live=live, candidate=ten_off(), now=NOW)
    assert report.baseline.discount_per_rule == {"live-th": 1000}
    assert report.baseline.orders_per_rule == {"live-th": 2}
    assert report.baseline.discount == 1000
    # Same layer and priority, so "cand" applies first (by id): 10 % of each cart, after which
    # the first cart (90.00) no longer reaches the live 满100减5.
    assert report.with_candidate.discount_per_rule == {"cand": 3500, "live-th": 500}
    assert report.with_candidate.orders_per_rule == {"cand": 3, "live-th": 1}
    assert report.with_candidate.discount == 4000
    assert report.baseline.list_total == report.with_candidate.list_total == 35000
    assert report.baseline.carts == report.with_candidate.carts == 3


def test_candidate_replaces_the_live_version_with_its_id() -> None:
    live = [
        ten_off("camp", version=1),
        rule("other", "fixed_price", scope={"skus": ["x"]}, price=1),
    ]
    candidate = rule("camp", "percent_off", version=2, percent="20")
    report = simulate(flat_carts(10000, 10000), live=live, candidate=candidate, now=NOW)
    assert report.baseline.discount_per_rule == {"camp": 2000}
    assert report.with_candidate.discount_per_rule == {"camp": 4000}  # 20 %, not 10 % + 20 %
    assert report.with_candidate.orders_per_rule == {"camp": 2}
    assert report.candidate_version == 2


def test_floor_hits_count_carts_the_candidate_pushes_under_a_floor_price() -> None:
    samples = [
        sample(line("a", 10000, floor_price=9000), n=1),
        sample(line("b", 10000), n=2),
    ]
    report = simulate(
        samples, live=[], candidate=rule("cand", "percent_off", percent="20"), now=NOW
    )
    assert report.baseline.floor_hits == 0
    assert report.with_candidate.floor_hits == 1
    assert report.with_candidate.discount_per_rule == {"cand": 1000 + 2000}


def test_floor_hits_count_carts_held_to_the_order_max_ratio() -> None:
    candidate = rule("cand", "percent_off", percent="80")
    policy = PricingPolicy(max_discount_ratio=Decimal("0.5"))
    report = simulate(flat_carts(10000, 4000), live=[], candidate=candidate, now=NOW, policy=policy)
    assert report.with_candidate.floor_hits == 2
    assert report.with_candidate.discount == 5000 + 2000


def test_floor_hits_count_carts_held_to_the_rule_max_ratio() -> None:
    candidate = rule("cand", "percent_off", percent="50", max_discount_ratio="0.3")
    report = simulate(flat_carts(10000), live=[], candidate=candidate, now=NOW)
    assert report.with_candidate.floor_hits == 1
    assert report.with_candidate.discount == 3000


# -- percentiles and the profile --------------------------------------------------------------


def test_nearest_rank_takes_the_value_at_the_ceiling_rank() -> None:
    assert nearest_rank([10, 20, 30, 40], 50) == 20
    assert nearest_rank([10, 20, 30, 40], 95) == 40
    assert nearest_rank([10, 20, 30, 40], 25) == 10
    assert nearest_rank(list(range(1, 101)), 95) == 95
    assert nearest_rank([7], 50) == 7
    assert nearest_rank([], 95) == 0
    with pytest.raises(ValueError, match="percentile"):
        nearest_rank([1], 0)


def rate_ladder() -> list[Sample]:
    """20 carts of 100.00 whose promo line makes the candidate take 1 %, 2 %, ... 20 % of the
    list total, and 5 carts of gold members with nothing in scope; shuffled."""
    ladder = [
        sample(
            line("promo", 200 * k, category="promo"),
            line("plain", 10000 - 200 * k),
            n=k,
        )
        for k in range(1, 21)
    ]
    outside = [sample(line("plain", 10000), n=100 + k, member_tier="gold") for k in range(5)]
    mixed = ladder + outside
    return [mixed[(n * 7) % len(mixed)] for n in range(len(mixed))]


HALF_OFF_PROMO = {"percent": "50", "scope": {"categories": ["promo"]}}


def test_side_rates_are_nearest_rank_percentiles_over_every_cart() -> None:
    report = simulate(
        rate_ladder(), live=[], candidate=rule("cand", "percent_off", **HALF_OFF_PROMO), now=NOW
    )
    side = report.with_candidate
    # Sorted: five 0s, then 100..2000 bps. Rank ceil(0.5 * 25) = 13 and ceil(0.95 * 25) = 24.
    assert (side.rate_p50_bps, side.rate_p95_bps, side.rate_max_bps) == (800, 1900, 2000)
    assert (report.baseline.rate_p50_bps, report.baseline.rate_max_bps) == (0, 0)


def test_profile_describes_the_orders_the_candidate_discounts() -> None:
    report = simulate(
        rate_ladder(), live=[], candidate=rule("cand", "percent_off", **HALF_OFF_PROMO), now=NOW
    )
    profile = report.profile
    # Over the 20 discounted carts: ranks 10 and 19 of 100..2000 bps (an interpolating
    # percentile would say 1050 and 1905).
    assert profile["discount_rate_bps"] == {"p50": 1000, "p95": 1900, "max": 2000}
    assert profile["order_discount_rate_bps"] == {"p50": 1000, "p95": 1900, "max": 2000}
    assert profile["discount_per_order"] == {"p50": 1000, "p95": 1900, "max": 2000}
    assert profile["discounted_orders"] == 20
    assert profile["discounted_share_bps"] == 8000
    assert profile["member_tier_mix_bps"] == {"gold": 2000, "none": 8000}
    assert profile["discounted_tier_mix_bps"] == {"none": 10000}
    assert profile["sample_carts"] == 25
    assert (profile["rule_id"], profile["rule_version"]) == ("cand", 1)


def test_profile_order_rate_includes_other_rules_on_the_same_order() -> None:
    live = [rule("live", "fixed_price", scope={"skus": ["plain"]}, price=4000)]
    samples = [sample(line("promo", 2000, category="promo"), line("plain", 8000))]
    candidate = rule("cand", "percent_off", **HALF_OFF_PROMO)
    profile = simulate(samples, live=live, candidate=candidate, now=NOW).profile
    assert profile["discount_rate_bps"]["max"] == 1000  # 10.00 of 100.00
    assert profile["order_discount_rate_bps"]["max"] == 5000  # plus 40.00 off the plain line


def test_tier_mix_shares_sum_to_a_whole_even_when_they_do_not_divide() -> None:
    samples = [
        sample(line("a", 1000), n=1, member_tier="gold"),
        sample(line("a", 1000), n=2, member_tier="silver"),
        sample(line("a", 1000), n=3),
    ]
    mix = simulate(samples, live=[], candidate=ten_off(), now=NOW).profile["member_tier_mix_bps"]
    assert sum(mix.values()) == 10000
    assert sorted(mix) == ["gold", "none", "silver"]
    assert sorted(mix.values()) == [3333, 3333, 3334]


# -- forecast and blocking --------------------------------------------------------------------


def budgeted(budget: int) -> Rule:
    return ten_off(limits={"budget": budget})


@pytest.mark.parametrize(
    ("budget", "blocked"),
    [(99_999, True), (100_000, False), (100_001, False)],
    ids=["over", "exactly-at", "under"],
)
def test_going_live_is_blocked_only_when_the_forecast_exceeds_the_budget(
    budget: int, blocked: bool
) -> None:
    # 1,000 fen per order (10 % of 100.00) over 100 expected orders.
    report = simulate(
        flat_carts(10000, 10000), live=[], candidate=budgeted(budget), now=NOW, expected_orders=100
    )
    assert report.forecast.forecast_spend == 100_000
    assert report.forecast.budget == budget
    assert report.forecast.exceeds_budget is blocked
    assert report.blocked is blocked


def test_a_candidate_without_a_budget_is_never_blocked() -> None:
    report = simulate(
        flat_carts(10000), live=[], candidate=ten_off(), now=NOW, expected_orders=10**9
    )
    assert report.forecast.budget is None
    assert not report.blocked


def test_rollout_scales_the_forecast() -> None:
    full = simulate(
        flat_carts(10000), live=[], candidate=budgeted(30_000), now=NOW, expected_orders=40
    )
    quarter = simulate(
        flat_carts(10000),
        live=[],
        candidate=budgeted(30_000),
        now=NOW,
        expected_orders=40,
        rollout_bps=2500,
    )
    assert full.forecast.forecast_spend == 40_000
    assert full.blocked
    assert quarter.forecast.forecast_spend == 10_000
    assert not quarter.blocked
    none = simulate(flat_carts(10000), live=[], candidate=ten_off(), now=NOW, rollout_bps=0)
    assert none.forecast.forecast_spend == 0


def test_forecast_is_exact_and_rounds_up_once() -> None:
    # Candidate discounts 1000 and 1001 fen: 1000.5 per order, 3 orders -> 3001.5 -> 3002.
    report = simulate(
        flat_carts(10000, 10010), live=[], candidate=ten_off(), now=NOW, expected_orders=3
    )
    assert report.forecast.candidate_discount_per_order == 1001
    assert report.forecast.forecast_spend == 3002
    # Rolled out to 1 bp of 10**12 orders: 1000.5 * 10**8 exactly, no float drift.
    huge = simulate(
        flat_carts(10000, 10010),
        live=[],
        candidate=ten_off(),
        now=NOW,
        expected_orders=10**12,
        rollout_bps=1,
    )
    assert huge.forecast.forecast_spend == 100_050_000_000


def test_forecast_counts_the_sample_when_no_order_count_is_given() -> None:
    report = simulate(flat_carts(10000, 10000, 0), live=[], candidate=ten_off(), now=NOW)
    assert report.forecast.expected_orders == 3
    assert report.forecast.candidate_discount_per_order == 667  # 2000 / 3, rounded up
    assert report.forecast.forecast_spend == 2000


def test_forecast_reports_the_window_in_whole_hours() -> None:
    candidate = ten_off(valid_from=NOW, valid_until=NOW + timedelta(hours=36, minutes=30))
    report = simulate(flat_carts(10000), live=[], candidate=candidate, now=NOW)
    assert report.forecast.window_hours == 37
    assert (
        simulate(flat_carts(10000), live=[], candidate=ten_off(), now=NOW).forecast.window_hours
        is None
    )


# -- customer facts the candidate needs -------------------------------------------------------


def test_every_sampled_customer_holds_a_coupon_candidate() -> None:
    coupon = rule(
        "cpn", "coupon", benefit="no_threshold", discount=500, per_user_limit=1, quantity=9
    )
    report = simulate(flat_carts(10000, 10000), live=[], candidate=coupon, now=NOW)
    assert report.with_candidate.discount_per_rule == {"cpn": 1000}


def test_the_baseline_prices_customers_as_sampled() -> None:
    old = rule("cpn", "coupon", benefit="no_threshold", discount=300, per_user_limit=1, quantity=9)
    new = rule(
        "cpn",
        "coupon",
        version=2,
        benefit="no_threshold",
        discount=500,
        per_user_limit=1,
        quantity=9,
    )
    samples = [
        sample(line("a", 10000), n=1, coupons=frozenset({"cpn"})),
        sample(line("a", 10000), n=2),
    ]
    report = simulate(samples, live=[old], candidate=new, now=NOW)
    assert report.baseline.discount_per_rule == {"cpn": 300}
    assert report.with_candidate.discount_per_rule == {"cpn": 1000}


def test_every_sampled_customer_holds_a_group_buy_place() -> None:
    group = rule("grp", "group_buy", price=6000, group_size=3)
    report = simulate(flat_carts(10000), live=[], candidate=group, now=NOW)
    assert report.with_candidate.discount_per_rule == {"grp": 4000}


def test_a_flash_sale_candidate_counts_no_units_bought_yet() -> None:
    flash = rule("fs", "flash_sale", price=5000, stock=10, per_user_limit=1)
    samples = [sample(line("a", 10000), flash_sale_used={"fs": 1}, unavailable={"fs": "sold out"})]
    report = simulate(samples, live=[], candidate=flash, now=NOW)
    assert report.with_candidate.discount_per_rule == {"fs": 5000}


def test_a_first_order_candidate_keeps_each_customers_own_first_order_fact() -> None:
    first = rule("fo", "first_order", discount=1000)
    samples = [sample(line("a", 10000), n=1, first_order=True), sample(line("a", 10000), n=2)]
    report = simulate(samples, live=[], candidate=first, now=NOW)
    assert report.with_candidate.orders_per_rule == {"fo": 1}
    assert report.profile["discounted_share_bps"] == 5000


# -- the pricing instant ----------------------------------------------------------------------


def test_a_candidate_not_started_yet_is_priced_at_its_start_on_both_sides() -> None:
    start = NOW + timedelta(days=3)
    candidate = ten_off(valid_from=start, valid_until=start + timedelta(days=1))
    ends_before = ten_off("live-ends", valid_until=start - timedelta(hours=1))
    report = simulate(flat_carts(10000), live=[ends_before], candidate=candidate, now=NOW)
    assert report.priced_at == start
    assert report.with_candidate.discount_per_rule == {"cand": 1000}
    assert report.baseline.discount == 0  # the live rule has ended by then


def test_pricing_instant_for_an_ended_window() -> None:
    start, end = NOW - timedelta(days=2), NOW - timedelta(days=1)
    assert pricing_instant(ten_off(valid_from=start, valid_until=end), NOW) == start
    open_start = ten_off(valid_until=end)
    assert pricing_instant(open_start, NOW) == end - timedelta(microseconds=1)
    assert pricing_instant(ten_off(valid_from=start), NOW) == NOW


def test_simulate_refuses_a_naive_now() -> None:
    with pytest.raises(PricingError, match="timezone-aware"):
        simulate(flat_carts(100), live=[], candidate=ten_off(), now=datetime(2026, 1, 1))  # noqa: DTZ001


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"samples": []}, "sample is empty"),
        ({"rollout_bps": 10_001}, "rollout_bps"),
        ({"rollout_bps": -1}, "rollout_bps"),
        ({"expected_orders": -5}, "expected_orders"),
        ({"source": "guess"}, "source"),
    ],
)
def test_simulate_refuses_arguments_out_of_range(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {
        "samples": flat_carts(100),
        "live": [],
        "candidate": ten_off(),
        "now": NOW,
    }
    with pytest.raises(ValueError, match=message):
        simulate(**(args | kwargs))


# -- the report as data -----------------------------------------------------------------------


def full_report() -> SimulationReport:
    shop = catalogue()
    live = [rule("live-th", "threshold", tiers=[{"min_spend": 5000, "discount": 700}])]
    candidate = rule(
        "cand",
        "percent_off",
        percent="12.5",
        valid_from=NOW,
        valid_until=NOW + timedelta(hours=48),
        limits={"budget": 1_000_000},
    )
    return simulate(
        synthetic_sample(shop, size=200, seed=9),
        live=live,
        candidate=candidate,
        now=NOW,
        expected_orders=12_345,
        rollout_bps=3333,
        source="synthetic",
    )


def test_as_dict_is_json_ready_with_no_floats() -> None:
    data = full_report().as_dict()
    assert floats_in(data) == []
    assert json.loads(json.dumps(data)) == data
    assert data["source"] == "synthetic"
    assert data["priced_at"] == NOW.isoformat()
    assert data["blocked"] is data["forecast"]["exceeds_budget"]
    assert data["with_candidate"]["discount_per_rule"]["cand"] > 0
    assert "cand" not in data["baseline"]["discount_per_rule"]


def test_floats_in_finds_a_float_deep_down() -> None:
    # The walker above is what proves "no floats": it must be able to see one.
    assert floats_in({"a": [1, {"b": 0.5}]}) == [".a[1].b: float"]


def test_report_is_the_same_for_the_same_inputs() -> None:
    assert full_report().as_dict() == full_report().as_dict()
