"""Promotion rule specs: parsing every kind, precise error paths, round-trips, schema, scope."""

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promoguard.promotions.rules import (
    SCHEMA_VERSION,
    BxGy,
    Coupon,
    FirstOrder,
    FixedPrice,
    FlashSale,
    GroupBuy,
    Layer,
    MemberPrice,
    PercentOff,
    RuleSpecError,
    Scope,
    Threshold,
    TieredPercent,
    dump_rules,
    load_rules,
    parse_rule,
    rule_json_schema,
)

ALL_KINDS = {
    "threshold",
    "percent_off",
    "tiered_percent",
    "fixed_price",
    "bxgy",
    "member_price",
    "first_order",
    "group_buy",
    "flash_sale",
    "coupon",
}

CST = timezone(timedelta(hours=8))


def _base(kind: str, rule_id: str | None = None) -> dict[str, Any]:
    return {"kind": kind, "id": rule_id or f"r-{kind}", "scope": {"all_items": True}}


VALID: dict[str, dict[str, Any]] = {
    "threshold": {
        **_base("threshold"),
        "tiers": [{"min_spend": 10000, "discount": 1000}, {"min_spend": 20000, "discount": 3000}],
    },
    "percent_off": {**_base("percent_off"), "percent": "20", "cap": 5000},
    "tiered_percent": {
        **_base("tiered_percent"),
        "tiers": [{"min_quantity": 2, "percent": "10"}, {"min_quantity": 3, "percent": "20"}],
    },
    "fixed_price": {**_base("fixed_price"), "scope": {"skus": ["SKU-1"]}, "price": 9900},
    "bxgy": {**_base("bxgy"), "buy": 1, "get": 1, "percent": "50"},
    "member_price": {
        **_base("member_price"),
        "offers": [{"tier": "gold", "price": 8800}, {"tier": "silver", "percent": "5"}],
    },
    "first_order": {**_base("first_order"), "discount": 500},
    "group_buy": {**_base("group_buy"), "price": 6600, "group_size": 3},
    "flash_sale": {**_base("flash_sale"), "price": 100, "stock": 10, "per_user_limit": 1},
    "coupon_threshold": {
        **_base("coupon", "c-threshold"),
        "benefit": "threshold",
        "min_spend": 10000,
        "discount": 1000,
        "per_user_limit": 1,
        "quantity": 1000,
    },
    "coupon_percent": {
        **_base("coupon", "c-percent"),
        "benefit": "percent",
        "percent": "15",
        "cap": 2000,
        "per_user_limit": 2,
        "quantity": 500,
    },
    "coupon_no_threshold": {
        **_base("coupon", "c-none"),
        "benefit": "no_threshold",
        "discount": 300,
        "per_user_limit": 1,
        "quantity": 100,
    },
}

EXPECTED: dict[str, tuple[type, Layer]] = {
    "threshold": (Threshold, Layer.ORDER),
    "percent_off": (PercentOff, Layer.ORDER),
    "tiered_percent": (TieredPercent, Layer.COUNT),
    "fixed_price": (FixedPrice, Layer.ITEM),
    "bxgy": (BxGy, Layer.COUNT),
    "member_price": (MemberPrice, Layer.ITEM),
    "first_order": (FirstOrder, Layer.ORDER),
    "group_buy": (GroupBuy, Layer.ITEM),
    "flash_sale": (FlashSale, Layer.ITEM),
    "coupon_threshold": (Coupon, Layer.COUPON),
    "coupon_percent": (Coupon, Layer.COUPON),
    "coupon_no_threshold": (Coupon, Layer.COUPON),
}


def _spec(name: str, /, **changes: Any) -> dict[str, Any]:
    """A deep copy of a valid spec with top-level fields replaced (``None`` deletes)."""
    data = json.loads(json.dumps(VALID[name]))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def _errors(data: Any) -> list[tuple[str, str]]:
    with pytest.raises(RuleSpecError) as info:
        parse_rule(data)
    errors = info.value.errors
    assert isinstance(errors, list)
    assert errors
    for entry in errors:
        assert isinstance(entry, tuple)
        assert len(entry) == 2
        assert all(isinstance(part, str) for part in entry)
    return errors


