"""Money in minor units: parsing, formatting, basis-point rounding and exact allocation."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promoguard.money import (
    BPS_WHOLE,
    Money,
    MoneyError,
    allocate,
    discount_bps,
    format_minor,
    minor_exponent,
    parse_minor,
    percent_to_bps,
    price_after_bps,
)

# -- parse_minor / format_minor ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("199.90", "CNY", 19990),
        ("230", "CNY", 23000),
        ("0.01", "CNY", 1),
        ("0", "CNY", 0),
        (230, "CNY", 23000),
        (Decimal("12.5"), "CNY", 1250),
        ("1500", "JPY", 1500),
        (1500, "JPY", 1500),
        ("1.234", "BHD", 1234),
    ],
)
def test_parse_minor_turns_major_units_into_exact_minor_units(text, currency, minor):
    assert parse_minor(text, currency) == minor


def test_currency_exponent_follows_iso_4217():
    assert minor_exponent("CNY") == 2
    assert minor_exponent("JPY") == 0
    assert minor_exponent("BHD") == 3


@pytest.mark.parametrize("value", [1.5, 0.1, 230.0])
def test_parse_minor_refuses_floats(value):
    with pytest.raises(MoneyError, match="floats"):
        parse_minor(value)


@pytest.mark.parametrize(
    ("text", "currency"),
    [("199.999", "CNY"), ("0.001", "CNY"), ("1500.5", "JPY"), ("1.2345", "BHD")],
)
def test_parse_minor_refuses_more_decimals_than_the_currency_has(text, currency):
    with pytest.raises(MoneyError, match="more decimals"):
        parse_minor(text, currency)


@pytest.mark.parametrize("text", ["abc", "", "1,000.00", "NaN", "Infinity"])
def test_parse_minor_refuses_text_that_is_not_an_amount(text):
    with pytest.raises(MoneyError, match="not an amount"):
        parse_minor(text)


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (18000, "CNY", "180.00"),
        (19990, "CNY", "199.90"),
        (5, "CNY", "0.05"),
        (0, "CNY", "0.00"),
        (-5, "CNY", "-0.05"),
        (-23050, "CNY", "-230.50"),
        (1500, "JPY", "1500"),
        (-1500, "JPY", "-1500"),
        (1234, "BHD", "1.234"),
    ],
)
def test_format_minor_renders_plain_major_units(minor, currency, text):
    assert format_minor(minor, currency) == text


@given(st.integers(min_value=-(10**12), max_value=10**12), st.sampled_from(["CNY", "JPY", "BHD"]))
def test_format_minor_then_parse_minor_is_the_identity(minor, currency):
    assert parse_minor(format_minor(minor, currency), currency) == minor


# -- basis points -----------------------------------------------------------------------------


def test_percent_to_bps_is_exact_to_a_hundredth_of_a_percent():
    assert percent_to_bps(Decimal("20")) == 2000
    assert percent_to_bps(Decimal("12.5")) == 1250
    assert percent_to_bps(Decimal("0.01")) == 1
    assert percent_to_bps(Decimal("100")) == BPS_WHOLE


def test_percent_to_bps_refuses_a_percent_finer_than_a_basis_point():
    with pytest.raises(MoneyError):
        percent_to_bps(Decimal("12.345"))


def test_discount_bps_rounds_down_so_the_shop_never_over_discounts():
    # 15 % of 9.99 is 1.4985: the discount is 1.49, never 1.50.
    assert discount_bps(999, 1500) == 149
    # 33.33 % of 0.10 is 0.03333: 0.03.
    assert discount_bps(10, 3333) == 3
    # A tiny share of a tiny amount is nothing, not one fen.
    assert discount_bps(1, 9999) == 0
    assert discount_bps(23000, BPS_WHOLE) == 23000


def test_price_after_bps_rounds_the_price_up():
    # 9.99 at 15 % off is 8.4915: the customer pays 8.50.
    assert price_after_bps(999, 1500) == 850
    assert price_after_bps(1, 9999) == 1
    assert price_after_bps(10000, 2000) == 8000
    assert price_after_bps(23000, BPS_WHOLE) == 0


@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=0, max_value=BPS_WHOLE))
def test_discount_never_exceeds_the_exact_share_and_price_plus_discount_is_the_amount(amount, bps):
    off = discount_bps(amount, bps)
    exact = Decimal(amount) * bps / BPS_WHOLE
    assert off <= exact < off + 1
    assert price_after_bps(amount, bps) + off == amount


# -- allocate ---------------------------------------------------------------------------------


def test_allocate_gives_ties_on_the_remainder_to_the_earlier_weight():
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]
    assert allocate(2, [1, 1, 1]) == [1, 1, 0]
    assert allocate(1, [3, 1, 3]) == [1, 0, 0]


def test_allocate_gives_the_leftover_to_the_largest_remainder():
    # 10 over 1:2 is 3.33 / 6.67: the larger remainder takes the leftover unit.
    assert allocate(10, [1, 2]) == [3, 7]
    # 100 over 3000/2000/1000: 50 / 33.33 / 16.67 -> the 0.67 remainder wins over the 0.33.
    assert allocate(100, [3000, 2000, 1000]) == [50, 33, 17]


def test_allocate_in_exact_proportion_needs_no_rounding():
    assert allocate(600, [1, 2, 3]) == [100, 200, 300]


def test_allocate_gives_nothing_to_zero_weights():
    assert allocate(7, [0, 0, 5]) == [0, 0, 7]
    assert allocate(5, [0, 3, 0, 2]) == [0, 3, 0, 2]


def test_allocate_zero_over_zero_weights_is_all_zeros():
    assert allocate(0, [0, 0]) == [0, 0]
    assert allocate(0, []) == []


def test_allocate_refuses_a_positive_amount_over_zero_weights():
    with pytest.raises(MoneyError):
        allocate(1, [0, 0])


def test_allocate_refuses_a_negative_total():
    with pytest.raises(MoneyError, match="negative"):
        allocate(-1, [1, 1])


@given(
    st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=30).filter(any),
    st.data(),
)
def test_allocate_parts_sum_to_the_total_and_none_exceeds_its_weight(weights, data):
    total = data.draw(st.integers(min_value=0, max_value=sum(weights)))
    parts = allocate(total, weights)
    assert len(parts) == len(weights)
    assert sum(parts) == total
    assert all(0 <= part <= weight for part, weight in zip(parts, weights, strict=True))


@given(
    st.integers(min_value=0, max_value=10**12),
    st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=30).filter(any),
)
def test_allocate_parts_sum_exactly_to_any_total(total, weights):
    assert sum(allocate(total, weights)) == total


# -- Money ------------------------------------------------------------------------------------


def test_money_adds_and_subtracts_in_one_currency():
    assert Money(23000) + Money(500) == Money(23500)
    assert Money(23000) - Money(5000) == Money(18000)
    assert Money(100, "JPY") + Money(1, "JPY") == Money(101, "JPY")


def test_money_refuses_to_add_two_currencies():
    with pytest.raises(MoneyError, match="cannot mix CNY and USD"):
        Money(100, "CNY") + Money(100, "USD")


def test_money_refuses_to_subtract_two_currencies():
    with pytest.raises(MoneyError, match="cannot mix JPY and CNY"):
        Money(100, "JPY") - Money(100, "CNY")


@pytest.mark.parametrize("amount", [1.5, Decimal("1.50"), "150", True])
def test_money_holds_only_integer_minor_units(amount):
    with pytest.raises(MoneyError):
        Money(amount)


def test_money_of_parses_major_units_and_refuses_floats():
    assert Money.of("230.00") == Money(23000, "CNY")
    assert Money.of("1500", "JPY") == Money(1500, "JPY")
    with pytest.raises(MoneyError):
        Money.of(230.0)


def test_money_str_is_plain_amount_and_currency_code():
    assert str(Money(23000)) == "230.00 CNY"
    assert str(Money(1500, "JPY")) == "1500 JPY"


def test_money_display_uses_the_locale_currency_sign():
    assert Money(23000).display() == "¥230.00"
    assert Money(150, "USD").display("en_US") == "$1.50"
    assert Money(150000, "JPY").display("ja_JP") == "￥150,000"


def test_money_split_sums_to_the_amount_in_the_same_currency():
    parts = Money(100, "USD").split([1, 1, 1])
    assert parts == [Money(34, "USD"), Money(33, "USD"), Money(33, "USD")]
