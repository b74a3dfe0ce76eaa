"""Percentage rollout, rollback, scheduling and window ends through the API, on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from tests.service.helpers import approve, line, live, quote, threshold

from promoguard.campaigns import service
from promoguard.errors import ConflictError
from promoguard.orders.models import Order
from promoguard.promotions.rollout import in_rollout
from promoguard.settings import Settings
from promoguard.store.db import Database

CUSTOMERS = [f"c-{n}" for n in range(60)]


def scheduler(settings: Settings, step: Callable[..., Awaitable[list[str]]], at: datetime) -> Any:
    """Run one scheduler step (``start_due`` or ``end_closed``) as of ``at`` in a transaction."""

    async def run() -> list[str]:
        db = Database(settings.database_url)
        try:
            async with db.write() as session:
                return await step(session, now=at)
        finally:
            await db.dispose()

    return asyncio.run(run())


def discounted(client: TestClient) -> set[str]:
    return {
        c for c in CUSTOMERS if quote(client, [line("coat", 30000)], customer=c)["discount_total"]
    }


def test_a_campaign_at_ten_percent_prices_for_the_customers_in_its_buckets(client: TestClient):
    live(client, threshold(), rollout_percent="10")
    expected = {c for c in CUSTOMERS if in_rollout("mj", c, 1000)}
    assert discounted(client) == expected
    assert 0 < len(expected) < len(CUSTOMERS)
    outside = next(c for c in CUSTOMERS if c not in expected)
    priced = quote(client, [line("coat", 30000)], customer=outside)
    assert "rollout" in " ".join(str(e) for e in priced["explanation"])
    assert set(priced["rollout_buckets"]) == {"mj"}


def test_ramping_up_keeps_everyone_in_and_at_full_rollout_everyone_is_priced(client: TestClient):
    live(client, threshold(), rollout_percent="10")
    at_ten = discounted(client)
    ramped = client.post("/v1/campaigns/mj/rollout", json={"percent": "50"})
    assert ramped.json()["rollout_bps"] == 5000
    at_fifty = discounted(client)
    assert at_ten <= at_fifty
    client.post("/v1/campaigns/mj/rollout", json={"percent": "100"})
    assert discounted(client) == set(CUSTOMERS)
    assert quote(client, [line("coat", 30000)])["rollout_buckets"] == {}


def test_an_order_records_the_customers_rollout_bucket(client: TestClient, database_url: str):
    live(client, threshold(), rollout_percent="100")
    client.post("/v1/campaigns/mj/rollout", json={"percent": "99.99"})
    inside = next(c for c in CUSTOMERS if in_rollout("mj", c, 9999))
    priced = quote(client, [line("coat", 30000)], customer=inside)
    placed = client.post(
        "/v1/orders", json={"quote_token": priced["quote_token"]}, headers={"Idempotency-Key": "k1"}
    )
    assert placed.status_code == 201, placed.text
    bucket = priced["rollout_buckets"]["mj"]
    assert bucket < 9999

    async def facts() -> dict[str, object]:
        db = Database(database_url)
        try:
            async with db.read() as session:
                order = await session.get(Order, placed.json()["id"])
                assert order is not None
                return order.customer_facts
        finally:
            await db.dispose()

    assert asyncio.run(facts())["rollout_buckets"] == {"mj": bucket}


def test_rollback_brings_back_the_version_live_before_in_one_call(client: TestClient):
    live(client, threshold(off=5000))
    client.post("/v1/campaigns/mj/versions", json={"spec": threshold(off=9000)})
    approve(client, "mj", 2)
    assert client.post("/v1/campaigns/mj/activate", json={"version": 2}).status_code == 200
    assert quote(client, [line("coat", 30000)])["discount_total"] == 9000
    rolled = client.post("/v1/campaigns/mj/rollback", json={"reason": "9000 was a typo"})
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["live_version"] == 1
    assert quote(client, [line("coat", 30000)])["discount_total"] == 5000
    states = {v["version"]: v["state"] for v in client.get("/v1/campaigns/mj/versions").json()}
    assert states == {1: "live", 2: "superseded"}


def test_rollback_with_no_earlier_live_version_is_a_conflict(client: TestClient):
    live(client, threshold())
    response = client.post("/v1/campaigns/mj/rollback", json={"reason": "?"})
    assert response.status_code == 409
    assert response.json()["code"] == "nothing_to_roll_back"


def test_pause_is_the_kill_switch_and_activate_resumes_without_a_new_review(client: TestClient):
    live(client, threshold())
    client.post("/v1/campaigns/mj/pause", json={"reason": "stop"})
    assert quote(client, [line("coat", 30000)])["discount_total"] == 0
    assert client.post("/v1/campaigns/mj/activate", json={}).status_code == 200
    assert quote(client, [line("coat", 30000)])["discount_total"] == 5000


def test_a_scheduled_version_goes_live_at_its_start_time(client: TestClient, settings: Settings):
    client.post("/v1/campaigns", json={"spec": threshold()})
    approve(client, "mj")
    start = datetime.now(UTC) + timedelta(hours=1)
    scheduled = client.post("/v1/campaigns/mj/activate", json={"start_at": start.isoformat()})
    assert scheduled.status_code == 200, scheduled.text
    assert scheduled.json()["status"] == "draft"
    assert client.get("/v1/campaigns/mj/versions/1").json()["state"] == "scheduled"
    assert quote(client, [line("coat", 30000)])["discount_total"] == 0

    def run(at: datetime) -> list[str]:
        return scheduler(settings, service.start_due, at)

    assert run(start - timedelta(seconds=1)) == []
    assert run(start) == ["mj v1 went live"]
    assert run(start) == []  # once only
    assert client.get("/v1/campaigns/mj").json()["status"] == "live"


def test_a_campaign_whose_window_closed_is_ended_by_the_sweep(
    client: TestClient, settings: Settings
):
    until = datetime.now(UTC) + timedelta(days=1)
    live(client, threshold(valid_until=until.isoformat()))

    assert scheduler(settings, service.end_closed, until - timedelta(seconds=1)) == []
    assert len(scheduler(settings, service.end_closed, until)) == 1
    assert client.get("/v1/campaigns/mj").json()["status"] == "ended"


def test_activate_without_a_version_resumes_the_paused_one_not_the_latest(client: TestClient):
    live(client, threshold(off=5000))
    client.post("/v1/campaigns/mj/versions", json={"spec": threshold(off=9000)})
    approve(client, "mj", 2)
    client.post("/v1/campaigns/mj/activate", json={"version": 2})
    client.post("/v1/campaigns/mj/rollback", json={"reason": "9000 was a typo"})
    client.post("/v1/campaigns/mj/pause", json={"reason": "checking"})
    resumed = client.post("/v1/campaigns/mj/activate", json={})
    assert resumed.json()["live_version"] == 1
    assert quote(client, [line("coat", 30000)])["discount_total"] == 5000


def test_two_pauses_at_once_pause_once(client: TestClient, settings: Settings):
    """Two workers' monitors (or an operator and a monitor) pausing together: one pause, one
    conflict, one timeline entry."""
    live(client, threshold())

    async def both() -> list[object]:
        db = Database(settings.database_url)

        async def pause(actor: str) -> object:
            async with db.write() as session:
                return await service.pause(session, campaign_id="mj", actor=actor, reason=actor)

        try:
            return list(await asyncio.gather(pause("a"), pause("b"), return_exceptions=True))
        finally:
            await db.dispose()

    results = asyncio.run(both())
    assert sum(isinstance(r, ConflictError) for r in results) == 1, results
    paused = [e for e in client.get("/v1/campaigns/mj/timeline").json() if "paused" in e["action"]]
    assert len(paused) == 1