def _paths(data: Any) -> list[str]:
    return [path for path, _ in _errors(data)]


# -- every kind parses --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALID))
def test_every_kind_parses_from_dict_with_its_layer(name: str) -> None:
    model, layer = EXPECTED[name]
    rule = parse_rule(_spec(name))
    assert type(rule) is model
    assert rule.layer is layer
    assert rule.kind == VALID[name]["kind"]
    assert rule.id == VALID[name]["id"]
    assert rule.schema_version == SCHEMA_VERSION


@pytest.mark.parametrize("name", sorted(VALID))
def test_every_kind_parses_from_json_text_equal_to_dict(name: str) -> None:
    text = json.dumps(VALID[name])
    from_text = parse_rule(text)
    from_bytes = parse_rule(text.encode())
    assert type(from_text) is EXPECTED[name][0]
    assert from_text.layer is EXPECTED[name][1]
    assert from_text == parse_rule(_spec(name))
    assert from_bytes == from_text


def test_parsed_values_are_typed() -> None:
    rule = parse_rule(_spec("percent_off", percent="12.5"))
    assert isinstance(rule, PercentOff)
    assert rule.percent == Decimal("12.5")
    assert isinstance(rule.percent, Decimal)
    assert rule.currency == "CNY"
    assert rule.version == 1
    tiered = parse_rule(_spec("tiered_percent"))
    assert isinstance(tiered, TieredPercent)
    assert [t.min_quantity for t in tiered.tiers] == [2, 3]
    assert [t.percent for t in tiered.tiers] == [Decimal(10), Decimal(20)]


def test_bxgy_percent_defaults_to_free() -> None:
    rule = parse_rule(_spec("bxgy", percent=None))
    assert isinstance(rule, BxGy)
    assert rule.percent == Decimal(100)


def test_coupon_percent_without_cap_is_accepted() -> None:
    rule = parse_rule(_spec("coupon_percent", cap=None))
    assert isinstance(rule, Coupon)
    assert rule.cap is None
    assert rule.percent == Decimal(15)


def test_first_order_percent_with_cap_is_accepted() -> None:
    rule = parse_rule(_spec("first_order", discount=None, percent="10", cap=3000))
    assert isinstance(rule, FirstOrder)
    assert rule.percent == Decimal(10)
    assert rule.cap == 3000


def test_repeating_threshold_with_cap_is_accepted() -> None:
    rule = parse_rule(
        _spec(
            "threshold", tiers=[{"min_spend": 30000, "discount": 5000}], repeat=True, repeat_cap=1
        )
    )
    assert isinstance(rule, Threshold)
    assert rule.repeat is True
    assert rule.repeat_cap == 1


def test_specs_are_frozen() -> None:
    rule = parse_rule(_spec("fixed_price"))
    with pytest.raises(ValueError, match="frozen"):
        rule.price = 1  # type: ignore[misc]


def test_percent_at_two_decimals_and_at_100_is_accepted() -> None:
    assert parse_rule(_spec("percent_off", percent="12.34")).percent == Decimal("12.34")
    assert parse_rule(_spec("percent_off", percent="100")).percent == Decimal(100)


# -- bad input: precise paths -------------------------------------------------------------------


def test_unknown_kind_is_reported_at_kind() -> None:
    assert _paths(_spec("fixed_price", kind="bogus")) == ["kind"]


def test_missing_kind_is_reported_at_kind() -> None:
    assert _paths(_spec("fixed_price", kind=None)) == ["kind"]


def test_missing_kind_in_json_text_is_reported_at_kind() -> None:
    data = _spec("fixed_price", kind=None)
    assert _paths(json.dumps(data)) == ["kind"]


def test_negative_tier_discount_is_reported_at_the_tier_field() -> None:
    data = _spec("threshold", tiers=[{"min_spend": 10000, "discount": -5}])
    errors = _errors(data)
    assert [path for path, _ in errors] == ["tiers[0].discount"]
    assert "greater than or equal to 1" in errors[0][1]


