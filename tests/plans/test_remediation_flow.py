"""A scripted incident remediated end to end: a threshold keyed too high denies customers their
discount, the incident is opened, the plan drafted (find, re-price, classify), approved by
someone else, executed against the simulated provider, and every overcharged order is refunded
its difference exactly once — checked in the provider's own records."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.payments.conftest import Simulator
from tests.service.conftest import make_key, signed_client
from tests.service.helpers import (
    approve,
    catalogue,
    coupon_spec,
    line,
    live,
    order,
    quote,
    threshold,
)

from promoguard.plans.jobs import run_plan
from promoguard.plans.service import extension_spec
from promoguard.promotions.rules import parse_rule
from promoguard.security.signing import PromoguardAuth
from promoguard.settings import Settings

CART = [line("sku-8", 30000)]


@pytest.fixture
def shop(settings: Settings) -> Iterator[TestClient]:
    with signed_client(settings) as client:
        assert client.put("/v1/catalogue", json=catalogue()).status_code == 200
        yield client


def buy(client: TestClient, n: int, prefix: str, expected: int) -> list[str]:
    orders = []
    for i in range(n):
        priced = quote(client, CART, customer=f"{prefix}-{i}")
        assert priced["discount_total"] == expected
        placed = order(client, priced["quote_token"], f"{prefix}-{i}")
        assert placed.status_code == 201, placed.text
        number = placed.json()["id"]
        paid = client.post(f"/v1/orders/{number}/events", json={"type": "paid"})
        assert paid.status_code == 200, paid.text
        orders.append(number)
    return orders


def scripted_incident(shop: TestClient) -> tuple[int, list[str]]:
    """满200减20 live; v2 keyed 满500减20 (no discount for a 300-yuan cart) live for five
    paid orders, then rolled back; an incident about v2. Returns it and the overcharged orders."""
    live(shop, threshold(spend=20000, off=2000))
    buy(shop, 2, "before", 2000)
    assert (
        shop.post(
            "/v1/campaigns/mj/versions", json={"spec": threshold(spend=50000, off=2000)}
        ).status_code
        == 201
    )
    approve(shop, "mj", 2)
    started = datetime.now(UTC)
    assert shop.post("/v1/campaigns/mj/activate", json={"version": 2}).status_code == 200
    overcharged = buy(shop, 5, "hit", 0)
    rolled = shop.post("/v1/campaigns/mj/rollback", json={"reason": "v2 keyed 500 for 200"})
    assert rolled.status_code == 200, rolled.text
    buy(shop, 1, "after", 2000)
    opened = shop.post(
        "/v1/incidents",
        json={
            "title": "满500减20 live instead of 满200减20",
            "severity": "P1",
            "versions": [{"campaign_id": "mj", "version": 2}],
            "window_start": started.isoformat(),
        },
    )
    assert opened.status_code == 201, opened.text
    incident = opened.json()["id"]
    moved = shop.post(f"/v1/incidents/{incident}/status", json={"status": "resolved"})
    assert moved.status_code == 200
    return incident, overcharged


def approver(settings: Settings) -> PromoguardAuth:
    return PromoguardAuth(*make_key(settings, "approver", department="marketing"))


def test_an_overcharging_version_is_remediated_end_to_end_and_each_refund_paid_once(
    shop: TestClient, settings: Settings, simulator: Simulator
):
    incident, overcharged = scripted_incident(shop)

    drafted = shop.post(f"/v1/incidents/{incident}/plans")
    assert drafted.status_code == 201, drafted.text
    plan: dict[str, Any] = drafted.json()
    assert plan["status"] == "draft"
    assert plan["summary"]["by_class"]["overcharged"]["count"] == 5
    assert plan["refund_total"] == 5 * 2000
    items = shop.get(f"/v1/plans/{plan['id']}/items").json()
    assert sorted(i["order_id"] for i in items) == sorted(overcharged)
    assert {(i["klass"], i["action"], i["refund"]) for i in items} == {
        ("overcharged", "refund_difference", 2000)
    }

    own = shop.post(f"/v1/plans/{plan['id']}/decision", json={"decision": "approve"})
    assert (own.status_code, own.json()["code"]) == (403, "own_plan")
    early = shop.post(f"/v1/plans/{plan['id']}/execute")
    assert (early.status_code, early.json()["code"]) == (409, "plan_not_approved")
    decided = shop.post(
        f"/v1/plans/{plan['id']}/decision",
        json={"decision": "approve", "reason": "refund the 20 yuan"},
        auth=approver(settings),
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "approved"

    done = asyncio.run(run_plan(settings, plan["id"]))
    assert done["items"]["done"] == 5
    assert done["paid"] == 5 * 2000
    again = asyncio.run(run_plan(settings, plan["id"]))  # a second run pays nothing more
    assert again["paid"] == 5 * 2000

    records = simulator.records()
    keys = [r["idempotency_key"] for r in records]
    assert sorted(keys) == sorted(f"{o}:incident:{incident}:overcharged" for o in overcharged)
    assert {r["amount"] for r in records} == {2000}
    final = shop.get(f"/v1/plans/{plan['id']}").json()
    assert (final["status"], final["progress"]["payouts"]["succeeded"]) == ("done", 5)
    kinds = [e["message"] for e in shop.get(f"/v1/incidents/{incident}/timeline").json()]
    assert any("drafted" in k for k in kinds)
    assert any("approved" in k for k in kinds)
    assert any(f"plan {plan['id']} done" in k for k in kinds)
    # P1's policy extends the campaign 3 days for the affected customers; 满200减20 has no end,
    # so there is nothing to extend, and the plan says so instead of giving coupons.
    assert final["summary"]["extended"]["mj"]["extended"] == 0
    assert "no end" in final["summary"]["extended"]["mj"]["note"]
    assert shop.get("/v1/customers/hit-0/coupons").json() == []
    report = shop.get(f"/v1/incidents/{incident}/report").text
    assert "| Refunds paid (remediation and claims) | ¥100.00 |" in report


def test_claims_refused_by_a_mis_keyed_coupon_quantity_get_their_coupon_once(
    shop: TestClient, settings: Settings
):
    """A coupon keyed with 2 instead of 200: three customers are refused ("sold out"); the plan
    re-issues each of them the coupon, once."""
    started = datetime.now(UTC)
    live(shop, coupon_spec("cp", discount=500, quantity=2, per_user_limit=1))
    outcomes = [
        shop.post("/v1/coupons/cp/claims", json={"customer_id": f"c-{n}"}).status_code
        for n in range(5)
    ]
    assert outcomes == [201, 201, 409, 409, 409]
    opened = shop.post(
        "/v1/incidents",
        json={
            "title": "coupon quantity keyed 2 instead of 200",
            "versions": [{"campaign_id": "cp", "version": 1}],
            "window_start": started.isoformat(),
        },
    ).json()
    plan = shop.post(f"/v1/incidents/{opened['id']}/plans").json()
    assert plan["summary"]["by_class"]["failed_claim"]["count"] == 3
    items = shop.get(f"/v1/plans/{plan['id']}/items").json()
    assert sorted(i["customer_id"] for i in items) == ["c-2", "c-3", "c-4"]
    assert {(i["action"], i["coupon"]["campaign_id"]) for i in items} == {("reissue_coupon", "cp")}
    decided = shop.post(
        f"/v1/plans/{plan['id']}/decision",
        json={"decision": "approve"},
        auth=approver(settings),
    )
    assert decided.status_code == 200, decided.text

    assert asyncio.run(run_plan(settings, plan["id"]))["items"]["done"] == 3
    asyncio.run(run_plan(settings, plan["id"]))  # again: nothing more is given
    for customer in ("c-2", "c-3", "c-4"):
        wallet = shop.get(f"/v1/customers/{customer}/coupons").json()
        assert [c["campaign_id"] for c in wallet] == ["cp"]
    assert shop.get(f"/v1/plans/{plan['id']}").json()["status"] == "done"


def test_an_extension_is_a_personal_coupon_of_the_intended_offer_from_the_campaigns_end():
    end = "2026-11-12T00:00:00+08:00"
    spec = threshold(spend=20000, off=2000, valid_until=end)
    now = datetime(2026, 11, 11, tzinfo=UTC)
    coupon = extension_spec(spec, "ext-mj-p1", 5, 3, now)
    assert coupon is not None
    assert (coupon["benefit"], coupon["min_spend"], coupon["discount"]) == (
        "threshold",
        20000,
        2000,
    )
    assert (coupon["quantity"], coupon["per_user_limit"]) == (5, 1)
    assert datetime.fromisoformat(coupon["valid_from"]) == datetime.fromisoformat(end)
    assert datetime.fromisoformat(coupon["valid_until"]) == datetime(2026, 11, 14, 16, tzinfo=UTC)
    parse_rule(coupon)  # a valid coupon spec
    assert extension_spec(threshold(spend=20000, off=2000), "x", 5, 3, now) is None  # no end
