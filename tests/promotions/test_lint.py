"""Semantic lint: every check fires on a bad example and stays quiet on a near-miss good one; the
classic slips (满50减200, yuan typed as fen); the worst-cart search across stacked rules; raw specs
that do not parse; and the bundled 双11 example against its catalogue. Amounts are fen."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from promoguard.examples import campaigns_json, catalogue_json, scenarios_json
from promoguard.promotions.catalogue import Catalogue, CatalogueItem
from promoguard.promotions.lint import (
    CHECKS,
    Finding,
    LintConfig,
    LintError,
    Severity,
    has_errors,
    lint,
    lint_rules,
)
from promoguard.promotions.rules import Rule, load_rules, parse_rule

CST = timezone(timedelta(hours=8))
NOW = datetime(2026, 11, 1, 0, 0, tzinfo=CST)
STRICT = LintConfig(max_discount_ratio=Decimal("0.5"))
"""A stricter stacking limit than the default 0.7, which the stacking fixtures are built around."""
ALL: dict[str, Any] = {"all_items": True}
WINDOW: dict[str, Any] = {
    "valid_from": (NOW + timedelta(days=1)).isoformat(),
    "valid_until": (NOW + timedelta(days=11)).isoformat(),
}

SHOP = Catalogue(
    member_tiers=frozenset({"silver", "gold"}),
    items=(
        CatalogueItem(
            sku="coat", category="apparel", unit_price=40000, floor_price=24000, cost=18000
        ),
        CatalogueItem(sku="scarf", category="apparel", unit_price=9000, cost=3000),
        CatalogueItem(sku="socks", category="apparel", unit_price=3000, cost=1000),
        CatalogueItem(
            sku="phone", category="electronics", unit_price=500000, floor_price=360000, cost=330000
        ),
        CatalogueItem(sku="case", category="electronics", unit_price=5000, cost=1000),
        CatalogueItem(sku="tea", category="tea", unit_price=12800, cost=4000),
    ),
)


# -- builders ---------------------------------------------------------------------------------


def spec(kind: str, rule_id: str = "cand", *, scope: Any = None, **fields: Any) -> dict[str, Any]:
    """A raw spec with a ten-day window starting tomorrow; store-wide unless a scope is given.
    A field given as None is left out."""
    data = {"kind": kind, "id": rule_id, "scope": scope or ALL, **WINDOW, **fields}
    return {key: value for key, value in data.items() if value is not None}


def rule(kind: str, rule_id: str = "cand", **fields: Any) -> Rule:
    return parse_rule(spec(kind, rule_id, **fields))


def threshold(*tiers: tuple[int, int], rule_id: str = "cand", **fields: Any) -> dict[str, Any]:
    """满 min_spend 减 discount, one tier per pair."""
    return spec(
        "threshold",
        rule_id,
        tiers=[{"min_spend": spend, "discount": off} for spend, off in tiers],
        **fields,
    )


def first_order(**fields: Any) -> dict[str, Any]:
    fields.setdefault("limits", {"per_identity": 1})
    return spec("first_order", discount=1000, min_spend=5000, **fields)


def coupon(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "benefit": "percent",
        "percent": "10",
        "cap": 2000,
        "per_user_limit": 1,
        "quantity": 1000,
    }
    return spec("coupon", **(base | fields))


@dataclass(frozen=True)
class Case:
    """One lint call: a candidate and everything it is linted with."""

    candidate: Rule | dict[str, Any]
    live: tuple[Rule, ...] = ()
    catalogue: Catalogue | None = None
    previous: Rule | None = None
    config: LintConfig = field(default_factory=LintConfig)

    def run(self) -> list[Finding]:
        return lint(
            self.candidate,
            live=self.live,
            catalogue=self.catalogue,
            previous=self.previous,
            now=NOW,
            config=self.config,
        )


# -- the stacking example: no rule alone takes half, together they take 57 % -------------------

TEA_SPECIAL = rule("fixed_price", "tea-special", scope={"skus": ["tea"]}, price=9000)
"""¥128 tea at ¥90 (29.7 % off)."""
STORE_THRESHOLD = parse_rule(threshold((6000, 2500), rule_id="store-60-25"))
"""满60减25 store-wide: at most 41.7 % off, at exactly ¥60."""
TEA_COUPON = coupon(
    benefit="no_threshold", percent=None, cap=None, discount=1000, scope={"skus": ["tea"]}
)
"""¥10 off the tea (7.8 %)."""


# -- every check: a bad example and a good one ---------------------------------------------------

CASES: dict[str, tuple[Case, Case]] = {
    "L001": (
        Case(spec("threshold", tiers=[])),
        Case(threshold((20000, 2000))),
    ),
    "L002": (
        Case(threshold((20000, 2000), currency="USD"), catalogue=SHOP),
        Case(threshold((20000, 2000)), catalogue=SHOP),
    ),
    "L101": (
        Case(threshold((5000, 20000))),  # 满50减200 typed for 满200减50
        Case(threshold((20000, 5000))),
    ),
    "L102": (
        Case(threshold((20000, 15000))),
        Case(threshold((20000, 10000))),
    ),
    "L103": (
        Case(threshold((10000, 3000), (20000, 2000))),
        Case(threshold((10000, 2000), (20000, 3000))),
    ),
    "L104": (
        Case(spec("percent_off", percent="0")),
        Case(spec("percent_off", percent="10")),
    ),
    "L105": (
        Case(spec("percent_off", percent="80")),
        Case(spec("percent_off", percent="70")),
    ),
    "L106": (
        Case(threshold((20, 10), (20000, 2000), (40000, 5000))),
        Case(threshold((10000, 1000), (20000, 2000), (40000, 5000))),
    ),
    "L107": (
        Case(spec("fixed_price", scope={"skus": ["coat"]}, price=400), catalogue=SHOP),
        Case(spec("fixed_price", scope={"skus": ["coat"]}, price=30000), catalogue=SHOP),
    ),
    "L201": (
        Case(spec("fixed_price", scope={"skus": ["coat"]}, price=20000), catalogue=SHOP),
        Case(spec("fixed_price", scope={"skus": ["coat"]}, price=30000), catalogue=SHOP),
    ),
    "L202": (
        Case(TEA_COUPON, live=(TEA_SPECIAL, STORE_THRESHOLD), catalogue=SHOP, config=STRICT),
        Case(TEA_COUPON, live=(TEA_SPECIAL,), catalogue=SHOP, config=STRICT),
    ),
    "L301": (
        Case(spec("percent_off", scope={"categories": ["shoes"]}, percent="10"), catalogue=SHOP),
        Case(spec("percent_off", scope={"categories": ["apparel"]}, percent="10"), catalogue=SHOP),
    ),
    "L302": (
        Case(spec("fixed_price", price=9900)),
        Case(spec("fixed_price", scope={"skus": ["scarf"]}, price=8000)),
    ),
    "L303": (
        Case(spec("member_price", offers=[{"tier": "diamond", "percent": "10"}]), catalogue=SHOP),
        Case(spec("member_price", offers=[{"tier": "gold", "percent": "10"}]), catalogue=SHOP),
    ),
    "L304": (
        Case(first_order(), config=LintConfig(identity_signals=False)),
        Case(first_order(), config=LintConfig(identity_signals=True)),
    ),
    "L305": (
        Case(first_order(limits={})),
        Case(first_order(limits={"per_identity": 1})),
    ),
    "L306": (
        Case(spec("group_buy", price=5900, group_size=1)),
        Case(spec("group_buy", price=5900, group_size=2)),
    ),
    "L307": (
        Case(spec("flash_sale", price=100, per_user_limit=1)),  # no stock
        Case(spec("flash_sale", price=100, stock=100, per_user_limit=1)),
    ),
    "L308": (
        Case(coupon(cap=None)),
        Case(coupon(cap=2000)),
    ),
    "L401": (
        Case(
            spec(
                "percent_off",
                percent="10",
                valid_from=(NOW + timedelta(days=3)).isoformat(),
                valid_until=(NOW + timedelta(days=2)).isoformat(),
            )
        ),
        Case(
            spec(
                "percent_off",
                percent="10",
                valid_from=(NOW + timedelta(days=2)).isoformat(),
                valid_until=(NOW + timedelta(days=3)).isoformat(),
            )
        ),
    ),
    "L402": (
        Case(
            spec("percent_off", percent="10", valid_from=None, valid_until="2025-11-12T00:00+08:00")
        ),
        Case(
            spec("percent_off", percent="10", valid_from=None, valid_until="2026-11-12T00:00+08:00")
        ),
    ),
    "L403": (
        Case(spec("percent_off", percent="10", valid_until=None)),
        Case(spec("percent_off", percent="10")),
    ),
    "L501": (
        Case(
            spec("percent_off", scope={"categories": ["apparel"]}, percent="10"),
            catalogue=SHOP,
            previous=rule("percent_off", scope={"skus": ["coat"]}, percent="10"),
        ),
        Case(
            spec("percent_off", scope={"categories": ["apparel"]}, percent="10"),
            catalogue=SHOP,
            previous=rule("percent_off", scope={"categories": ["apparel"]}, percent="10"),
        ),
    ),
    "L502": (
        Case(spec("percent_off", percent="30"), previous=rule("percent_off", percent="10")),
        Case(spec("percent_off", percent="15"), previous=rule("percent_off", percent="10")),
    ),
}


def codes(findings: list[Finding]) -> set[str]:
    return {f.code for f in findings}


def test_every_check_in_the_catalogue_has_a_bad_and_a_good_example() -> None:
    assert set(CASES) == set(CHECKS)


@pytest.mark.parametrize("code", sorted(CHECKS))
def test_check_fires_on_its_bad_example(code: str) -> None:
    findings = CASES[code][0].run()
    assert code in codes(findings)
    fired = [f for f in findings if f.code == code]
    assert all(f.severity is CHECKS[code].severity for f in fired)
    assert all(f.name == CHECKS[code].name for f in fired)


@pytest.mark.parametrize("code", sorted(CHECKS))
def test_check_stays_quiet_on_its_good_example(code: str) -> None:
    assert code not in codes(CASES[code][1].run())


@pytest.mark.parametrize("code", sorted(CHECKS))
def test_every_finding_has_words_a_fix_and_its_checks_name(code: str) -> None:
    for case in CASES[code]:
        for finding in case.run():
            assert finding.message.strip()
            assert finding.hint.strip()
            assert finding.hint == CHECKS[finding.code].hint
            assert finding.rule_id
            assert finding.as_dict()["severity"] == finding.severity.value


# -- the catalogue of checks ----------------------------------------------------------------


def test_check_codes_are_stable_strings_with_snake_case_names() -> None:
    assert all(code == check.code for code, check in CHECKS.items())
    names = [check.name for check in CHECKS.values()]
    assert len(set(names)) == len(names)
    for check in CHECKS.values():
        assert check.code[0] == "L"
        assert len(check.code) == 4
        assert check.code[1:].isdigit()
        assert check.name.replace("_", "").isalpha()
        assert check.name == check.name.lower()
        assert check.title
        assert check.hint
        assert check.severity in (Severity.ERROR, Severity.WARNING)


def test_the_check_catalogue_cannot_be_changed_by_a_caller() -> None:
    with pytest.raises(TypeError):
        CHECKS["L999"] = CHECKS["L001"]  # type: ignore[index]


# -- the classic slips ----------------------------------------------------------------------


def test_classic_50_off_200_typed_for_200_off_50_is_an_error() -> None:
    findings = lint(threshold((5000, 20000)), now=NOW)
    assert has_errors(findings)
    (finding,) = [f for f in findings if f.code == "L101"]
    assert finding.severity is Severity.ERROR
    assert finding.path == "tiers[0].discount"
    assert "满50.00减200.00" in finding.message


def test_discount_equal_to_its_spend_is_an_error_one_fen_less_a_warning() -> None:
    assert "L101" in codes(lint(threshold((10000, 10000)), now=NOW))
    just_under = codes(lint(threshold((10000, 9999)), now=NOW))
    assert "L101" not in just_under
    assert "L102" in just_under


def test_200_off_50_is_clean() -> None:
    assert lint(threshold((20000, 5000)), now=NOW) == []


def test_threshold_coupon_discount_above_its_spend_is_an_error() -> None:
    bad = coupon(benefit="threshold", percent=None, cap=None, min_spend=5000, discount=20000)
    assert "L101" in codes(lint(bad, now=NOW))


def test_yuan_typed_as_fen_in_one_tier_is_flagged_at_that_tier() -> None:
    findings = lint(threshold((20000, 20), (30000, 3000), (50000, 6000)), now=NOW)
    mixups = [f for f in findings if f.code == "L106"]
    assert [f.path for f in mixups] == ["tiers[0].discount"]
    assert "about 1/150 of" in mixups[0].message


def test_member_prices_20_and_20000_are_a_unit_mixup() -> None:
    offers = [{"tier": "gold", "price": 20}, {"tier": "silver", "price": 20000}]
    findings = lint(spec("member_price", scope={"skus": ["coat"]}, offers=offers), now=NOW)
    assert [f.path for f in findings if f.code == "L106"] == ["offers[0].price"]


def test_unit_price_100x_the_catalogue_is_flagged() -> None:
    high = spec("fixed_price", scope={"skus": ["tea"]}, price=1280000)
    assert "L107" in codes(lint(high, catalogue=SHOP, now=NOW))


def test_minimum_spend_far_below_every_price_in_scope_is_flagged() -> None:
    findings = lint(threshold((50, 10), scope={"skus": ["coat"]}), catalogue=SHOP, now=NOW)
    assert [f.path for f in findings if f.code == "L107"] == ["tiers[0].min_spend"]


def test_tiered_percent_that_shrinks_with_quantity_is_an_error() -> None:
    tiers = [{"min_quantity": 2, "percent": "20"}, {"min_quantity": 3, "percent": "10"}]
    findings = lint(spec("tiered_percent", tiers=tiers), now=NOW)
    assert [f.path for f in findings if f.code == "L103"] == ["tiers[1].percent"]


def test_buy_one_get_three_free_is_above_the_percent_cap() -> None:
    free = spec("bxgy", scope={"skus": ["socks"]}, buy=1, get=3)
    assert "L105" in codes(lint(free, now=NOW))
    half = spec("bxgy", scope={"skus": ["socks"]}, buy=1, get=1)
    assert "L105" not in codes(lint(half, now=NOW))


def test_percent_above_a_raised_cap_is_allowed() -> None:
    deep = spec("percent_off", percent="80")
    assert "L105" not in codes(lint(deep, now=NOW, config=LintConfig(max_percent=Decimal(85))))


def test_share_of_threshold_follows_the_config() -> None:
    findings = lint(threshold((20000, 8000)), now=NOW)
    assert "L102" not in codes(findings)
    strict = LintConfig(max_share_of_threshold=Decimal("0.3"))
    assert "L102" in codes(lint(threshold((20000, 8000)), now=NOW, config=strict))


# -- kinds, scope, windows ------------------------------------------------------------------


def test_flash_sale_whose_per_user_cap_is_the_whole_stock_is_unbounded() -> None:
    bad = spec("flash_sale", scope={"skus": ["phone"]}, price=399900, stock=5, per_user_limit=5)
    (finding,) = [f for f in lint(bad, now=NOW) if f.code == "L307"]
    assert finding.path == "per_user_limit"


def test_coupon_with_no_quantity_is_unbounded_at_its_field() -> None:
    bad = coupon()
    del bad["quantity"]
    findings = lint(bad, now=NOW)
    assert [(f.code, f.path) for f in findings] == [("L308", "quantity")]


def test_percent_coupon_without_cap_but_with_a_budget_is_bounded() -> None:
    budgeted = coupon(cap=None, limits={"budget": 1_000_000})
    assert "L308" not in codes(lint(budgeted, now=NOW))


def test_store_wide_rule_named_after_a_category_is_flagged() -> None:
    named = spec("percent_off", name="服饰Apparel周 9折", percent="10")
    assert "L302" in codes(lint(named, catalogue=SHOP, now=NOW))
    plain = spec("percent_off", name="双11 全场9折", percent="10")
    assert "L302" not in codes(lint(plain, catalogue=SHOP, now=NOW))
    excluded = spec(
        "percent_off",
        name="全场9折 except apparel",
        scope={"all_items": True, "exclude_categories": ["apparel"]},
        percent="10",
    )
    assert "L302" not in codes(lint(excluded, catalogue=SHOP, now=NOW))


def test_window_far_longer_than_allowed_is_a_warning() -> None:
    long = spec("percent_off", percent="10", valid_until=(NOW + timedelta(days=200)).isoformat())
    (finding,) = [f for f in lint(long, now=NOW) if f.code == "L403"]
    assert finding.severity is Severity.WARNING
    assert "199 days" in finding.message


def test_audience_widening_without_a_catalogue_compares_quantities() -> None:
    before = parse_rule(coupon(quantity=1000))
    assert "L501" in codes(lint(coupon(quantity=5000), previous=before, now=NOW))
    assert "L501" not in codes(lint(coupon(quantity=1500), previous=before, now=NOW))


def test_dropping_a_redemption_cap_widens_the_audience() -> None:
    before = rule("percent_off", percent="10", limits={"max_redemptions": 100})
    findings = lint(spec("percent_off", percent="10"), previous=before, now=NOW)
    (finding,) = [f for f in findings if f.code == "L501"]
    assert finding.path == "limits.max_redemptions"
    assert "no cap" in finding.message


def test_deeper_special_price_is_measured_against_list_prices() -> None:
    before = rule("fixed_price", scope={"skus": ["coat"]}, price=36000)  # 10 % off
    deeper = spec("fixed_price", scope={"skus": ["coat"]}, price=30000)  # 25 % off
    assert "L502" in codes(lint(deeper, previous=before, catalogue=SHOP, now=NOW))
    # Without a catalogue the depth of a set price is unknown: nothing is compared.
    assert "L502" not in codes(lint(deeper, previous=before, now=NOW))


# -- catalogue: floors and the worst stacked cart -------------------------------------------


def test_floor_breach_names_the_skus_and_their_prices() -> None:
    deep = spec("percent_off", scope={"categories": ["electronics"]}, percent="40")
    (finding,) = [f for f in lint(deep, catalogue=SHOP, now=NOW) if f.code == "L201"]
    assert finding.path == "percent"
    assert "phone at 3000.00 a unit, lowest allowed 3600.00" in finding.message
    assert "case" not in finding.message  # 40 % off ¥50 is ¥30, above its ¥10 cost


def test_floor_check_reaches_the_threshold_tier_with_several_units() -> None:
    # 满100减45 on ¥30 socks costing ¥25: four pairs reach it and cost ¥75, ¥18.75 a pair.
    cheap = Catalogue(
        items=(CatalogueItem(sku="socks", category="apparel", unit_price=3000, cost=2500),)
    )
    findings = lint(threshold((10000, 4500)), catalogue=cheap, now=NOW)
    (finding,) = [f for f in findings if f.code == "L201"]
    assert "socks at 18.75 a unit (4 units)" in finding.message


def test_member_price_is_checked_for_every_tier_offered() -> None:
    offers = [{"tier": "silver", "percent": "5"}, {"tier": "gold", "price": 20000}]
    findings = lint(
        spec("member_price", scope={"skus": ["coat"]}, offers=offers), catalogue=SHOP, now=NOW
    )
    assert "L201" in codes(findings)


def test_worst_cart_search_finds_a_stack_no_single_rule_has_alone() -> None:
    for alone in (TEA_SPECIAL, STORE_THRESHOLD, parse_rule(TEA_COUPON)):
        assert "L202" not in codes(lint(alone, catalogue=SHOP, now=NOW, config=STRICT))
    findings = lint(
        TEA_COUPON, live=[TEA_SPECIAL, STORE_THRESHOLD], catalogue=SHOP, now=NOW, config=STRICT
    )
    (finding,) = [f for f in findings if f.code == "L202"]
    assert finding.severity is Severity.ERROR
    # ¥128 tea: ¥90 special price, 满60减25, ¥10 coupon: ¥55 paid, ¥73 (57.03 %) off.
    assert "1 × tea" in finding.message
    assert "73.00 off (57.03%)" in finding.message
    assert "from cand, store-60-25, tea-special" in finding.message


def test_worst_cart_search_respects_a_higher_shop_limit() -> None:
    lenient = LintConfig(max_discount_ratio=Decimal("0.6"))
    findings = lint(
        TEA_COUPON, live=[TEA_SPECIAL, STORE_THRESHOLD], catalogue=SHOP, now=NOW, config=lenient
    )
    assert "L202" not in codes(findings)


def test_worst_cart_search_leaves_out_rules_never_live_at_the_same_time() -> None:
    ended = STORE_THRESHOLD.model_copy(
        update={"valid_from": NOW - timedelta(days=5), "valid_until": NOW + timedelta(hours=1)}
    )
    findings = lint(TEA_COUPON, live=[TEA_SPECIAL, ended], catalogue=SHOP, now=NOW, config=STRICT)
    assert "L202" not in codes(findings)


def test_worst_cart_search_blames_only_rules_that_discount_the_cart() -> None:
    # A store-wide exclusive 10 % never touches the tea, which the special price discounts
    # first: the 57 % tea stack is in its scope but is not its finding.
    exclusive = spec("percent_off", rule_id="excl-10", percent="10", exclusive=True)
    live = [TEA_SPECIAL, STORE_THRESHOLD, parse_rule(TEA_COUPON)]
    assert "L202" not in codes(lint(exclusive, live=live, catalogue=SHOP, now=NOW, config=STRICT))
    shared = spec("percent_off", rule_id="shared-10", percent="10")
    assert "L202" in codes(lint(shared, live=live, catalogue=SHOP, now=NOW, config=STRICT))


def test_worst_cart_search_combines_skus_to_reach_a_threshold() -> None:
    # 满100减49 on a ¥70 bag and ¥30 socks: alone, two bags (35 %) or four pairs (40.8 %) are the
    # best; a bag and a pair reach ¥100 exactly and take 49 %.
    shop = Catalogue(
        items=(
            CatalogueItem(sku="bag", category="bags", unit_price=7000),
            CatalogueItem(sku="socks", category="apparel", unit_price=3000),
        )
    )
    findings = lint(
        threshold((10000, 4900), scope={"skus": ["bag", "socks"]}),
        catalogue=shop,
        now=NOW,
        config=LintConfig(max_discount_ratio=Decimal("0.45")),
    )
    (finding,) = [f for f in findings if f.code == "L202"]
    assert "the cart 1 × bag, 1 × socks (list 100.00) gets 49.00 off (49%)" in finding.message
    assert "above the 45%" in finding.message


def test_lint_rules_stacks_each_rule_with_the_files_other_rules() -> None:
    rules = [TEA_SPECIAL, STORE_THRESHOLD, TEA_COUPON]
    findings = lint_rules(rules, catalogue=SHOP, now=NOW, config=STRICT)
    assert {f.rule_id for f in findings if f.code == "L202"} == {
        "cand",
        "store-60-25",
        "tea-special",
    }


def test_lint_rules_takes_a_live_rule_with_a_files_id_as_its_previous_version() -> None:
    live = rule("percent_off", "sale", percent="10")
    findings = lint_rules(
        [spec("percent_off", "sale", percent="30")], live=[live], catalogue=SHOP, now=NOW
    )
    assert "L502" in codes(findings)


def test_lint_stacks_the_candidate_in_place_of_its_own_live_version() -> None:
    # Live, the coupon takes ¥30; the candidate version takes ¥10 (a 57 % cart, under 60 %).
    old = parse_rule(TEA_COUPON | {"discount": 3000})
    lenient = LintConfig(max_discount_ratio=Decimal("0.6"))
    findings = lint(
        TEA_COUPON,
        live=[TEA_SPECIAL, STORE_THRESHOLD, old],
        catalogue=SHOP,
        now=NOW,
        config=lenient,
    )
    assert "L202" not in codes(findings)
    assert "L202" in codes(
        lint(old, live=[TEA_SPECIAL, STORE_THRESHOLD], catalogue=SHOP, now=NOW, config=lenient)
    )


def test_catalogue_checks_are_skipped_without_a_catalogue() -> None:
    bad = spec("fixed_price", scope={"skus": ["nowhere"]}, price=1)
    assert codes(lint(bad, now=NOW)).isdisjoint({"L107", "L201", "L202", "L301", "L303"})
    assert "L301" in codes(lint(bad, catalogue=SHOP, now=NOW))


# -- specs that do not parse ----------------------------------------------------------------


def test_unparseable_spec_gives_one_coded_finding_per_field_path() -> None:
    bad = {
        "kind": "threshold",
        "id": "broken",
        "scope": {},
        "tiers": [{"min_spend": 0, "discount": 5}],
    }
    findings = lint(bad, now=NOW)
    assert {(f.code, f.path) for f in findings} == {
        ("L001", "scope"),
        ("L001", "tiers[0].min_spend"),
    }
    assert all(f.rule_id == "broken" for f in findings)
    assert all(f.path in f.message for f in findings)
    assert has_errors(findings)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"percent": "0"}, ("L104", "percent")),
        ({"percent": "-5"}, ("L104", "percent")),
        ({"percent": "120"}, ("L105", "percent")),
        ({"percent": "10.125"}, ("L001", "percent")),
    ],
)
def test_parser_refusals_map_to_their_checks(
    changes: dict[str, Any], expected: tuple[str, str]
) -> None:
    findings = lint(spec("percent_off", **changes), now=NOW)
    assert [(f.code, f.path) for f in findings] == [expected]


def test_member_offer_percent_below_zero_keeps_its_path() -> None:
    bad = spec("member_price", offers=[{"tier": "gold", "percent": "-1"}])
    assert [(f.code, f.path) for f in lint(bad, now=NOW)] == [("L104", "offers[0].percent")]


def test_flash_sale_with_zero_stock_and_cap_is_unbounded() -> None:
    bad = spec("flash_sale", price=100, stock=0, per_user_limit=0)
    assert {(f.code, f.path) for f in lint(bad, now=NOW)} == {
        ("L307", "stock"),
        ("L307", "per_user_limit"),
    }


def test_unparseable_spec_without_an_id_is_named_by_its_place_in_the_file() -> None:
    findings = lint_rules([threshold((20000, 2000)), {"kind": "nope"}], now=NOW)
    assert [(f.rule_id, f.code, f.path) for f in findings] == [("[1]", "L001", "kind")]


def test_a_rule_twice_in_a_file_is_flagged_once() -> None:
    findings = lint_rules([threshold((20000, 2000)), threshold((30000, 3000))], now=NOW)
    assert [(f.rule_id, f.code, f.path) for f in findings] == [("cand", "L001", "id")]


# -- output ---------------------------------------------------------------------------------


def test_findings_are_sorted_by_rule_severity_code_and_path() -> None:
    findings = lint_rules(
        [
            threshold((5000, 20000), (6000, 100), rule_id="b", valid_until=None),
            spec("percent_off", "a", percent="90", valid_until=None),
        ],
        now=NOW,
    )
    keys = [(f.rule_id, f.severity is Severity.WARNING, f.code, f.path) for f in findings]
    assert keys == sorted(keys)
    assert [f.rule_id for f in findings][:2] == ["a", "a"]
    assert findings[0].severity is Severity.ERROR


def test_lint_is_deterministic() -> None:
    first = lint_rules([TEA_SPECIAL, STORE_THRESHOLD, TEA_COUPON], catalogue=SHOP, now=NOW)
    again = lint_rules([TEA_COUPON, STORE_THRESHOLD, TEA_SPECIAL], catalogue=SHOP, now=NOW)
    assert first == again


def test_finding_as_dict_is_json_ready() -> None:
    (finding,) = [f for f in lint(threshold((5000, 20000)), now=NOW) if f.code == "L101"]
    data = finding.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data == {
        "code": "L101",
        "name": "discount_exceeds_threshold",
        "severity": "error",
        "rule_id": "cand",
        "path": "tiers[0].discount",
        "message": finding.message,
        "hint": finding.hint,
    }


def test_has_errors_ignores_warnings() -> None:
    warnings = lint(spec("percent_off", percent="10", valid_until=None), now=NOW)
    assert warnings
    assert not has_errors(warnings)
    assert not has_errors([])


def test_naive_now_is_refused() -> None:
    with pytest.raises(LintError):
        lint(threshold((20000, 2000)), now=datetime(2026, 11, 1))  # noqa: DTZ001


# -- the bundled 双11 example --------------------------------------------------------------------

EXAMPLE_NOW = datetime(2026, 10, 31, 12, 0, tzinfo=CST)
EXAMPLE_LIMIT = LintConfig()
"""The default stacking limit (0.7): the example's 三人团 sells ¥128 tea at ¥59 (54 % off) on
purpose, and stacked with the first-order offer and coupons reaches 64.61 %."""


def example() -> tuple[list[Rule], Catalogue]:
    return load_rules(campaigns_json()), Catalogue.model_validate_json(catalogue_json())


def test_bundled_example_lints_without_errors_against_its_catalogue() -> None:
    rules, shop = example()
    findings = lint_rules(rules, catalogue=shop, now=EXAMPLE_NOW, config=EXAMPLE_LIMIT)
    assert not has_errors(findings), [f.as_dict() for f in findings if f.severity == "error"]
    assert {f.code for f in findings} == {"L305"}  # the first-order offer has no identity cap


def test_bundled_example_at_a_strict_limit_errs_only_on_its_deepest_stacks() -> None:
    rules, shop = example()
    errors = [
        f
        for f in lint_rules(rules, catalogue=shop, now=EXAMPLE_NOW, config=STRICT)
        if f.severity == "error"
    ]
    assert {f.code for f in errors} == {"L202"}
    assert "d11-tea-group" in {f.rule_id for f in errors}


def test_bundled_catalogue_lists_every_sku_of_the_example_carts_as_the_carts_price_it() -> None:
    _, shop = example()
    by_sku = {item.sku: item for item in shop.items}
    carts = json.loads(scenarios_json())
    for scenario in carts["scenarios"]:
        for line in scenario["cart"]["lines"]:
            item = by_sku[line["sku"]]
            assert item.category == line["category"]
            assert item.unit_price == line["unit_price"]
            assert set(line.get("tags", ())) <= item.tags
            if "floor_price" in line:
                assert item.floor_price is not None
                assert item.floor_price >= line["floor_price"]
    assert len(shop.items) >= 30
    offered = {o["tier"] for r in json.loads(campaigns_json()) for o in r.get("offers", ())}
    assert offered <= shop.member_tiers == {"silver", "gold", "platinum"}


def test_lint_at_utc_and_at_beijing_time_agree() -> None:
    rules, shop = example()
    at_utc = EXAMPLE_NOW.astimezone(UTC)
    assert lint_rules(rules, catalogue=shop, now=at_utc, config=EXAMPLE_LIMIT) == lint_rules(
        rules, catalogue=shop, now=EXAMPLE_NOW, config=EXAMPLE_LIMIT
    )


def test_something_that_is_not_a_spec_object_is_an_l001_finding() -> None:
    findings = lint_rules([5], now=NOW)  # type: ignore[list-item]
    assert [(f.code, f.rule_id) for f in findings] == [("L001", "[0]")]
