"""Customers' own claims end to end, on SQLite and PostgreSQL, paid through a real simulated
provider process: a threshold keyed too high (满500减20 instead of 满200减20) overcharged five
paid orders by 20 yuan each, and an incident names that version."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from tests.claims.conftest import auth
from tests.payments.conftest import Simulator
from tests.plans.test_remediation_flow import approver, buy, scripted_incident

from promoguard.plans.jobs import run_plan
from promoguard.settings import Settings
from promoguard.store.db import sync_url

REFUND = 2000


def claim(
    shop: TestClient, order_id: str, customer: str, reason: str = "price_wrong", **extra: Any
) -> Any:
    return shop.post(
        "/v1/claims",
        json={"order_id": order_id, "customer_id": customer, "reason": reason, **extra},
    )


def query(settings: Settings, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(sync_url(settings.database_url))
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql), params).all())
    finally:
        engine.dispose()


def stored(settings: Settings, at: datetime) -> datetime:
    """``at`` as the column stores it (naive UTC on SQLite)."""
    return at if settings.database_url.startswith("postgresql") else at.replace(tzinfo=None)


def refunds_for(simulator: Simulator, key: str) -> list[Any]:
    return [r for r in simulator.records() if r["idempotency_key"] == key]


def test_a_claim_for_an_overcharged_order_is_approved_and_paid_once(
    shop: TestClient, settings: Settings, simulator: Simulator
):
    incident, overcharged = scripted_incident(shop)
    order = overcharged[0]

    submitted = claim(shop, order, "hit-0", message="I was charged 300, the sign said 满200减20")
    assert submitted.status_code == 201, submitted.text
    body = submitted.json()
    assert (body["status"], body["outcome"], body["amount"]) == (
        "approved",
        "matched_incident",
        REFUND,
    )
    assert [s["status"] for s in body["history"]] == ["submitted", "verified", "approved"]
    paid = shop.get(f"/v1/claims/{body['id']}").json()
    assert paid["status"] == "paid"  # paid in the background once the answer went out

    key = f"{order}:incident:{incident}:overcharged"
    assert [(r["amount"], r["status"]) for r in refunds_for(simulator, key)] == [
        (REFUND, "succeeded")
    ]
    # Applying again once the first claim is closed pays nothing more: the payout is the same.
    again = claim(shop, order, "hit-0")
    assert again.status_code == 201, again.text
    assert again.json()["id"] != body["id"]
    assert again.json()["status"] == "paid"
    assert len(refunds_for(simulator, key)) == 1
    payouts = query(settings, "SELECT payout_id FROM claims WHERE order_id = :o", o=order)
    assert len({p for (p,) in payouts}) == 1


def test_a_claim_and_the_proactive_plan_for_the_same_order_pay_once(
    shop: TestClient, settings: Settings, simulator: Simulator
):
    incident, overcharged = scripted_incident(shop)
    first, second = overcharged[0], overcharged[1]
    # The claim comes first and is paid; then the plan runs for all five orders.
    early = claim(shop, first, "hit-0")
    assert early.json()["status"] == "approved"
    drafted = shop.post(f"/v1/incidents/{incident}/plans").json()
    decided = shop.post(
        f"/v1/plans/{drafted['id']}/decision",
        json={"decision": "approve", "reason": "refund the 20 yuan"},
        auth=approver(settings),
    )
    assert decided.status_code == 200, decided.text
    done = asyncio.run(run_plan(settings, drafted["id"]))
    assert done["items"]["done"] == 5
    # A claim after the plan paid its order is paid at once, with the plan's payout.
    late = claim(shop, second, "hit-1")
    assert late.status_code == 201, late.text
    assert (late.json()["status"], late.json()["amount"]) == ("paid", REFUND)

    keys = [r["idempotency_key"] for r in simulator.records()]
    assert sorted(keys) == sorted(f"{o}:incident:{incident}:overcharged" for o in overcharged)
    assert {r["amount"] for r in simulator.records()} == {REFUND}
    plan_payouts = dict(
        query(
            settings,
            "SELECT order_id, payout_id FROM remediation_items WHERE plan_id = :p",
            p=drafted["id"],
        )
    )
    claim_payouts = dict(query(settings, "SELECT order_id, payout_id FROM claims"))
    assert claim_payouts == {first: plan_payouts[first], second: plan_payouts[second]}


def test_a_claim_for_an_order_not_affected_is_rejected_with_a_reason(
    shop: TestClient, simulator: Simulator
):
    scripted_incident(shop)
    (later,) = buy(shop, 1, "later", 2000)  # priced by the intended version: not affected

    rejected = claim(shop, later, "later-0", reason="discount_missing")
    assert rejected.status_code == 201, rejected.text
    body = rejected.json()
    assert (body["status"], body["outcome"], body["amount"]) == ("rejected", "not_affected", 0)
    assert f"order {later} was not affected" in body["explanation"]
    assert [s["status"] for s in body["history"]] == ["submitted", "verified", "rejected"]
    assert simulator.records() == []


def test_a_claim_for_an_unknown_order_or_another_customers_order_is_refused(
    shop: TestClient, settings: Settings
):
    _, overcharged = scripted_incident(shop)
    for order, customer in [("no-such-order", "hit-0"), (overcharged[0], "hit-1")]:
        refused = claim(shop, order, customer)
        assert (refused.status_code, refused.json()["code"]) == (404, "claim_order_not_found")
    assert query(settings, "SELECT id FROM claims") == []


def test_a_second_claim_for_an_open_one_is_merged_into_it(shop: TestClient, settings: Settings):
    _, overcharged = scripted_incident(shop)
    first = claim(shop, overcharged[0], "hit-0", reason="other", message="wrong price")
    assert first.json()["status"] == "needs_review"
    evidence = [{"kind": "screenshot", "url": "https://shop.example/s/1.png"}]
    second = claim(shop, overcharged[0], "hit-0", reason="other", evidence=evidence)
    assert second.status_code == 200, second.text
    assert second.json()["id"] == first.json()["id"]

    queue = shop.get("/v1/claims", params={"status": "needs_review"}).json()
    assert [c["id"] for c in queue] == [first.json()["id"]]
    assert queue[0]["evidence"] == evidence
    rows = query(settings, "SELECT status, merged_into FROM claims WHERE status = 'merged'")
    assert rows == [("merged", first.json()["id"])]
    kinds = [e["kind"] for e in shop.get(f"/v1/claims/{first.json()['id']}/events").json()]
    assert kinds == ["submitted", "verified", "needs_review", "merged"]


def test_a_claim_in_review_is_approved_by_an_operator_and_paid(
    shop: TestClient, settings: Settings, simulator: Simulator
):
    incident, overcharged = scripted_incident(shop)
    order = overcharged[2]
    queued = claim(shop, order, "hit-2", reason="other", message="something is off")
    claim_id = queued.json()["id"]
    assert (queued.json()["status"], queued.json()["outcome"]) == (
        "needs_review",
        "review_required",
    )
    url = f"/v1/claims/{claim_id}/decision"
    shop_key = auth(settings, "storefront")
    refused = shop.post(url, json={"decision": "approve", "reason": "ok"}, auth=shop_key)
    assert (refused.status_code, refused.json()["code"]) == (403, "role_forbidden")
    operator = auth(settings, "operator")
    fixed = shop.post(
        url, json={"decision": "approve", "reason": "ok", "amount": 5000}, auth=operator
    )
    assert (fixed.status_code, fixed.json()["code"]) == (422, "claim_amount_fixed")

    approved = shop.post(
        url,
        json={"decision": "approve", "reason": "we got it wrong", "note": "called her"},
        auth=operator,
    )
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["amount"]) == ("approved", REFUND)
    assert shop.get(f"/v1/claims/{claim_id}").json()["status"] == "paid"
    key = f"{order}:incident:{incident}:overcharged"
    assert len(refunds_for(simulator, key)) == 1
    again = shop.post(url, json={"decision": "reject", "reason": "late"}, auth=operator)
    assert (again.status_code, again.json()["code"]) == (409, "claim_not_in_review")


def test_a_goodwill_refund_with_no_incident_needs_an_amount_within_the_order(
    shop: TestClient, settings: Settings, simulator: Simulator
):
    (order,) = buy(shop, 1, "solo", 0)  # no campaign live: nothing was wrong with it
    claim_id = claim(shop, order, "solo-0", reason="other").json()["id"]
    url = f"/v1/claims/{claim_id}/decision"
    operator = auth(settings, "operator")
    missing = shop.post(url, json={"decision": "approve", "reason": "ok"}, auth=operator)
    assert (missing.status_code, missing.json()["code"]) == (422, "claim_amount_required")
    too_much = shop.post(
        url, json={"decision": "approve", "reason": "ok", "amount": 30001}, auth=operator
    )
    assert (too_much.status_code, too_much.json()["code"]) == (422, "claim_amount_too_high")
    given = shop.post(
        url, json={"decision": "approve", "reason": "goodwill", "amount": 1500}, auth=operator
    )
    assert given.status_code == 200, given.text
    assert given.json()["cause"] == f"claim:{claim_id}"
    assert shop.get(f"/v1/claims/{claim_id}").json()["status"] == "paid"
    assert [(r["idempotency_key"], r["amount"]) for r in simulator.records()] == [
        (f"{order}:claim:{claim_id}", 1500)
    ]


def test_the_customer_status_shows_the_steps_and_no_internal_notes(
    shop: TestClient, settings: Settings
):
    _, overcharged = scripted_incident(shop)
    claim_id = claim(shop, overcharged[3], "hit-3", reason="other").json()["id"]
    operator = auth(settings, "operator")
    rejected = shop.post(
        f"/v1/claims/{claim_id}/decision",
        json={"decision": "reject", "reason": "Please apply with the receipt", "note": "SECRET"},
        auth=operator,
    )
    assert rejected.status_code == 200, rejected.text

    seen = shop.get(f"/v1/claims/{claim_id}", auth=auth(settings, "storefront"))
    assert seen.status_code == 200, seen.text
    status = seen.json()
    assert (status["status"], status["outcome"]) == ("rejected", "rejected_by_reviewer")
    assert status["explanation"] == "Please apply with the receipt"
    assert [s["status"] for s in status["history"]] == [
        "submitted",
        "verified",
        "needs_review",
        "rejected",
    ]
    assert "SECRET" not in seen.text
    assert "decided_by" not in status
    team = shop.get(f"/v1/claims/{claim_id}/events").json()
    assert any(e["message"] == "SECRET" and e["internal"] for e in team)
    missing = shop.get("/v1/claims/cl_0000000000000000")
    assert (missing.status_code, missing.json()["code"]) == (404, "claim_not_found")


def test_the_customer_is_told_of_every_change_in_their_language(
    shop: TestClient, settings: Settings
):
    _, overcharged = scripted_incident(shop)
    contact = {"email": "mei@example.com", "locale": "zh"}
    paid_id = claim(shop, overcharged[0], "hit-0", **contact).json()["id"]
    review_id = claim(shop, overcharged[1], "hit-1", reason="other", **contact).json()["id"]
    claim(shop, overcharged[1], "hit-1", reason="other", **contact)  # merged
    operator = auth(settings, "operator")
    shop.post(
        f"/v1/claims/{review_id}/decision",
        json={"decision": "reject", "reason": "请提供小票"},
        auth=operator,
    )

    rows = query(
        settings,
        "SELECT notice_key, channel, target, payload FROM notification_deliveries "
        "WHERE notice_key LIKE 'claim:%' ORDER BY id",
    )
    keys = [r[0] for r in rows]
    assert keys[:2] == [f"claim:{paid_id}:approved", f"claim:{paid_id}:paid"]
    assert keys[2] == f"claim:{review_id}:needs_review"
    assert keys[3].startswith(f"claim:{review_id}:merged:cl_")
    assert keys[4] == f"claim:{review_id}:rejected"
    assert len(keys) == 5
    assert {(r[1], r[2]) for r in rows} == {("email", "mei@example.com")}
    payloads = [r[3] if isinstance(r[3], dict) else json.loads(r[3]) for r in rows]
    assert payloads[0]["subject"] == f"您对订单 {overcharged[0]} 的申请已通过"
    assert "¥20.00" in payloads[1]["text"]
    assert "请提供小票" in payloads[4]["text"]


def test_claims_undecided_past_their_deadline_are_listed_as_overdue(
    shop: TestClient, settings: Settings
):
    _, overcharged = scripted_incident(shop)
    late_id = claim(shop, overcharged[0], "hit-0", reason="other").json()["id"]
    fresh_id = claim(shop, overcharged[1], "hit-1", reason="other").json()["id"]
    decided_id = claim(shop, overcharged[2], "hit-2").json()["id"]
    claims = {c["id"]: c for c in shop.get("/v1/claims").json()}
    # Due within the incident's severity's hours, at most the default 48.
    due = datetime.fromisoformat(claims[fresh_id]["due_at"])
    assert timedelta(hours=1) < due - datetime.now(UTC) <= timedelta(hours=48)
    past = datetime.now(UTC) - timedelta(hours=1)
    engine = create_engine(sync_url(settings.database_url))
    try:
        with engine.begin() as connection:
            for claim_id in (late_id, decided_id):
                connection.execute(
                    text("UPDATE claims SET due_at = :d WHERE id = :i"),
                    {"d": stored(settings, past), "i": claim_id},
                )
    finally:
        engine.dispose()

    overdue = shop.get("/v1/claims", params={"overdue": "true"}).json()
    assert [(c["id"], c["overdue"]) for c in overdue] == [(late_id, True)]


def test_bad_claims_are_refused_with_stable_codes(shop: TestClient):
    cases = [
        {"order_id": "o", "customer_id": "c", "reason": "angry"},
        {"order_id": "o", "customer_id": "c", "reason": "other", "locale": "fr"},
        {"order_id": "o", "customer_id": "c", "reason": "other", "email": "not an email"},
        {"order_id": "o", "customer_id": "c", "reason": "other", "extra": 1},
        {"order_id": 12, "customer_id": "c", "reason": "other"},
        {"order_id": "o", "customer_id": "c", "reason": "other", "evidence": [{"kind": "x"}]},
        {"order_id": "o", "customer_id": "c", "reason": "other", "message": "m" * 2001},
    ]
    for body in cases:
        refused = shop.post("/v1/claims", json=body)
        assert (refused.status_code, refused.json()["code"]) == (422, "invalid_request"), body
    decision = shop.post(
        "/v1/claims/cl_0000000000000000/decision",
        json={"decision": "approve", "reason": "ok", "amount": True},
    )
    assert (decision.status_code, decision.json()["code"]) == (422, "invalid_request")
    bad_id = shop.get("/v1/claims/12")
    assert bad_id.status_code == 422


def test_a_claims_history_cannot_be_changed_or_deleted(shop: TestClient, settings: Settings):
    (order,) = buy(shop, 1, "solo", 0)
    claim(shop, order, "solo-0")
    engine = create_engine(sync_url(settings.database_url))
    try:
        for sql in ("UPDATE claim_events SET message = 'x'", "DELETE FROM claim_events"):
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
                connection.execute(text(sql))
    finally:
        engine.dispose()
    assert len(query(settings, "SELECT id FROM claim_events")) == 3
