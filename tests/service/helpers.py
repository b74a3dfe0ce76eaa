"""Builders for the service tests: specs, carts and the calls a shop makes."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

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


def line(sku: str, unit_price: int, quantity: int = 1, **fields: Any) -> dict[str, Any]:
    return {
        "sku": sku,
        "category": fields.pop("category", "apparel"),
        "unit_price": unit_price,
        "quantity": quantity,
        **fields,
    }


def live(client: TestClient, rule: dict[str, Any]) -> dict[str, Any]:
    """Create a campaign and make it live."""
    created = client.post("/v1/campaigns", json={"spec": rule})
    assert created.status_code == 201, created.text
    activated = client.post(f"/v1/campaigns/{rule['id']}/activate", json={})
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
