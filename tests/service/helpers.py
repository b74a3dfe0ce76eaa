"""Builders for the service tests: specs, carts and the calls a shop makes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from promoguard.security import signing
from promoguard.security.keys import DEPARTMENTS
from promoguard.security.signing import PromoguardAuth
from promoguard.store.db import sync_url

ALL = {"all_items": True}


def spec(
    rule_id: str, kind: str, *, scope: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    return {"id": rule_id, "kind": kind, "scope": scope or ALL, **fields}


def threshold(
    rule_id: str = "mj", spend: int = 20000, off: int = 5000, **fields: Any
) -> dict[str, Any]:
    """满{spend}减{off}, in fen."""
    return spec(rule_id, "threshold", tiers=[{"min_spend": spend, "discount": off}], **fields)


def coupon_spec(rule_id: str = "cp", **fields: Any) -> dict[str, Any]:
    fields.setdefault("benefit", "no_threshold")
    fields.setdefault("discount", 1000)
    fields.setdefault("per_user_limit", 1)
    fields.setdefault("quantity", 100)
    return spec(rule_id, "coupon", **fields)


def catalogue(tiers: tuple[str, ...] = ("gold", "platinum"), cost: int = 3000) -> dict[str, Any]:
    """A small shop for lint and simulation: 20 apparel SKUs from 100 to 575 yuan."""
    return {
        "currency": "CNY",
        "member_tiers": list(tiers),
        "items": [
            {"sku": f"sku-{n}", "category": "apparel", "unit_price": 10000 + 2500 * n, "cost": cost}
            for n in range(20)
        ],
    }


def line(sku: str, unit_price: int, quantity: int = 1, **fields: Any) -> dict[str, Any]:
    return {
        "sku": sku,
        "category": fields.pop("category", "apparel"),
        "unit_price": unit_price,
        "quantity": quantity,
        **fields,
    }


def approver(client: TestClient, department: str) -> PromoguardAuth:
    """Request auth for an approver key of ``department`` (created once per client)."""
    keys = client.__dict__.setdefault("approvers", {})
    if department not in keys:
        from tests.service.conftest import make_key  # noqa: PLC0415 (conftest imports helpers)

        # In a thread: a caller may be inside an event loop already (make_key runs its own).
        with ThreadPoolExecutor(1) as pool:
            key_id, secret = pool.submit(
                make_key,
                client.settings,  # type: ignore[attr-defined]
                "approver",
                department=department,
            ).result()
        keys[department] = PromoguardAuth(key_id, secret)
    auth: PromoguardAuth = keys[department]
    return auth


def submit(client: TestClient, campaign_id: str, version: int = 1) -> dict[str, Any]:
    """Submit a version for review, acknowledging every lint warning."""
    base = f"/v1/campaigns/{campaign_id}/versions/{version}"
    lint = client.get(f"{base}/lint")
    assert lint.status_code == 200, lint.text
    acks = {f["code"]: "accepted for this test" for f in lint.json()["findings"]}
    submitted = client.post(f"{base}/submit", json={"acknowledgements": acks})
    assert submitted.status_code == 200, submitted.text
    return submitted.json()


def approve(client: TestClient, campaign_id: str, version: int = 1) -> dict[str, Any]:
    """Submit a version and have every department approve it."""
    submit(client, campaign_id, version)
    url = f"/v1/campaigns/{campaign_id}/versions/{version}/approvals"
    for department in DEPARTMENTS:
        auth = approver(client, department)
        decided = client.post(url, json={"decision": "approve"}, auth=auth)
        assert decided.status_code == 200, decided.text
    review = decided.json()
    assert review["version"]["state"] == "approved", review
    return review


def live(client: TestClient, rule: dict[str, Any], **activation: Any) -> dict[str, Any]:
    """Create a campaign, take it through review and make it live."""
    created = client.post("/v1/campaigns", json={"spec": rule})
    assert created.status_code == 201, created.text
    approve(client, rule["id"])
    activated = client.post(f"/v1/campaigns/{rule['id']}/activate", json=activation)
    assert activated.status_code == 200, activated.text
    return activated.json()


def quote(
    client: TestClient, lines: list[dict[str, Any]], customer: str = "c-1", **extra: Any
) -> dict[str, Any]:
    response = client.post(
        "/v1/quotes",
        json={
            "customer": {"id": customer, **extra.pop("facts", {})},
            "cart": {"lines": lines},
            **extra,
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


def order(client: TestClient, token: str, key: str) -> Any:
    return client.post("/v1/orders", json={"quote_token": token}, headers={"Idempotency-Key": key})


TABLES = ("issued_coupons", "customer_usage", "orders", "campaigns", "audit_log")


def snapshot(database_url: str) -> dict[str, Any]:
    """Row counts of what a request could change, and the coupon stock's balance."""
    engine = sa.create_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            counts: dict[str, Any] = {
                t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES
            }
            counts["issued"] = conn.execute(
                sa.text("SELECT sum(issued) FROM coupon_stock")
            ).scalar()
        return counts
    finally:
        engine.dispose()


def claim_headers(key_id: str, secret: str, body: bytes, **overrides: Any) -> dict[str, str]:
    """Signed headers of a coupon claim (``POST /v1/coupons/cp/claims``) with ``body``."""
    headers = signing.sign(
        key_id=key_id,
        secret=secret,
        method="POST",
        path="/v1/coupons/cp/claims",
        body=body,
        **overrides,
    )
    return {**headers, "content-type": "application/json"}
