"""Grading impacts into P0-P3, and the clocks each severity starts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from promoguard.incidents.grading import Bar, Impact, IncidentPolicy, deadlines, grade, share_bps
from promoguard.incidents.models import Severity

POLICY = IncidentPolicy()


@pytest.mark.parametrize(
    ("impact", "expected"),
    [
        (Impact(), Severity.P3),
        (Impact(active_customers=5000), Severity.P3),
        (Impact(checkout_down=True), Severity.P0),
        (Impact(payment_down=True), Severity.P0),
        # ¥50,000 at stake (beyond intent plus refunds owed) is a major loss.
        (Impact(beyond_intent=4_000_000, refunds_owed=1_000_000), Severity.P0),
        (Impact(beyond_intent=4_999_999), Severity.P1),
        # A fifth of active customers, 500 or more of them.
        (Impact(customers_affected=500, active_customers=2500, orders_affected=99), Severity.P0),
        # The same share of a small sample is not a global outage (nor part of the customers).
        (Impact(customers_affected=20, active_customers=100, orders_affected=20), Severity.P2),
        (Impact(customers_affected=50, active_customers=1000, orders_affected=50), Severity.P1),
        (Impact(customers_affected=49, active_customers=1000, orders_affected=49), Severity.P2),
        (Impact(orders_affected=100, customers_affected=1, active_customers=10**6), Severity.P1),
        (Impact(beyond_intent=500_000), Severity.P1),
        (Impact(beyond_intent=499_999, orders_affected=3, customers_affected=3), Severity.P2),
        (Impact(refunds_owed=1), Severity.P2),
        (Impact(orders_affected=1), Severity.P2),
    ],
)
def test_impacts_grade_into_the_expected_severity(impact: Impact, expected: Severity):
    assert grade(impact, POLICY) == expected


def test_the_bars_are_configurable():
    strict = IncidentPolicy.model_validate({"bars": {"P0": {"money": 100}, "P2": {"orders": 5}}})
    assert grade(Impact(beyond_intent=100), strict) == Severity.P0
    assert grade(Impact(orders_affected=4), strict) == Severity.P3  # no P1 bar, P2 needs 5
    assert grade(Impact(orders_affected=5), strict) == Severity.P2
    assert Bar(outage=False).cleared_by(Impact(checkout_down=True)) is False


def test_a_share_is_in_basis_points_rounded_down():
    assert share_bps(1, 3) == 3333
    assert share_bps(0, 0) == 0
    assert share_bps(3, 0) == 10_000


@pytest.mark.parametrize(
    ("severity", "ack", "respond"),
    [
        (Severity.P0, timedelta(minutes=5), timedelta(minutes=15)),
        (Severity.P1, timedelta(minutes=10), timedelta(minutes=30)),
        (Severity.P2, timedelta(minutes=30), timedelta(hours=2)),
    ],
)
def test_each_severity_starts_its_clocks(severity: Severity, ack: timedelta, respond: timedelta):
    opened = datetime(2026, 11, 11, 0, 5, tzinfo=UTC)
    assert deadlines(severity, opened, POLICY) == (opened + ack, opened + respond)


def test_p3_is_due_at_10_on_the_next_working_day_in_the_shops_time_zone():
    # Friday 2026-11-13 18:00 in Shanghai is 10:00 UTC: next working day is Monday the 16th.
    friday_evening = datetime(2026, 11, 13, 10, 0, tzinfo=UTC)
    ack, respond = deadlines(Severity.P3, friday_evening, POLICY)
    assert ack == respond == datetime(2026, 11, 16, 2, 0, tzinfo=UTC)  # 10:00 Asia/Shanghai
    tuesday = datetime(2026, 11, 10, 1, 0, tzinfo=UTC)
    assert deadlines(Severity.P3, tuesday, POLICY)[0] == datetime(2026, 11, 11, 2, 0, tzinfo=UTC)


def test_an_impact_survives_its_json_form():
    impact = Impact(customers_affected=3, active_customers=9, beyond_intent=7, checkout_down=True)
    data = impact.as_dict()
    assert data["share_bps"] == 3333
    assert data["money_at_stake"] == 7
    assert Impact.from_dict(data) == impact
