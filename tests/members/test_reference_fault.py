"""The reference member-tier service's wrong-answer fault: ``tier_override`` makes every tier
read answer one tier (the member-tier service mapping ordinary customers to VIP)."""

from __future__ import annotations

import asyncio

import httpx
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from tests.members.test_clients import reference_service

from promoguard.members import Breakers, HttpMemberTiers, TierAnswer
from promoguard.members.reference import create_reference_app

TIERS = {"c-gold": "gold", "c-silver": "silver"}


def reference() -> TestClient:
    return TestClient(create_reference_app(TIERS, {"sku-1": 3}, seed=1))


def tier(client: TestClient, customer: str) -> tuple[int, str | None]:
    response = client.get(f"/v1/tiers/{customer}")
    return response.status_code, response.json().get("tier")


def test_every_tier_read_answers_the_override_members_and_non_members_alike():
    with reference() as client:
        assert tier(client, "c-nobody") == (404, None)
        assert client.put("/v1/faults", json={"tier_override": "platinum"}).status_code == 200

        assert tier(client, "c-nobody") == (200, "platinum")
        assert tier(client, "c-gold") == (200, "platinum")
        assert tier(client, "c-silver") == (200, "platinum")
        assert client.get("/v1/tiers/c-nobody").json()["customer_id"] == "c-nobody"


def test_clearing_the_faults_restores_the_true_tiers():
    with reference() as client:
        client.put("/v1/faults", json={"tier_override": "platinum"})
        assert client.put("/v1/faults", json={}).json()["tier_override"] is None

        assert tier(client, "c-gold") == (200, "gold")
        assert tier(client, "c-nobody") == (404, None)


def test_the_override_is_shown_by_faults_and_health_and_leaves_writes_and_stock_alone():
    with reference() as client:
        client.put("/v1/faults", json={"tier_override": "platinum"})
        assert client.get("/v1/faults").json()["tier_override"] == "platinum"
        assert client.get("/health").json()["faults"]["tier_override"] == "platinum"

        # The write path is not faulted: what is stored is the tier given, shown once cleared.
        written = client.put("/v1/tiers/c-new", json={"tier": "silver"})
        assert written.json() == {"customer_id": "c-new", "tier": "silver"}
        assert client.get("/v1/stock", params={"sku": "sku-1"}).json() == {"sku-1": 3}
        client.put("/v1/faults", json={})
        assert tier(client, "c-new") == (200, "silver")


def test_the_other_faults_still_apply_on_top_of_the_override_and_reads_are_counted():
    with reference() as client:
        client.put("/v1/faults", json={"tier_override": "platinum", "down": True})
        assert client.get("/v1/tiers/c-gold").status_code == 503
        assert client.get("/v1/calls").json()["tiers"] == 1


def test_an_empty_or_overlong_override_is_refused():
    with reference() as client:
        for bad in ("", "x" * 65):
            response = client.put("/v1/faults", json={"tier_override": bad})
            assert response.status_code == 422, bad
        assert client.get("/v1/faults").json()["tier_override"] is None


def test_promoguards_client_believes_the_wrong_tier_it_is_given():
    """End to end over HTTP: the fault is a *wrong* answer, not a failure, so the client cannot
    tell (no breaker, no degraded quote); only monitoring can notice it."""
    with reference_service() as (base, _):
        httpx.put(f"{base}/v1/faults", json={"tier_override": "platinum"}).raise_for_status()

        async def ask() -> TierAnswer:
            breakers = Breakers(CollectorRegistry(), threshold=3, reset_seconds=1)
            tiers = HttpMemberTiers(base, timeout_ms=2000, breakers=breakers)
            try:
                return await tiers.tier("c-ordinary", asserted=None)
            finally:
                await tiers.aclose()

        assert asyncio.run(ask()) == TierAnswer("platinum", known=True)