def test_error_in_second_tier_names_index_one() -> None:
    data = _spec(
        "threshold",
        tiers=[{"min_spend": 10000, "discount": 1000}, {"min_spend": 20000, "discount": 0}],
    )
    assert _paths(data) == ["tiers[1].discount"]


@pytest.mark.parametrize("percent", ["100.01", "120", "0", "-5"])
def test_percent_out_of_range_is_reported_at_percent(percent: str) -> None:
    assert _paths(_spec("percent_off", percent=percent)) == ["percent"]


def test_percent_with_three_decimals_is_rejected() -> None:
    errors = _errors(_spec("percent_off", percent="12.345"))
    assert [path for path, _ in errors] == ["percent"]
    assert "decimal" in errors[0][1].lower()


def test_percent_with_three_decimals_in_nested_tier_is_rejected() -> None:
    data = _spec("tiered_percent", tiers=[{"min_quantity": 2, "percent": "10.125"}])
    assert _paths(data) == ["tiers[0].percent"]


@pytest.mark.parametrize(
    ("name", "tiers", "what"),
    [
        (
            "threshold",
            [{"min_spend": 20000, "discount": 3000}, {"min_spend": 10000, "discount": 1000}],
            "min_spend",
        ),
        (
            "threshold",
            [{"min_spend": 10000, "discount": 1000}, {"min_spend": 10000, "discount": 2000}],
            "min_spend",
        ),
        (
            "tiered_percent",
            [{"min_quantity": 3, "percent": "20"}, {"min_quantity": 2, "percent": "10"}],
            "min_quantity",
        ),
    ],
)
def test_tiers_out_of_order_are_rejected(name: str, tiers: list[Any], what: str) -> None:
    errors = _errors(_spec(name, tiers=tiers))
    assert len(errors) == 1
    assert "strictly increasing" in errors[0][1]
    assert what in errors[0][1]


def test_empty_tiers_are_rejected() -> None:
    assert _paths(_spec("threshold", tiers=[])) == ["tiers"]


@pytest.mark.parametrize(
    ("valid_from", "valid_until"),
    [
        ("2024-06-18T00:00:00+08:00", "2024-06-17T00:00:00+08:00"),
        ("2024-06-18T00:00:00+08:00", "2024-06-18T00:00:00+08:00"),
        # Same instant written in two zones is still not "after".
        ("2024-06-18T08:00:00+08:00", "2024-06-18T00:00:00Z"),
    ],
)
def test_inverted_window_is_rejected(valid_from: str, valid_until: str) -> None:
    errors = _errors(_spec("fixed_price", valid_from=valid_from, valid_until=valid_until))
    assert len(errors) == 1
    assert "valid_until" in errors[0][1]


def test_window_in_order_is_accepted() -> None:
    rule = parse_rule(
        _spec(
            "fixed_price",
            valid_from="2024-06-18T00:00:00+08:00",
            valid_until="2024-06-18T00:00:01+08:00",
        )
    )
    assert rule.valid_from == datetime(2024, 6, 18, tzinfo=CST)
    assert rule.valid_until is not None
    assert rule.valid_until - rule.valid_from == timedelta(seconds=1)


def test_naive_datetime_is_rejected_at_valid_from() -> None:
    assert _paths(_spec("fixed_price", valid_from="2024-06-18T00:00:00")) == ["valid_from"]


def test_naive_datetime_object_is_rejected_at_valid_from() -> None:
    data = _spec("fixed_price")
    data["valid_from"] = datetime(2024, 6, 18)  # noqa: DTZ001 - deliberately naive
    assert _paths(data) == ["valid_from"]


def test_unknown_field_is_reported_at_its_name() -> None:
    data = _spec("threshold", discout=100)
    errors = _errors(data)
    assert [path for path, _ in errors] == ["discout"]
    reason = errors[0][1].lower()
    assert "extra" in reason or "forbidden" in reason


def test_unknown_nested_field_is_reported_with_full_path() -> None:
    data = _spec("threshold", tiers=[{"min_spend": 100, "discount": 10, "discout": 1}])
    assert _paths(data) == ["tiers[0].discout"]


