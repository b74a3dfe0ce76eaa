"""Auto-pause across worker processes: a faulty campaign version is paused by monitoring on its
own, and no worker discounts with it 1 s after the alert.

Two real ``promoguard serve`` processes share one database (a SQLite file with the stamp poll
only; PostgreSQL with Redis pub/sub and a stamp poll too slow to make the deadline). Each worker
runs its own watch (``PROMOGUARD_MONITOR_INTERVAL_SECONDS`` 0.05): over the orders it serves
without Redis, over both workers' orders (the Redis signal stream) with it.

The scenario: a catalogue, campaign ``mj`` v1 (满200减20) live (its first version's simulation is
the campaign's expected profile), ~50 normal orders spread over both workers (no alert), then v2
(满200减60, which passes review with its depth warning acknowledged) live in its place. Orders are
then sent to the workers in turn until ``GET /v1/alerts`` shows the ``discount-above-profile``
alert with its pause done. Nothing here measures speed (``bench/exposure.py`` does): the test
waits until 1 s after the alert fired (its ``fired_at``; the pause is committed before the alert
is stored) and asserts that *then* both workers quote without the campaign's discount. Before
the fault both workers are seen giving v1's and then v2's discount, so a pause that does not
reach a worker fails the test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from itertools import count
from typing import Any

import httpx
import pytest
from tests.service.helpers import approve, catalogue, line, live, threshold
from tests.service.test_kill_switch_workers import SLOW_REFRESH, Workers, two_workers

from promoguard.settings import Settings

CATALOGUE = catalogue()
"""The shop (as in test_monitoring): v1's simulation, with no order history yet, samples it."""
DEADLINE = 1.0
"""Seconds after the alert by which no worker discounts with the paused version (the must-show)."""
GIVE_UP = 60.0
"""Seconds of faulty orders after which the test fails instead of hanging."""
MONITOR_INTERVAL = "0.05"
"""The watch's evaluation interval (the default), spelt out so the environment cannot change it."""
NORMAL_ORDERS = 50
CART = [line("sku-8", 30000)]
V1, V2 = 2000, 6000
"""What 满200减20 and 满200减60 give the 300-yuan cart."""
RULE = "discount-above-profile"


@pytest.fixture
def workers(settings: Settings) -> Iterator[Workers]:
    """Two workers polling the stamp every 0.5 s, no Redis."""
    with two_workers(settings, PROMOGUARD_MONITOR_INTERVAL_SECONDS=MONITOR_INTERVAL) as pair:
        yield pair


@pytest.fixture
def redis_workers(settings: Settings, redis_url: str) -> Iterator[Workers]:
    """Two workers on Redis pub/sub whose stamp poll (30 s) cannot make the deadline."""
    with two_workers(
        settings,
        PROMOGUARD_REDIS_URL=redis_url,
        PROMOGUARD_RULES_REFRESH_SECONDS=SLOW_REFRESH,
        PROMOGUARD_MONITOR_INTERVAL_SECONDS=MONITOR_INTERVAL,
    ) as pair:
        yield pair


def discount(shop: httpx.Client, customer: str = "probe") -> int:
    """The discount a worker quotes the 300-yuan cart now."""
    response = shop.post("/v1/quotes", json={"customer": {"id": customer}, "cart": {"lines": CART}})
    assert response.status_code == 200, response.text
    total: int = response.json()["discount_total"]
    return total


def settled(shop: httpx.Client, expected: int) -> int:
    """The discount once it is ``expected`` (set-up reaching the worker), or what it still is
    after 10 s."""
    give_up = time.monotonic() + 10
    while (seen := discount(shop)) != expected and time.monotonic() < give_up:
        time.sleep(0.05)
    return seen


def buy(shop: httpx.Client, customer: str) -> dict[str, Any] | None:
    """Quote the cart and order it on one worker: the order, or None when the price changed in
    between (the campaign was paused after the quote)."""
    quoted = shop.post("/v1/quotes", json={"customer": {"id": customer}, "cart": {"lines": CART}})
    assert quoted.status_code == 200, quoted.text
    placed = shop.post(
        "/v1/orders",
        json={"quote_token": quoted.json()["quote_token"]},
        headers={"Idempotency-Key": f"order-{customer}"},
    )
    if placed.status_code == 409 and placed.json()["code"] == "quote_changed":
        return None
    assert placed.status_code == 201, placed.text
    order: dict[str, Any] = placed.json()
    return order


