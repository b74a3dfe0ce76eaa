"""Campaigns on both databases: versions never change, the lifecycle, filters, bad input."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from tests.service.helpers import approve, line, live, quote, spec, threshold

from promoguard.security.keys import DEPARTMENTS
from promoguard.store.db import sync_url


def test_a_new_version_never_edits_an_old_one(client: TestClient):
    live(client, threshold(spend=20000, off=5000))

    added = client.post(
        "/v1/campaigns/mj/versions",
        json={"spec": threshold(spend=20000, off=3000), "note": "smaller"},
    )

    assert added.status_code == 201, added.text
    assert added.json()["version"] == 2
    assert added.json()["state"] == "draft"
    first = client.get("/v1/campaigns/mj/versions/1").json()
    assert first["spec"]["tiers"] == [{"min_spend": 20000, "discount": 5000}]
    assert first["state"] == "live"
    assert [v["version"] for v in client.get("/v1/campaigns/mj/versions").json()] == [1, 2]


def test_activating_a_version_supersedes_the_live_one_and_rollback_restores_it(client: TestClient):
    live(client, threshold(off=5000))
    client.post("/v1/campaigns/mj/versions", json={"spec": threshold(off=3000)})
    approve(client, "mj", 2)

    client.post("/v1/campaigns/mj/activate", json={"version": 2})
    assert quote(client, [line("a", 23000)])["total"] == 20000
    rolled = client.post("/v1/campaigns/mj/activate", json={"version": 1})

    assert rolled.json()["live_version"] == 1
    assert quote(client, [line("a", 23000)])["total"] == 18000
    states = {v["version"]: v["state"] for v in client.get("/v1/campaigns/mj/versions").json()}
    assert states == {1: "live", 2: "superseded"}


def test_pause_takes_a_campaign_out_of_pricing_and_activate_resumes_it(client: TestClient):
    live(client, threshold())

    paused = client.post("/v1/campaigns/mj/pause", json={"reason": "suspicious redemptions"})
    assert paused.json()["status"] == "paused"
    assert quote(client, [line("a", 23000)])["total"] == 23000
    resumed = client.post("/v1/campaigns/mj/activate", json={})

    assert resumed.json()["status"] == "live"
    assert quote(client, [line("a", 23000)])["total"] == 18000


def test_an_ended_campaign_never_prices_again_nor_takes_versions(client: TestClient):
    live(client, threshold())
    assert client.post("/v1/campaigns/mj/end", json={"reason": "sale over"}).status_code == 200

    assert quote(client, [line("a", 23000)])["total"] == 23000
    again = client.post("/v1/campaigns/mj/activate", json={})
    more = client.post("/v1/campaigns/mj/versions", json={"spec": threshold()})
    assert (again.status_code, again.json()["code"]) == (409, "campaign_ended")
    assert (more.status_code, more.json()["code"]) == (409, "campaign_ended")


def test_lifecycle_moves_that_make_no_sense_are_conflicts(client: TestClient):
    client.post("/v1/campaigns", json={"spec": threshold()})

    pause = client.post("/v1/campaigns/mj/pause", json={"reason": "x"})
    approve(client, "mj")
    client.post("/v1/campaigns/mj/activate", json={})
    twice = client.post("/v1/campaigns/mj/activate", json={"version": 1})

    assert (pause.status_code, pause.json()["code"]) == (409, "invalid_transition")
    assert (twice.status_code, twice.json()["code"]) == (409, "already_live")


def test_list_filters_by_status_and_kind(client: TestClient):
    live(client, threshold("live-one"))
    client.post("/v1/campaigns", json={"spec": threshold("draft-one")})
    client.post("/v1/campaigns", json={"spec": spec("sp", "fixed_price", price=100)})

    live_ones = client.get("/v1/campaigns", params={"status": "live"}).json()
    thresholds = client.get("/v1/campaigns", params={"kind": "threshold"}).json()
    page = client.get("/v1/campaigns", params={"limit": 1}).json()

    assert [c["id"] for c in live_ones["items"]] == ["live-one"]
    assert sorted(c["id"] for c in thresholds["items"]) == ["draft-one", "live-one"]
    assert (len(page["items"]), page["total"]) == (1, 3)


def test_a_bad_spec_is_refused_with_the_field_path_and_nothing_is_written(client: TestClient):
    bad = threshold(spend=20000, off=-5)

    response = client.post("/v1/campaigns", json={"spec": bad})

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "invalid_rule"
    assert {
        "path": "spec.tiers[0].discount",
        "reason": "Input should be greater than or equal to 1",
    } in body["errors"]
    assert client.get("/v1/campaigns").json()["total"] == 0


def test_unknown_kind_duplicate_id_and_kind_change_have_stable_codes(client: TestClient):
    unknown = client.post("/v1/campaigns", json={"spec": spec("x", "mystery")})
    client.post("/v1/campaigns", json={"spec": threshold()})
    duplicate = client.post("/v1/campaigns", json={"spec": threshold()})
    kind = client.post(
        "/v1/campaigns/mj/versions", json={"spec": spec("mj", "fixed_price", price=100)}
    )
    missing = client.get("/v1/campaigns/nope")

    assert (unknown.status_code, unknown.json()["code"]) == (422, "invalid_rule")
    assert unknown.json()["errors"][0]["path"] == "spec.kind"
    assert (duplicate.status_code, duplicate.json()["code"]) == (409, "campaign_exists")
    assert (kind.status_code, kind.json()["code"]) == (422, "kind_changed")
    assert (missing.status_code, missing.json()["code"]) == (404, "campaign_not_found")


def test_malformed_requests_are_4xx_problems_with_paths(client: TestClient):
    not_json = client.post(
        "/v1/quotes", content=b"{nope", headers={"content-type": "application/json"}
    )
    negative = client.post(
        "/v1/quotes", json={"customer": {"id": "c"}, "cart": {"lines": [line("a", -1)]}}
    )
    unknown_route = client.get("/v1/nowhere")

    assert not_json.status_code == 422
    assert not_json.json()["code"] == "invalid_request"
    assert negative.status_code == 422
    assert any(e["path"] == "cart.lines[0].unit_price" for e in negative.json()["errors"])
    assert (unknown_route.status_code, unknown_route.json()["code"]) == (404, "not_found")


def test_every_change_lands_in_the_append_only_audit_log(client: TestClient, database_url: str):
    live(client, threshold())
    client.post("/v1/campaigns/mj/pause", json={"reason": "checking"})

    engine = sa.create_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            actions = conn.execute(
                sa.text(
                    "SELECT action, actor FROM audit_log WHERE action LIKE 'campaign.%' ORDER BY id"
                )
            ).all()
        me = client.key_id
        assert [tuple(a) for a in actions] == [
            ("campaign.created", me),
            ("campaign.submitted", me),
            *[("campaign.approved", client.approvers[d].key_id) for d in DEPARTMENTS],
            ("campaign.activated", me),
            ("campaign.paused", me),
        ]
        with engine.connect() as conn:
            callers = conn.execute(
                sa.text("SELECT key_id, role, ip, request_id FROM audit_log WHERE role IS NOT NULL")
            ).all()
        approvers = {(a.key_id, "approver", "127.0.0.1") for a in client.approvers.values()}
        assert {(k, r, ip) for k, r, ip, _ in callers} == {(me, "admin", "127.0.0.1"), *approvers}
        assert all(request_id for *_, request_id in callers)
        for statement in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()