def test_unknown_scope_field_is_reported_under_scope() -> None:
    data = _spec("fixed_price", scope={"skus": ["A"], "sku": ["B"]})
    assert _paths(data) == ["scope.sku"]


def test_empty_scope_is_rejected() -> None:
    errors = _errors(_spec("fixed_price", scope={}))
    assert [path for path, _ in errors] == ["scope"]
    assert "empty" in errors[0][1]


def test_scope_with_only_exclusions_is_rejected() -> None:
    assert _paths(_spec("fixed_price", scope={"exclude_skus": ["A"]})) == ["scope"]


@pytest.mark.parametrize("include", ["skus", "categories", "tags"])
def test_all_items_with_inclusions_is_rejected(include: str) -> None:
    errors = _errors(_spec("fixed_price", scope={"all_items": True, include: ["x"]}))
    assert [path for path, _ in errors] == ["scope"]
    assert "all_items" in errors[0][1]


def test_empty_scope_label_is_rejected_inside_scope() -> None:
    paths = _paths(_spec("fixed_price", scope={"skus": [""]}))
    assert len(paths) == 1
    assert paths[0].startswith("scope.skus")


def test_repeating_threshold_with_two_tiers_is_rejected() -> None:
    errors = _errors(_spec("threshold", repeat=True))
    assert len(errors) == 1
    assert "exactly one tier" in errors[0][1]


def test_repeat_cap_without_repeat_is_rejected() -> None:
    data = _spec("threshold", tiers=[{"min_spend": 100, "discount": 10}], repeat_cap=50)
    errors = _errors(data)
    assert len(errors) == 1
    assert "repeat_cap" in errors[0][1]


def test_member_offer_with_both_price_and_percent_is_rejected_at_the_offer() -> None:
    data = _spec("member_price", offers=[{"tier": "gold", "price": 100, "percent": "10"}])
    errors = _errors(data)
    assert [path for path, _ in errors] == ["offers[0]"]
    assert "exactly one" in errors[0][1]


def test_member_offer_with_neither_price_nor_percent_is_rejected_at_the_offer() -> None:
    data = _spec("member_price", offers=[{"tier": "gold", "price": 100}, {"tier": "silver"}])
    assert _paths(data) == ["offers[1]"]


def test_duplicate_member_tiers_are_rejected() -> None:
    data = _spec(
        "member_price", offers=[{"tier": "gold", "price": 100}, {"tier": "gold", "price": 90}]
    )
    errors = _errors(data)
    assert len(errors) == 1
    assert "one offer" in errors[0][1]


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"discount": 500, "percent": "10"}, "exactly one"),
        ({"discount": None, "percent": None}, "exactly one"),
        ({"discount": 500, "cap": 100}, "cap"),
    ],
    ids=["both", "neither", "cap-without-percent"],
)
def test_first_order_benefit_shape(changes: dict[str, Any], needle: str) -> None:
    errors = _errors(_spec("first_order", **changes))
    assert len(errors) == 1
    assert needle in errors[0][1]


@pytest.mark.parametrize(
    ("name", "changes", "needle"),
    [
        ("coupon_percent", {"discount": 100}, "percent coupon"),
        ("coupon_percent", {"percent": None}, "percent coupon"),
        ("coupon_threshold", {"min_spend": 0}, "min_spend above zero"),
        ("coupon_threshold", {"min_spend": None}, "min_spend above zero"),
        ("coupon_threshold", {"percent": "10"}, "no percent/cap"),
        ("coupon_threshold", {"cap": 100}, "no percent/cap"),
        ("coupon_no_threshold", {"min_spend": 100}, "cannot have min_spend"),
        ("coupon_no_threshold", {"discount": None}, "discount amount"),
    ],
)
def test_coupon_shape_checks(name: str, changes: dict[str, Any], needle: str) -> None:
    errors = _errors(_spec(name, **changes))
    assert len(errors) == 1
    assert needle in errors[0][1]


def test_unknown_coupon_benefit_is_reported_at_benefit() -> None:
    assert _paths(_spec("coupon_percent", benefit="bogus")) == ["benefit"]


