"""Impact simulation through the API: the report, the stored expected profile, and going live
refused when the budget forecast exceeds the budget. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from tests.service.helpers import approve, catalogue, line, live, order, quote, threshold

CATALOGUE = catalogue(("gold",), cost=4000)
SIMULATE = "/v1/campaigns/mj/versions/{}/simulation"


def load_catalogue(client: TestClient) -> None:
    response = client.put("/v1/catalogue", json=CATALOGUE)
    assert response.status_code == 200, response.text
    assert response.json()["items"] == 20


def approved(client: TestClient, rule: dict[str, Any]) -> None:
    assert client.post("/v1/campaigns", json={"spec": rule}).status_code == 201
    approve(client, rule["id"])


def test_going_live_is_refused_when_the_forecast_exceeds_the_budget(client: TestClient):
    load_catalogue(client)
    approved(client, threshold(limits={"budget": 100_000}))  # 1,000 yuan for a day of sales
    response = client.post("/v1/campaigns/mj/activate", json={})
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "budget_forecast_exceeded"
    forecast = body["simulation"]["forecast"]
    assert forecast["forecast_spend"] > forecast["budget"] == 100_000
    assert client.get("/v1/campaigns/mj").json()["status"] == "draft"
    assert client.get("/v1/campaigns/mj/versions/1").json()["state"] == "approved"


def test_a_version_within_budget_goes_live_with_its_expected_profile(client: TestClient):
    load_catalogue(client)
    approved(client, threshold(limits={"budget": 10**11}))
    assert client.post("/v1/campaigns/mj/activate", json={}).status_code == 200
    stored = client.get("/v1/campaigns/mj/versions/1").json()["simulation"]
    assert stored["source"] == "synthetic"
    assert stored["forecast"]["exceeds_budget"] is False
    assert stored["profile"]


def test_the_simulation_report_compares_the_live_set_with_and_without_the_candidate(
    client: TestClient,
):
    load_catalogue(client)
    assert client.post("/v1/campaigns", json={"spec": threshold()}).status_code == 201
    response = client.post(SIMULATE.format(1), json={"expected_orders": 10})
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["baseline"]["discount"] == 0
    assert report["with_candidate"]["discount"] > 0
    assert report["forecast"]["expected_orders"] == 10
    assert report["with_candidate"]["orders_per_rule"]["mj"] > 0


def test_recorded_orders_are_the_sample_once_there_are_some(client: TestClient):
    live(client, threshold(rule_id="other", off=1000))
    for n in range(3):
        token = quote(client, [line("coat", 30000)], customer=f"c-{n}")["quote_token"]
        assert order(client, token, f"k-{n}").status_code == 201
    assert client.post("/v1/campaigns", json={"spec": threshold()}).status_code == 201
    report = client.post(SIMULATE.format(1), json={}).json()
    assert report["source"] == "orders"
    assert report["with_candidate"]["carts"] == 3
    assert report["baseline"]["orders_per_rule"] == {"other": 3}


def test_with_no_orders_and_no_catalogue_there_is_nothing_to_simulate(client: TestClient):
    assert client.post("/v1/campaigns", json={"spec": threshold()}).status_code == 201
    response = client.post(SIMULATE.format(1), json={})
    assert response.status_code == 404
    assert response.json()["code"] == "nothing_to_simulate"


def test_a_bad_catalogue_is_refused_with_the_field_at_fault(client: TestClient):
    bad = {"items": [{"sku": "a", "category": "x", "unit_price": -1}]}
    response = client.put("/v1/catalogue", json=bad)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request"
    assert response.json()["errors"][0]["path"] == "items[0].unit_price"
    assert client.get("/v1/catalogue").json()["code"] == "catalogue_not_found"
