"""Monitoring in the service: orders feed the detectors, an alert pauses the campaign on its own,
is stored and lands on the timeline. Runs on SQLite and PostgreSQL.

The watch's loop is slowed right down here and driven by hand (``tick``), so each test decides
exactly when the detectors look.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.service.conftest import signed_client
from tests.service.helpers import approve, catalogue, line, live, order, quote, threshold

from promoguard.settings import Settings

CATALOGUE = catalogue()


@pytest.fixture
def watched(settings: Settings) -> Iterator[TestClient]:
    """A client whose app evaluates alert rules only when a test calls ``tick``."""
    slow = settings.model_copy(update={"monitor_interval_seconds": 3600})
    with signed_client(slow) as client:
        assert client.put("/v1/catalogue", json=CATALOGUE).status_code == 200
        yield client


def tick(client: TestClient) -> list[Any]:
    watch = client.app.state.services.watch  # type: ignore[attr-defined]
    return client.portal.call(watch.tick)  # type: ignore[union-attr]


def buy(client: TestClient, n: int, prefix: str) -> list[int]:
    discounts = []
    for i in range(n):
        priced = quote(client, [line("sku-8", 30000)], customer=f"{prefix}-{i}")
        assert order(client, priced["quote_token"], f"{prefix}-{i}").status_code == 201
        discounts.append(priced["discount_total"])
    return discounts


def test_normal_orders_raise_no_alert(watched: TestClient):
    live(watched, threshold(spend=20000, off=2000))
    buy(watched, 20, "normal")
    assert tick(watched) == []
    assert watched.get("/v1/alerts").json() == []


def test_a_version_far_deeper_than_the_campaigns_profile_is_paused_on_its_own(
    watched: TestClient,
):
    live(watched, threshold(spend=20000, off=2000))
    assert watched.get("/v1/campaigns/mj").json()["profile_version"] == 1
    # v2 passes review (its depth warning acknowledged) but is three times as deep.
    deeper = threshold(spend=20000, off=6000)
    assert watched.post("/v1/campaigns/mj/versions", json={"spec": deeper}).status_code == 201
    approve(watched, "mj", 2)
    assert watched.post("/v1/campaigns/mj/activate", json={"version": 2}).status_code == 200
    assert set(buy(watched, 8, "affected")) == {6000}

    fired = tick(watched)

    assert [(a.rule, a.campaign_id, a.version) for a in fired] == [
        ("discount-above-profile", "mj", 2)
    ]
    campaign = watched.get("/v1/campaigns/mj").json()
    assert campaign["status"] == "paused"
    assert quote(watched, [line("sku-8", 30000)], customer="after")["discount_total"] == 0
    (stored,) = watched.get("/v1/alerts", params={"campaign_id": "mj"}).json()
    assert stored["outcome"]["pause"] == "paused"
    assert stored["outcome"]["incident"] == "opened 1 (P1)"
    timeline = watched.get("/v1/campaigns/mj/timeline").json()
    paused = [e for e in timeline if e["action"] == "campaign.paused"]
    assert paused[-1]["actor"] == "monitor"
    assert "discount-above-profile" in paused[-1]["detail"]["reason"]
    assert any(e["action"] == "alert.fired" for e in timeline)


def test_an_adopted_profile_is_what_monitoring_expects_from_then_on(watched: TestClient):
    live(watched, threshold(spend=20000, off=2000))
    deeper = threshold(spend=20000, off=8000)
    watched.post("/v1/campaigns/mj/versions", json={"spec": deeper})
    approve(watched, "mj", 2)
    watched.post("/v1/campaigns/mj/activate", json={"version": 2})
    adopted = watched.post(
        "/v1/campaigns/mj/profile", json={"version": 2, "reason": "deeper on purpose"}
    )
    assert adopted.status_code == 200, adopted.text
    assert adopted.json()["profile_version"] == 2
    buy(watched, 10, "deliberate")
    assert tick(watched) == []


def test_the_metrics_count_requests_quotes_orders_and_claims(watched: TestClient):
    live(watched, threshold(spend=20000, off=2000))
    buy(watched, 3, "m")
    text = watched.get("/metrics").text
    assert 'promoguard_campaign_orders_total{campaign="mj",version="1"} 3.0' in text
    assert 'route="/v1/quotes"' in text


def test_each_campaign_versions_traffic_per_minute_is_summed_in_the_store(settings: Settings):
    """Two workers (apps) flush their own orders; the stored minute is the sum of both."""
    slow = settings.model_copy(update={"monitor_interval_seconds": 3600})
    with signed_client(slow) as a, signed_client(slow) as b:
        assert a.put("/v1/catalogue", json=CATALOGUE).status_code == 200
        live(a, threshold(spend=20000, off=2000))
        buy(a, 3, "on-a")
        buy(b, 2, "on-b")
        tick(a)
        tick(b)
        buy(a, 1, "again")  # a later flush adds to the same minute
        watch = a.app.state.services.watch  # type: ignore[attr-defined]
        a.portal.call(watch.tick)  # type: ignore[union-attr]
        a.portal.call(watch.flush_traffic)  # type: ignore[union-attr]
        rows = a.get("/v1/campaigns/mj/traffic", params={"minutes": 10}).json()
    assert sum(r["orders"] for r in rows) == 6
    assert sum(r["discount"] for r in rows) == 6 * 2000
    assert sum(r["list_total"] for r in rows) == 6 * 30000
    assert {r["version"] for r in rows} == {1}
    assert all(r["rate_bps"] == 666 for r in rows)  # 20 of 300 yuan, rounded down