@pytest.mark.parametrize("size", [1, 0, -2])
def test_group_size_below_two_is_rejected(size: int) -> None:
    assert _paths(_spec("group_buy", group_size=size)) == ["group_size"]


def test_flash_sale_zero_stock_is_rejected() -> None:
    assert _paths(_spec("flash_sale", stock=0)) == ["stock"]


@pytest.mark.parametrize("rule_id", ["bad id", "-leading-dash", "", "x" * 65, "emoji🙂"])
def test_bad_id_is_rejected_at_id(rule_id: str) -> None:
    assert _paths(_spec("fixed_price", id=rule_id)) == ["id"]


@pytest.mark.parametrize("currency", ["cny", "CN", "CNYY", "C1Y"])
def test_bad_currency_is_rejected_at_currency(currency: str) -> None:
    assert _paths(_spec("fixed_price", currency=currency)) == ["currency"]


def test_several_problems_are_all_listed() -> None:
    data = _spec("flash_sale", stock=0, per_user_limit=0, currency="cny")
    assert sorted(_paths(data)) == ["currency", "per_user_limit", "stock"]


def test_schema_version_two_is_rejected() -> None:
    assert _paths(_spec("fixed_price", schema_version=2)) == ["schema_version"]


# -- RuleSpecError --------------------------------------------------------------------------------


def test_str_of_error_contains_path_and_reason() -> None:
    with pytest.raises(RuleSpecError) as info:
        parse_rule(_spec("group_buy", group_size=1))
    (path, reason) = info.value.errors[0]
    text = str(info.value)
    assert path == "group_size"
    assert path in text
    assert reason in text
    assert text == f"{path}: {reason}"


def test_str_of_error_joins_several_problems_and_names_root() -> None:
    err = RuleSpecError([("a.b", "first"), ("", "second")])
    assert str(err) == "a.b: first; <root>: second"
    assert isinstance(err, ValueError)


def test_error_is_not_chained_to_pydantic() -> None:
    with pytest.raises(RuleSpecError) as info:
        parse_rule({"kind": "bogus"})
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ is True


# -- load_rules / dump_rules ----------------------------------------------------------------------


def test_load_rules_prefixes_paths_with_the_rule_index() -> None:
    bad = _spec("threshold", id="second", tiers=[{"min_spend": 100, "discount": -5}])
    text = json.dumps([_spec("fixed_price"), bad])
    with pytest.raises(RuleSpecError) as info:
        load_rules(text)
    assert [path for path, _ in info.value.errors] == ["[1].tiers[0].discount"]


def test_load_rules_reports_missing_kind_with_index() -> None:
    text = json.dumps([_spec("fixed_price"), _spec("group_buy", kind=None)])
    with pytest.raises(RuleSpecError) as info:
        load_rules(text)
    assert [path for path, _ in info.value.errors] == ["[1].kind"]


def test_load_rules_rejects_duplicate_id_and_version() -> None:
    first = _spec("fixed_price", id="same", version=3)
    second = _spec("group_buy", id="same", version=3)
    with pytest.raises(RuleSpecError) as info:
        load_rules(json.dumps([first, second]))
    errors = info.value.errors
    assert len(errors) == 1
    assert errors[0][0] == "[1].id"
    assert "same" in errors[0][1]


def test_load_rules_reports_the_later_duplicate_index() -> None:
    rules = [_spec("fixed_price", id="a"), _spec("fixed_price", id="b"), _spec("bxgy", id="a")]
    with pytest.raises(RuleSpecError) as info:
        load_rules(json.dumps(rules))
    assert [path for path, _ in info.value.errors] == ["[2].id"]


def test_load_rules_accepts_same_id_with_different_versions() -> None:
    rules = load_rules(
        json.dumps([_spec("fixed_price", id="same"), _spec("fixed_price", id="same", version=2)])
    )
    assert [(r.id, r.version) for r in rules] == [("same", 1), ("same", 2)]


def test_load_rules_rejects_a_non_array() -> None:
    with pytest.raises(RuleSpecError):
        load_rules(json.dumps(_spec("fixed_price")))


