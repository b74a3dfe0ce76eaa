"""Each route's requests per minute and each campaign version's guard trips per minute, summed in
the store over every worker (migration 0012), and read back by ``GET /v1/traffic/routes`` and
``GET /v1/campaigns/{id}/traffic``. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from tests.service.conftest import signed_client
from tests.service.helpers import catalogue, line, live, quote, threshold

from promoguard.monitoring.models import LATENCY_BOUNDS_MS
from promoguard.monitoring.route_traffic import BUCKETS, RouteSums, quantile_ms
from promoguard.monitoring.signals import RequestSignal
from promoguard.settings import Settings


def flush(client: TestClient) -> None:
    watch = client.app.state.services.watch  # type: ignore[attr-defined]
    client.portal.call(watch.tick)  # type: ignore[union-attr]
    client.portal.call(watch.flush_traffic)  # type: ignore[union-attr]


def routes(client: TestClient, route: str) -> list[dict[str, Any]]:
    found = client.get("/v1/traffic/routes", params={"minutes": 10})
    assert found.status_code == 200, found.text
    return [r for r in found.json() if r["route"] == route]


def test_a_routes_requests_errors_and_latency_are_summed_over_every_worker(settings: Settings):
    slow = settings.model_copy(update={"monitor_interval_seconds": 3600})
    with signed_client(slow) as a, signed_client(slow) as b:
        assert a.put("/v1/catalogue", json=catalogue()).status_code == 200
        for client, n in ((a, 3), (b, 2)):
            for _ in range(n):
                assert client.get("/v1/campaigns/none").status_code == 404
        flush(a)
        flush(b)
        assert b.get("/v1/campaigns/none").status_code == 404  # a later flush adds to the minute
        flush(b)
        rows = routes(a, "/v1/campaigns/{campaign_id}")
    assert sum(r["requests"] for r in rows) == 6
    assert sum(r["client_errors"] for r in rows) == 6
    assert sum(r["server_errors"] for r in rows) == 0
    assert sum(sum(r["latency_buckets"].values()) for r in rows) == 6
    assert all(r["error_rate_bps"] == 0 and r["p99_ms"] > 0 for r in rows)
    assert set(rows[0]["latency_buckets"]) == set(BUCKETS)


def test_guard_trips_are_counted_per_campaign_version_and_minute(settings: Settings):
    slow = settings.model_copy(update={"monitor_interval_seconds": 3600})
    with signed_client(slow) as shop:
        assert shop.put("/v1/catalogue", json=catalogue()).status_code == 200
        # 满200减50 but at most 10 % of the list price: a 300 yuan cart asks 50, gets 30.
        live(shop, threshold(spend=20000, off=5000, max_discount_ratio="0.1"))
        for i in range(2):
            priced = quote(shop, [line("sku-8", 30000)], customer=f"t-{i}")
            assert priced["discount_total"] == 3000
            assert [t["limit"] for t in priced["trips"]] == ["rule_max_ratio"]
        flush(shop)
        rows = shop.get("/v1/campaigns/mj/traffic", params={"minutes": 10}).json()
    assert sum(r["guard_trips"] for r in rows) == 2
    assert {r["version"] for r in rows} == {1}
    assert sum(r["orders"] for r in rows) == 0  # quoted, never ordered


def test_p99_is_read_from_the_summed_buckets():
    sums = RouteSums()
    fast = [RequestSignal(60.0, "/r", 200, 0.003) for _ in range(98)]
    slow = [RequestSignal(61.0, "/r", 503, 0.7), RequestSignal(62.0, "/r", 200, 20.0)]
    sums.add([*fast, *slow])
    assert len(sums) == 1
    [minute] = sums._sums.values()
    assert (minute.requests, minute.server_errors, minute.client_errors) == (100, 1, 0)
    assert minute.buckets[BUCKETS.index("le_5ms")] == 98
    assert minute.buckets[BUCKETS.index("le_1000ms")] == 1
    assert minute.buckets[-1] == 1
    p99 = quantile_ms(minute.buckets)
    assert p99 is not None
    assert 500 < p99 <= 1000
    assert quantile_ms(minute.buckets, 0.5) == 2 + 3 * 50 / 98
    assert quantile_ms([0] * len(BUCKETS)) is None
    assert quantile_ms([0] * (len(BUCKETS) - 1) + [5]) == LATENCY_BOUNDS_MS[-1]