def alerts(admin: httpx.Client) -> list[dict[str, Any]]:
    response = admin.get("/v1/alerts", params={"campaign_id": "mj"})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


def paused_by(alert: dict[str, Any]) -> bool:
    return alert["rule"] == RULE and alert["outcome"].get("pause") == "paused"


def auto_pause_reaches_every_worker(workers: Workers) -> None:
    admin, shops = workers.admin, (workers.shop_a, workers.shop_b)
    assert admin.put("/v1/catalogue", json=CATALOGUE).status_code == 200
    assert live(admin, threshold(spend=20000, off=V1))["status"] == "live"  # type: ignore[arg-type]
    assert admin.get("/v1/campaigns/mj").json()["profile_version"] == 1
    assert [settled(shop, V1) for shop in shops] == [V1, V1]

    # Normal traffic on v1, spread over both workers: nothing alerts.
    for n in range(NORMAL_ORDERS):
        order = buy(shops[n % 2], f"normal-{n}")
        assert order is not None
        assert order["discount_total"] == V1
    time.sleep(0.5)  # ten evaluations of each worker's watch
    assert alerts(admin) == []

    # v2: mis-keyed three times as deep, through review (warnings acknowledged), live.
    added = admin.post("/v1/campaigns/mj/versions", json={"spec": threshold(off=V2)})
    assert added.status_code == 201, added.text
    review = approve(admin, "mj", 2)  # type: ignore[arg-type]
    assert "L502" in review["version"]["acknowledgements"], review["version"]
    activated = admin.post("/v1/campaigns/mj/activate", json={"version": 2})
    assert activated.status_code == 200, activated.text
    assert [settled(shop, V2) for shop in shops] == [V2, V2]

    # Faulty orders on both workers, in turn, until monitoring has paused the campaign.
    fired: dict[str, Any] | None = None
    given: list[int] = []
    give_up = time.monotonic() + GIVE_UP
    for n in count():
        assert time.monotonic() < give_up, f"no auto-pause after {len(given)} faulty orders"
        order = buy(shops[n % 2], f"affected-{n}")
        if order is not None:
            given.append(order["discount_total"])
        fired = next((a for a in alerts(admin) if paused_by(a)), None)
        if fired is not None:
            break
    assert fired is not None
    assert fired["version"] == 2
    assert V2 in given  # the fault did reach customers before the pause

    fired_at = datetime.fromisoformat(fired["fired_at"]).timestamp()
    time.sleep(max(0.0, fired_at + DEADLINE - time.time()))
    assert [discount(shop, "after") for shop in shops] == [0, 0]

    campaign = admin.get("/v1/campaigns/mj").json()
    assert (campaign["status"], campaign["live_version"]) == ("paused", 2)
    timeline = admin.get("/v1/campaigns/mj/timeline").json()
    paused = [e for e in timeline if e["action"] == "campaign.paused"]
    # Each worker's watch may fire; on PostgreSQL two that fire at the same moment can both
    # pause (the pause reads the campaign without a row lock), so there may be two entries.
    assert paused
    assert {e["actor"] for e in paused} == {"monitor"}
    assert all(RULE in e["detail"]["reason"] for e in paused)
    # Every alert is about v2: the normal phase raised none.
    assert {(a["rule"], a["version"]) for a in alerts(admin)} == {(RULE, 2)}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_auto_pause_stops_both_workers_discounting_within_1s_of_the_alert(workers):
    auto_pause_reaches_every_worker(workers)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_with_redis_an_auto_pause_reaches_both_workers_within_1s_of_the_alert(redis_workers):
    """The workers poll the stamp every 30 s here: only the Redis announcement of the worker
    that paused can make the deadline."""
    auto_pause_reaches_every_worker(redis_workers)