def test_load_rules_of_empty_array_is_empty() -> None:
    assert load_rules("[]") == []


def _every_kind_with_details() -> list[Any]:
    extras: dict[str, dict[str, Any]] = {
        "threshold": {
            "valid_from": "2024-11-11T00:00:00+08:00",
            "valid_until": "2024-11-12T00:00:00+08:00",
            "scope": {
                "categories": ["shoes", "bags"],
                "exclude_skus": ["SKU-9"],
                "exclude_tags": ["clearance"],
            },
            "priority": 5,
            "exclusive": True,
            "max_discount_ratio": "0.3",
            "name": "双11 满减",
        },
        "percent_off": {"percent": "12.5", "min_spend": 100},
        "tiered_percent": {
            "tiers": [
                {"min_quantity": 2, "percent": "7.25"},
                {"min_quantity": 5, "percent": "33.33"},
            ]
        },
        "fixed_price": {"valid_from": "2024-06-18T00:00:00Z", "version": 4},
        "bxgy": {"max_applications": 3, "currency": "USD"},
        "first_order": {"discount": None, "percent": "8.8", "cap": 1000},
        "group_buy": {"time_limit_minutes": 30},
        "flash_sale": {"valid_until": "2030-01-01T12:00:00-05:00"},
    }
    return [parse_rule(_spec(name, **extras.get(name, {}))) for name in sorted(VALID)]


def test_dump_load_round_trip_of_every_kind() -> None:
    rules = _every_kind_with_details()
    assert {r.kind for r in rules} == ALL_KINDS
    text = dump_rules(rules)
    again = load_rules(text)
    assert again == rules
    assert [type(r) for r in again] == [type(r) for r in rules]
    # Spot-check values that are easy to lose in JSON.
    by_id = {r.id: r for r in again}
    assert by_id["r-percent_off"].percent == Decimal("12.5")
    assert by_id["r-threshold"].valid_from == datetime(2024, 11, 11, tzinfo=CST)
    assert by_id["r-threshold"].valid_from.utcoffset() == timedelta(hours=8)
    assert by_id["r-threshold"].scope.exclude_skus == frozenset({"SKU-9"})
    assert by_id["r-threshold"].max_discount_ratio == Decimal("0.3")
    assert by_id["r-fixed_price"].valid_from == datetime(2024, 6, 18, tzinfo=UTC)
    # A second round trip is stable (set order in the JSON may differ, the specs may not).
    assert load_rules(dump_rules(again)) == rules


def test_dump_rules_writes_schema_version_for_every_rule() -> None:
    rules = _every_kind_with_details()
    dumped = json.loads(dump_rules(rules))
    assert isinstance(dumped, list)
    assert len(dumped) == len(rules)
    assert all(item["schema_version"] == 1 for item in dumped)
    assert '"schema_version": 1' in dump_rules(rules)


def test_dump_rules_indent_none_is_compact() -> None:
    rules = [parse_rule(_spec("fixed_price"))]
    compact = dump_rules(rules, indent=None)
    assert "\n" not in compact
    assert load_rules(compact) == rules


def test_load_rules_rejects_schema_version_two() -> None:
    dumped = json.loads(dump_rules([parse_rule(_spec("fixed_price"))]))
    dumped[0]["schema_version"] = 2
    with pytest.raises(RuleSpecError) as info:
        load_rules(json.dumps(dumped))
    assert [path for path, _ in info.value.errors] == ["[0].schema_version"]


_tier_lists = st.lists(
    st.integers(min_value=1, max_value=10**12), min_size=1, max_size=20, unique=True
).flatmap(
    lambda spends: st.lists(
        st.integers(min_value=1, max_value=10**12),
        min_size=len(spends),
        max_size=len(spends),
    ).map(
        lambda discounts: [
            {"min_spend": s, "discount": d} for s, d in zip(sorted(spends), discounts, strict=True)
        ]
    )
)


