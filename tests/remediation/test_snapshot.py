"""An order's snapshot, priced again under the rules live when it was priced, gives back its
recorded discounts exactly: a few hundred generated orders through the real service, while
campaigns change under them (new versions, pauses, a rollback). SQLite and PostgreSQL."""

from __future__ import annotations

import random
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from tests.remediation.helpers import in_session
from tests.service.helpers import approve, coupon_spec, live, order, quote, spec
from tests.service.helpers import threshold as threshold_spec

from promoguard.orders.models import Order
from promoguard.remediation.corrected import load_corrected
from promoguard.remediation.snapshot import load_snapshots

ORDERS = 240


def _campaigns(client: TestClient) -> None:
    live(client, threshold_spec("mj", spend=30000, off=3000, priority=5))
    live(client, spec("pct", "percent_off", percent="12.5", cap=4000, scope={"tags": ["sale"]}))
    live(client, spec("bx", "bxgy", buy=2, get=1, percent="50", scope={"categories": ["shoes"]}))
    live(client, spec("fx", "fixed_price", price=8800, scope={"skus": ["sku-3"]}))
    live(
        client,
        spec(
            "vip",
            "member_price",
            offers=[{"tier": "gold", "percent": "10"}],
            scope={"categories": ["apparel"]},
        ),
    )
    live(client, spec("tier", "tiered_percent", tiers=[{"min_quantity": 3, "percent": "5"}]))
    live(
        client, spec("solo", "percent_off", percent="30", exclusive=True, scope={"skus": ["sku-7"]})
    )
    live(
        client,
        coupon_spec(
            "cp",
            benefit="threshold",
            min_spend=20000,
            discount=1500,
            quantity=10**6,
            per_user_limit=1000,
        ),
    )


def _cart(rng: random.Random) -> list[dict[str, Any]]:
    skus = rng.sample(range(12), rng.randint(1, 4))
    lines = []
    for n in skus:
        line: dict[str, Any] = {
            "sku": f"sku-{n}",
            "category": "shoes" if n % 3 == 0 else "apparel",
            "unit_price": 5000 + 1375 * n + rng.choice((0, 1, 7, 99)),
            "quantity": rng.randint(1, 3),
        }
        if n % 2:
            line["tags"] = ["sale"]
        if rng.random() < 0.3:
            line["floor_price"] = line["unit_price"] * rng.choice((70, 85, 95)) // 100
        lines.append(line)
    return lines


def _change(client: TestClient, step: int) -> None:
    """A campaign change every so often: the history must follow it."""
    if step == 1:
        assert (
            client.post(
                "/v1/campaigns/mj/versions",
                json={"spec": threshold_spec("mj", spend=20000, off=2500, priority=5)},
            ).status_code
            == 201
        )
        approve(client, "mj", 2)
        assert client.post("/v1/campaigns/mj/activate", json={"version": 2}).status_code == 200
    elif step == 2:
        assert client.post("/v1/campaigns/pct/pause", json={"reason": "test"}).status_code == 200
    elif step == 3:
        assert client.post("/v1/campaigns/mj/rollback", json={"reason": "test"}).status_code == 200
        assert client.post("/v1/campaigns/pct/activate", json={}).status_code == 200


def _place(client: TestClient, rng: random.Random, n: int) -> None:
    customer = f"c-{n % 60}"
    extra: dict[str, Any] = {}
    if n % 4 == 0:
        extra["facts"] = {"member_tier": "gold"}
    if n % 5 == 0:
        claimed = client.post("/v1/coupons/cp/claims", json={"customer_id": customer})
        assert claimed.status_code in (200, 201), claimed.text
        extra["coupons"] = ["cp"]
    priced = quote(client, _cart(rng), customer=customer, **extra)
    placed = order(client, priced["quote_token"], f"k-{n}")
    assert placed.status_code == 201, placed.text


def test_repricing_a_snapshot_under_the_rules_then_live_gives_back_its_discounts(
    shop: TestClient,
) -> None:
    rng = random.Random(20240611)
    _campaigns(shop)
    for n in range(ORDERS):
        if n % (ORDERS // 4) == 0 and n:
            _change(shop, n // (ORDERS // 4))
        _place(shop, rng, n)

    async def check(session: AsyncSession) -> tuple[int, int, list[str]]:
        rules = await load_corrected(session, [])
        ids = (await session.scalars(select(Order.id).order_by(Order.created_at))).all()
        wrong = []
        discounted = 0
        for snap in await load_snapshots(session, list(ids)):
            again = rules.original(snap).quote(snap.cart, snap.customer, snap.order.priced_at)
            got = [(d.rule_id, d.rule_version, d.amount) for d in again.discounts]
            finals = [ln.final_amount for ln in again.lines]
            if sorted(got) != sorted(snap.discounts) or finals != [
                ln.final_amount for ln in snap.lines
            ]:
                wrong.append(f"{snap.order.id}: {got} != {snap.discounts}")
            discounted += bool(snap.discounts)
        return len(ids), discounted, wrong

    count, discounted, wrong = in_session(shop, check)
    assert rules_exact(shop)
    assert count == ORDERS
    assert discounted > ORDERS // 2  # the property is about discounts: most orders have some
    assert wrong == []


def rules_exact(client: TestClient) -> bool:
    async def exact(session: AsyncSession) -> bool:
        return (await load_corrected(session, [])).history.exact

    return in_session(client, exact)
