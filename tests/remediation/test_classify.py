"""Classification and the policy, pure: tables of orders and the outcome each must get, and
properties of the money (per-line refunds sum to the order's refund, never against the
customer)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from promoguard.remediation.classify import (
    LineFacts,
    OrderFacts,
    classify,
    classify_failed_claim,
)
from promoguard.remediation.policy import Compensation, RemediationPolicy, SeverityPolicy

HONOUR = SeverityPolicy(compensation=Compensation(kind="fixed", value=500))
CANCEL = HONOUR.model_copy(update={"undercharged": "cancel_unshipped"})


def order(status: str, *lines: LineFacts, refunded: int = 0, oversold: bool = False) -> OrderFacts:
    return OrderFacts(status, sum(ln.charged for ln in lines), refunded, lines, oversold)


L = LineFacts

CASES = [
    # (name, order, policy, class, action, refund, per-line refunds, coupon)
    (
        "overcharged on one line",
        order("paid", L("a", 1, 10000, 8000)),
        HONOUR,
        "overcharged",
        "refund_difference",
        2000,
        [2000],
        0,
    ),
    (
        "overcharged, split by each line's own overcharge",
        order("shipped", L("a", 1, 12000, 10909), L("b", 1, 10000, 9091)),
        HONOUR,
        "overcharged",
        "refund_difference",
        2000,
        [1091, 909],
        0,
    ),
    (
        "a discount moved between lines: only the net overcharge, on the overcharged line",
        order("paid", L("a", 1, 10000, 9000), L("b", 1, 5000, 5600)),
        HONOUR,
        "overcharged",
        "refund_difference",
        400,
        [400, 0],
        0,
    ),
    (
        "net overcharge over two overcharged lines and one undercharged: largest remainder",
        order("paid", L("a", 1, 1000, 999), L("b", 1, 1000, 999), L("c", 1, 1000, 1001)),
        HONOUR,
        "overcharged",
        "refund_difference",
        1,
        [1, 0, 0],
        0,
    ),
    (
        "units returned already: the rest's share, rounded up",
        order("partially_refunded", L("a", 3, 21999, 19999, 1, 7333), refunded=7333),
        HONOUR,
        "overcharged",
        "refund_difference",
        1334,
        [1334],
        0,
    ),
    (
        "fully refunded already: nothing more",
        order("refunded", L("a", 2, 10000, 9000, 2, 10000), refunded=10000),
        HONOUR,
        "overcharged",
        "none",
        0,
        [0],
        0,
    ),
    (
        "overcharged but not paid",
        order("created", L("a", 1, 10000, 9000)),
        HONOUR,
        "overcharged",
        "none",
        0,
        [0],
        0,
    ),
    (
        "undercharged, honoured",
        order("paid", L("a", 1, 24000, 28000)),
        HONOUR,
        "undercharged",
        "honour",
        0,
        [0],
        0,
    ),
    (
        "undercharged and unshipped, cancelled by policy",
        order("paid", L("a", 1, 24000, 28000), L("b", 1, 1000, 1000)),
        CANCEL,
        "undercharged",
        "cancel_with_coupon",
        25000,
        [24000, 1000],
        500,
    ),
    (
        "undercharged and unpaid, cancelled: nothing to give back",
        order("created", L("a", 1, 24000, 28000)),
        CANCEL,
        "undercharged",
        "cancel_with_coupon",
        0,
        [0],
        500,
    ),
    (
        "undercharged but shipped: honoured whatever the policy",
        order("shipped", L("a", 1, 24000, 28000)),
        CANCEL,
        "undercharged",
        "honour",
        0,
        [0],
        0,
    ),
    (
        "oversold: what is still paid, and a coupon",
        order(
            "paid",
            L("a", 1, 30000, 30000),
            L("b", 2, 9999, 9999, 1, 4999),
            refunded=4999,
            oversold=True,
        ),
        HONOUR,
        "oversold",
        "full_refund_with_coupon",
        35000,
        [30000, 5000],
        500,
    ),
    (
        "cancelled: the cancellation refunded it, the coupon is owed",
        order("cancelled", L("a", 1, 30000, 32000), refunded=30000),
        HONOUR,
        "cancelled",
        "full_refund_with_coupon",
        0,
        [0],
        500,
    ),
    (
        "unchanged",
        order("paid", L("a", 1, 30000, 30000)),
        HONOUR,
        "unchanged",
        "none",
        0,
        [0],
        0,
    ),
]


@pytest.mark.parametrize(
    ("facts", "policy", "klass", "action", "refund", "per_line", "coupon"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_order_gets_its_class_action_and_amounts(  # noqa: PLR0917 (the table's columns)
    facts: OrderFacts,
    policy: SeverityPolicy,
    klass: str,
    action: str,
    refund: int,
    per_line: list[int],
    coupon: int,
) -> None:
    outcome = classify(facts, policy)
    assert (outcome.klass, outcome.action, outcome.refund) == (klass, action, refund)
    assert [ln.refund for ln in outcome.lines] == per_line
    assert outcome.coupon_value == coupon
    assert outcome.difference == sum(ln.charged - ln.intended for ln in facts.lines)


def test_a_failed_claim_has_its_coupon_issued_again() -> None:
    outcome = classify_failed_claim(1500)
    assert (outcome.klass, outcome.action, outcome.coupon_value, outcome.refund) == (
        "failed_claim",
        "reissue_coupon",
        1500,
        0,
    )


_line = st.builds(
    lambda sku, qty, charged, delta: LineFacts(sku, qty, charged, max(0, charged - delta)),
    st.text("abcdef", min_size=1, max_size=3),
    st.integers(1, 5),
    st.integers(0, 10**6),
    st.integers(-(10**5), 10**5),
)


@given(st.lists(_line, min_size=1, max_size=8))
def test_refunds_of_a_paid_order_sum_exactly_to_its_difference_and_never_exceed_a_line(
    lines: list[LineFacts],
) -> None:
    facts = order("paid", *lines)
    outcome = classify(facts, HONOUR)
    refunds = [ln.refund for ln in outcome.lines]
    assert sum(refunds) == outcome.refund
    if outcome.klass == "overcharged":
        assert outcome.refund == outcome.difference > 0
        for ln, part in zip(lines, refunds, strict=True):
            assert 0 <= part <= max(0, ln.charged - ln.intended)
    else:
        assert outcome.refund == 0


@given(st.lists(_line, min_size=1, max_size=6), st.data())
def test_with_units_returned_each_line_gets_at_least_its_kept_share(
    lines: list[LineFacts], data: st.DataObject
) -> None:
    returned = [
        ln._replace(
            refunded_quantity=(rq := data.draw(st.integers(0, ln.quantity))),
            refunded_amount=ln.charged * rq // ln.quantity,
        )
        for ln in lines
    ]
    facts = order("partially_refunded", *returned)
    outcome = classify(facts, HONOUR)
    if outcome.klass != "overcharged":
        return
    full = classify(order("paid", *lines), HONOUR)
    for ln, now, before in zip(returned, outcome.lines, full.lines, strict=True):
        kept = ln.quantity - ln.refunded_quantity
        # Never less than the exact share of the kept units (rounded in the customer's favour),
        # unless the line has less than that left to give back.
        exact_share = before.refund * kept / ln.quantity
        assert now.refund >= min(exact_share, ln.charged - ln.refunded_amount)
        assert now.refund <= ln.charged - ln.refunded_amount


@given(st.integers(0, 10**9))
def test_a_percent_compensation_rounds_up_and_stays_within_its_bounds(total: int) -> None:
    comp = Compensation(kind="percent", percent_bps=333, min_value=100, max_value=50_000)
    value = comp.value_for(total)
    assert 100 <= value <= 50_000
    if 100 < value < 50_000:
        assert value * 10_000 >= total * 333 > (value - 1) * 10_000


POLICY_CASES = [
    ("P0", 54_321, 5_433, 7),  # 10 % rounded up
    ("P0", 5_000, 1_000, 7),  # at least 10.00
    ("P0", 5_000_000, 10_000, 7),  # at most 100.00
    ("P1", 54_321, 2_717, 3),
    ("P2", 123_456, 1_000, 0),
    ("P3", 123_456, 500, 0),
]


@pytest.mark.parametrize(("severity", "total", "coupon", "extend"), POLICY_CASES)
def test_the_default_policy_per_severity(
    severity: str, total: int, coupon: int, extend: int
) -> None:
    chosen = RemediationPolicy().for_severity(severity)
    assert chosen.undercharged == "honour"
    assert chosen.compensation.value_for(total) == coupon
    assert chosen.compensation.min_spend == 0  # no threshold
    assert chosen.extend_campaign_days == extend


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "percent", "percent_bps": 0},
        {"kind": "percent", "percent_bps": 10_001},
        {"min_value": 10, "max_value": 5},
        {"value": -1},
        {"valid_days": 0},
        {"surprise": 1},
    ],
)
def test_an_impossible_compensation_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Compensation.model_validate(bad)


def test_a_policy_is_read_per_severity_and_refuses_an_unknown_one() -> None:
    policy = RemediationPolicy.model_validate(
        {"P2": {"undercharged": "cancel_unshipped", "extend_campaign_days": 2}}
    )
    assert policy.for_severity("P2").undercharged == "cancel_unshipped"
    assert policy.for_severity("P1").undercharged == "honour"
    with pytest.raises(ValueError, match="P0 to P3"):
        policy.for_severity("P9")