@given(tiers=_tier_lists)
def test_threshold_tiers_round_trip(tiers: list[dict[str, int]]) -> None:
    rule = parse_rule(_spec("threshold", tiers=tiers))
    assert isinstance(rule, Threshold)
    assert [(t.min_spend, t.discount) for t in rule.tiers] == [
        (t["min_spend"], t["discount"]) for t in tiers
    ]
    assert load_rules(dump_rules([rule])) == [rule]


# -- JSON schema ----------------------------------------------------------------------------------


def test_json_schema_mentions_every_kind() -> None:
    schema = rule_json_schema()
    assert isinstance(schema, dict)
    mapping = schema["discriminator"]["mapping"]
    assert set(mapping) == ALL_KINDS
    assert len(schema["oneOf"]) == 10
    assert set(schema["$defs"]) >= {
        "Threshold",
        "PercentOff",
        "TieredPercent",
        "FixedPrice",
        "BxGy",
        "MemberPrice",
        "FirstOrder",
        "GroupBuy",
        "FlashSale",
        "Coupon",
    }
    json.dumps(schema)  # serialisable


def test_json_schema_forbids_extra_fields() -> None:
    defs = rule_json_schema()["$defs"]
    assert defs["Threshold"]["additionalProperties"] is False
    assert defs["Scope"]["additionalProperties"] is False


# -- Scope.covers ---------------------------------------------------------------------------------


def _scope(**fields: Any) -> Scope:
    return Scope(**fields)


@pytest.mark.parametrize(
    ("scope", "line", "expected"),
    [
        # all_items covers anything not excluded
        ({"all_items": True}, ("A", "shoes", []), True),
        ({"all_items": True}, ("Z", "", ["x"]), True),
        ({"all_items": True, "exclude_skus": ["A"]}, ("A", "shoes", []), False),
        ({"all_items": True, "exclude_skus": ["A"]}, ("B", "shoes", []), True),
        ({"all_items": True, "exclude_categories": ["bags"]}, ("A", "bags", []), False),
        ({"all_items": True, "exclude_tags": ["clearance"]}, ("A", "shoes", ["clearance"]), False),
        ({"all_items": True, "exclude_tags": ["clearance"]}, ("A", "shoes", ["new"]), True),
        # inclusions
        ({"skus": ["A"]}, ("A", "shoes", []), True),
        ({"skus": ["A"]}, ("B", "shoes", []), False),
        ({"categories": ["shoes"]}, ("B", "shoes", []), True),
        ({"categories": ["shoes"]}, ("B", "bags", []), False),
        # tags match by intersection
        ({"tags": ["new", "hot"]}, ("B", "bags", ["hot", "sale"]), True),
        ({"tags": ["new", "hot"]}, ("B", "bags", ["sale"]), False),
        ({"tags": ["new"]}, ("B", "bags", []), False),
        # exclusions beat inclusions
        ({"skus": ["A"], "exclude_skus": ["A"]}, ("A", "shoes", []), False),
        ({"skus": ["A"], "exclude_categories": ["shoes"]}, ("A", "shoes", []), False),
        (
            {"skus": ["A"], "exclude_tags": ["clearance"]},
            ("A", "shoes", ["new", "clearance"]),
            False,
        ),
        ({"categories": ["shoes"], "exclude_skus": ["A"]}, ("A", "shoes", []), False),
        ({"tags": ["new"], "exclude_tags": ["clearance"]}, ("A", "x", ["new", "clearance"]), False),
        # any one inclusion suffices
        ({"skus": ["A"], "categories": ["bags"]}, ("B", "bags", []), True),
    ],
)
def test_scope_covers(
    scope: dict[str, Any], line: tuple[str, str, list[str]], expected: bool
) -> None:
    sku, category, tags = line
    assert _scope(**scope).covers(sku, category, tags) is expected


def test_scope_covers_accepts_any_iterable_of_tags() -> None:
    scope = _scope(tags=["hot"])
    assert scope.covers("A", "c", iter(["cold", "hot"])) is True
    assert scope.covers("A", "c", ("cold",)) is False


def test_scope_strips_whitespace_from_labels() -> None:
    scope = _scope(skus=["  A  "])
    assert scope.skus == frozenset({"A"})
    assert scope.covers("A", "c", []) is True
