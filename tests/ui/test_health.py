"""The service health page and the campaign's guard-trip chart, through the TestClient: the
stored per-route and per-version minutes (migration 0012) drawn as SVG with the numbers."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from tests.service.helpers import line, live, quote, threshold
from tests.ui.conftest import login

from promoguard.settings import Settings


def flush(client: TestClient) -> None:
    """What the watch does about once a second, now."""
    watch = client.app.state.services.watch  # type: ignore[attr-defined]
    client.portal.call(watch.tick)  # type: ignore[union-attr]
    client.portal.call(watch.flush_traffic)  # type: ignore[union-attr]


def cell(html: str, route: str, css: str) -> str:
    row = re.search(rf'<tr data-route="{re.escape(route)}">(.*?)</tr>', html, re.DOTALL)
    assert row is not None, html[-3000:]
    found = re.search(rf'<td class="{css}">([^<]*)</td>', row.group(1))
    assert found is not None, row.group(1)
    return found.group(1)


def test_the_health_page_charts_each_routes_requests_error_rate_and_p99(
    shop: TestClient, settings: Settings
):
    login(shop, settings, "auditor")
    for _ in range(4):
        assert shop.get("/v1/campaigns/none").status_code == 404
    flush(shop)
    page = shop.get("/ui/health", auth=None)
    assert page.status_code == 200
    route = "/v1/campaigns/{campaign_id}"
    assert cell(page.text, route, "requests") == "4"
    assert cell(page.text, route, "error-rate") == "0.00 %"  # 404s are the caller's errors
    assert cell(page.text, route, "p99").endswith(" ms")
    assert cell(page.text, route, "p99") != "0.0 ms"
    for chart in ("all-requests", "all-errors", "all-p99", "route-0-errors", "route-0-p99"):
        assert f'id="{chart}"' in page.text
    assert '<title id="all-p99-t">p99 latency per minute, every route</title>' in page.text
    live_part = shop.get("/ui/health/live", auth=None)
    assert live_part.status_code == 200
    assert 'id="requests-total"' in live_part.text


def test_the_health_page_needs_a_session(shop: TestClient):
    answer = shop.get("/ui/health", auth=None, follow_redirects=False)
    assert answer.headers["location"] == "/ui/login?next=/ui/health"


def test_a_campaigns_page_charts_its_guard_trips(shop: TestClient, settings: Settings):
    live(shop, threshold(spend=20000, off=5000, max_discount_ratio="0.1"))
    login(shop, settings, "operator")
    for i in range(3):
        assert quote(shop, [line("sku-8", 30000)], customer=f"t-{i}")["trips"]
    flush(shop)
    part = shop.get("/ui/campaigns/mj/traffic", auth=None)
    assert part.status_code == 200
    assert '<dd id="trips-total">3</dd>' in part.text
    assert 'id="trips-mj"' in part.text
    assert "Guard trips per minute" in part.text


def test_dashboard_pages_are_counted_under_their_path_template(
    shop: TestClient, settings: Settings
):
    login(shop, settings, "auditor")
    assert shop.get("/ui/claims/cl_nothing", auth=None).status_code == 404
    flush(shop)
    page = shop.get("/ui/health", auth=None)
    assert cell(page.text, "/ui/claims/{claim_id}", "requests") == "1"
    assert cell(page.text, "/ui/login", "requests") == "2"  # the form and the post
    assert 'data-route="unmatched"' not in page.text
