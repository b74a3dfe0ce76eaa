"""A scripted incident through the HTTP API, planned: 满200减20 (v1) is live; v2, keyed as
满250减60 by mistake, goes live for a while and is paused; an incident is opened with v2. The
plan re-prices every order v2 priced and classifies it. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.ext.asyncio import AsyncSession
from tests.remediation.helpers import in_session
from tests.service.helpers import approve, line, live, order, quote, threshold

from promoguard.incidents.models import Incident
from promoguard.remediation import FailedClaim, PlanDraft, RemediationPolicy, build_plan
from promoguard.remediation.policy import Compensation, SeverityPolicy

FLAT = SeverityPolicy(compensation=Compensation(kind="fixed", value=800, valid_days=14))
"""The same policy at every severity: the assertions do not depend on the grade."""
HONOUR = RemediationPolicy(P0=FLAT, P1=FLAT, P2=FLAT, P3=FLAT)
CANCELLING = FLAT.model_copy(update={"undercharged": "cancel_unshipped"})
CANCEL = RemediationPolicy(P0=CANCELLING, P1=CANCELLING, P2=CANCELLING, P3=CANCELLING)


def _buy(client: TestClient, customer: str, lines: list[dict[str, Any]], discount: int) -> str:
    priced = quote(client, lines, customer=customer)
    assert priced["discount_total"] == discount, priced
    placed = order(client, priced["quote_token"], f"key-{customer}")
    assert placed.status_code == 201, placed.text
    return str(placed.json()["id"])


def _event(client: TestClient, order_id: str, kind: str, **body: Any) -> None:
    moved = client.post(f"/v1/orders/{order_id}/events", json={"type": kind, **body})
    assert moved.status_code == 200, moved.text


def _incident(client: TestClient) -> tuple[int, dict[str, str]]:
    """Script the incident; return its id and the orders by name."""
    live(client, threshold(spend=20000, off=2000))
    orders = {"before": _buy(client, "before", [line("sku-8", 30000)], 2000)}
    window_start = datetime.now(UTC)
    mistake = threshold(spend=25000, off=6000)
    assert client.post("/v1/campaigns/mj/versions", json={"spec": mistake}).status_code == 201
    approve(client, "mj", 2)
    assert client.post("/v1/campaigns/mj/activate", json={"version": 2}).status_code == 200
    # Under v2: 300 yuan saves 60 (v1: 20), 220 yuan saves nothing (v1: 20), 150 nothing either.
    orders["under"] = _buy(client, "under", [line("sku-8", 30000)], 6000)
    orders["under_shipped"] = _buy(client, "under_shipped", [line("sku-8", 30000)], 6000)
    orders["over"] = _buy(client, "over", [line("sku-1", 12000), line("sku-2", 10000)], 0)
    orders["over_unpaid"] = _buy(client, "over_unpaid", [line("sku-1", 22000)], 0)
    orders["over_returned"] = _buy(client, "over_returned", [line("sku-3", 7333, 3)], 0)
    orders["same"] = _buy(client, "same", [line("sku-4", 15000)], 0)
    orders["cancelled"] = _buy(client, "cancelled", [line("sku-5", 26000)], 6000)
    orders["oversold"] = _buy(client, "oversold", [line("sku-6", 40000)], 6000)
    assert client.post("/v1/campaigns/mj/pause", json={"reason": "mis-keyed"}).status_code == 200
    orders["after"] = _buy(client, "after", [line("sku-8", 30000)], 0)
    for name in ("under", "under_shipped", "over", "over_returned", "same", "cancelled"):
        _event(client, orders[name], "paid")
    _event(client, orders["oversold"], "paid")
    _event(client, orders["under_shipped"], "shipped")
    _event(client, orders["cancelled"], "cancelled")
    _event(client, orders["over_returned"], "refunded", lines=[{"sku": "sku-3", "quantity": 1}])
    opened = client.post(
        "/v1/incidents",
        json={
            "title": "满200减20 keyed as 满250减60",
            "severity": "P2",
            "versions": [{"campaign_id": "mj", "version": 2}],
            "window_start": window_start.isoformat(),
        },
    )
    assert opened.status_code == 201, opened.text
    return int(opened.json()["id"]), orders


def _plan(
    client: TestClient, incident_id: int, policy: RemediationPolicy, **extra: Any
) -> PlanDraft:
    async def plan(session: AsyncSession) -> PlanDraft:
        incident = await session.get(Incident, incident_id)
        assert incident is not None
        return await build_plan(session, incident, policy, **extra)

    return in_session(client, plan)


def test_the_plan_reprices_every_order_the_faulty_version_priced_and_applies_the_policy(
    shop: TestClient,
) -> None:
    incident_id, orders = _incident(shop)
    seen: list[tuple[int, int]] = []
    claim = FailedClaim("claim-1", "claimer", "cp", 1000, datetime.now(UTC))
    draft = _plan(
        shop,
        incident_id,
        HONOUR,
        oversold={orders["oversold"]},
        failed_claims=[claim],
        progress=lambda done, total: seen.append((done, total)),
        batch_size=3,
    )
    by_order = {item.order_id: item for item in draft.items}
    name_of = {order_id: name for name, order_id in orders.items()}
    got = {
        name_of.get(i.order_id or "", i.claim_id): (i.klass, i.action, i.difference, i.refund)
        for i in draft.items
    }
    # Not affected: priced before v2 went live, and after it was paused.
    assert got == {
        "under": ("undercharged", "honour", -4000, 0),
        "under_shipped": ("undercharged", "honour", -4000, 0),
        "over": ("overcharged", "refund_difference", 2000, 2000),
        "over_unpaid": ("overcharged", "none", 2000, 0),
        # 219.99 listed, 21.99 back under v1 (10 % of 219.99 rounds to 20.00 — a 满200减20);
        # one of three units was returned: two thirds of 20.00, rounded up, is 13.34.
        "over_returned": ("overcharged", "refund_difference", 2000, 1334),
        "same": ("unchanged", "none", 0, 0),
        "cancelled": ("cancelled", "full_refund_with_coupon", -4000, 0),
        "oversold": ("oversold", "full_refund_with_coupon", -4000, 34000),
        "claim-1": ("failed_claim", "reissue_coupon", 0, 0),
    }
    over = by_order[orders["over"]]
    # 20.00 over 120.00 and 100.00 by largest remainder: 10.91 and 9.09.
    assert [(ln.sku, ln.charged, ln.intended, ln.difference, ln.refund) for ln in over.lines] == [
        ("sku-1", 12000, 10909, 1091, 1091),
        ("sku-2", 10000, 9091, 909, 909),
    ]
    assert over.cause == f"incident:{incident_id}:overcharged"
    assert over.idempotency_key == f"{orders['over']}:incident:{incident_id}:overcharged"
    assert by_order[orders["cancelled"]].coupon is not None
    assert by_order[orders["cancelled"]].coupon.value == 800  # type: ignore[union-attr]
    assert by_order[orders["oversold"]].coupon.valid_days == 14  # type: ignore[union-attr]
    assert [i.coupon.campaign_id for i in draft.items if i.klass == "failed_claim"] == ["cp"]  # type: ignore[union-attr]
    totals = {k: (t.count, t.refund, t.coupons, t.difference) for k, t in draft.by_class.items()}
    assert totals == {
        "overcharged": (3, 3334, 0, 6000),
        "undercharged": (2, 0, 0, -8000),
        "unchanged": (1, 0, 0, 0),
        "oversold": (1, 34000, 800, -4000),
        "cancelled": (1, 0, 800, -4000),
        "failed_claim": (1, 0, 1000, 0),
    }
    actions = {k: (t.count, t.refund) for k, t in draft.by_action.items() if t.count}
    assert actions == {
        "refund_difference": (2, 3334),
        "honour": (2, 0),
        "none": (2, 0),
        "full_refund_with_coupon": (2, 34000),
        "reissue_coupon": (1, 0),
    }
    assert draft.refund_total == 37334
    assert draft.replacements == {("mj", 2): 1}
    assert seen == [(0, 8), (3, 8), (6, 8), (8, 8)]


def test_a_cancelling_policy_cancels_unshipped_undercharged_orders_and_honours_shipped_ones(
    shop: TestClient,
) -> None:
    incident_id, orders = _incident(shop)
    draft = _plan(shop, incident_id, CANCEL)
    by_order = {item.order_id: item for item in draft.items}
    under = by_order[orders["under"]]
    assert (under.action, under.refund) == ("cancel_with_coupon", 24000)
    assert under.coupon is not None
    assert under.coupon.value == 800
    assert [ln.refund for ln in under.lines] == [24000]
    shipped = by_order[orders["under_shipped"]]
    assert (shipped.action, shipped.refund, shipped.coupon) == ("honour", 0, None)
    cancelled = {i.order_id for i in draft.items if i.action == "cancel_with_coupon"}
    # (Without the shop naming it oversold, the 400-yuan order is one more paid undercharged one.)
    assert cancelled == {orders["under"], orders["oversold"]}
    assert draft.by_action["cancel_with_coupon"].refund == 24000 + 34000


def test_an_explicit_mapping_without_an_intended_version_reprices_without_the_campaign(
    shop: TestClient,
) -> None:
    incident_id, orders = _incident(shop)
    draft = _plan(shop, incident_id, HONOUR, corrected={("mj", 2): None})
    by_order = {item.order_id: item for item in draft.items}
    # Without any 满减 the 300-yuan order should have paid 300: it saved 60 too many.
    assert by_order[orders["under"]].difference == -6000
    assert by_order[orders["over"]].klass == "unchanged"
    assert draft.replacements == {("mj", 2): None}
    assert any("no intended version" in note for note in draft.notes)
