"""Review: lint on submission, an approval from every required department, the author kept out,
readable diffs, and a timeline of every move. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from tests.service.conftest import signed_client
from tests.service.helpers import approve, approver, line, live, quote, submit, threshold

from promoguard.settings import Settings

SUBMIT = "/v1/campaigns/{}/versions/{}/submit"
APPROVALS = "/v1/campaigns/{}/versions/{}/approvals"
WINDOW = {"valid_from": "2026-01-01T00:00:00+08:00", "valid_until": "2099-01-01T00:00:00+08:00"}


def create(client: TestClient, rule: dict[str, Any]) -> None:
    response = client.post("/v1/campaigns", json={"spec": rule})
    assert response.status_code == 201, response.text


def decide(client: TestClient, department: str, decision: str = "approve", v: int = 1) -> Any:
    return client.post(
        APPROVALS.format("mj", v),
        json={"decision": decision, "reason": "looked at it"},
        auth=approver(client, department),
    )


def test_a_draft_cannot_go_live_without_review(client: TestClient):
    create(client, threshold())
    response = client.post("/v1/campaigns/mj/activate", json={})
    assert response.status_code == 409
    assert response.json()["code"] == "invalid_transition"
    assert client.get("/v1/campaigns/mj").json()["status"] == "draft"


def test_a_lint_error_blocks_submission_and_the_version_stays_a_draft(client: TestClient):
    create(client, threshold(spend=5000, off=20000))  # 满50减200 typed for 满200减50
    response = client.post(SUBMIT.format("mj", 1), json={"acknowledgements": {}})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "lint_errors"
    assert any(f["severity"] == "error" for f in body["findings"])
    assert client.get("/v1/campaigns/mj/versions/1").json()["state"] == "draft"


def test_every_warning_needs_a_written_reason(client: TestClient):
    create(client, threshold())  # no end to its window: a warning at least
    findings = client.get("/v1/campaigns/mj/versions/1/lint").json()["findings"]
    codes = {f["code"] for f in findings}
    assert codes, "the open-ended window should draw a warning"
    refused = client.post(SUBMIT.format("mj", 1), json={"acknowledgements": {}})
    assert refused.status_code == 422
    assert refused.json()["code"] == "warnings_unacknowledged"
    assert {e["path"] for e in refused.json()["errors"]} == {f"acknowledgements.{c}" for c in codes}
    blank = client.post(
        SUBMIT.format("mj", 1), json={"acknowledgements": dict.fromkeys(codes, " ")}
    )
    assert blank.status_code == 422
    acks = dict.fromkeys(codes, "the sale runs until stock is gone")
    accepted = client.post(SUBMIT.format("mj", 1), json={"acknowledgements": acks})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["state"] == "in_review"
    assert accepted.json()["acknowledgements"] == acks


def test_going_live_needs_one_approval_from_each_required_department(client: TestClient):
    create(client, threshold())
    submit(client, "mj")
    for department in ("marketing", "engineering"):
        assert decide(client, department).status_code == 200
    review = client.get(APPROVALS.format("mj", 1)).json()
    assert review["version"]["state"] == "in_review"
    assert {a["department"] for a in review["approvals"]} == {"marketing", "engineering"}
    early = client.post("/v1/campaigns/mj/activate", json={})
    assert early.status_code == 409
    last = decide(client, "product")
    assert last.json()["version"]["state"] == "approved"
    assert client.post("/v1/campaigns/mj/activate", json={}).status_code == 200
    priced = quote(client, [line("coat", 30000)])
    assert priced["discount_total"] == 5000


def test_a_department_decides_once_and_a_rejection_ends_the_version(client: TestClient):
    create(client, threshold())
    submit(client, "mj")
    assert decide(client, "marketing").status_code == 200
    again = decide(client, "marketing")
    assert again.status_code == 409
    assert again.json()["code"] == "already_decided"
    rejected = decide(client, "engineering", "reject")
    assert rejected.json()["version"]["state"] == "rejected"
    assert decide(client, "product").json()["code"] == "invalid_transition"
    assert client.post("/v1/campaigns/mj/activate", json={}).status_code == 409


def test_the_author_cannot_approve_their_own_version(settings: Settings):
    with signed_client(settings, "operator", owner="alice") as alice:
        create(alice, threshold())
        submit(alice, "mj")
    with signed_client(settings, "approver", department="marketing", owner="alice") as own:
        response = own.post(APPROVALS.format("mj", 1), json={"decision": "approve"})
        assert response.status_code == 403
        assert response.json()["code"] == "own_version"
    with signed_client(settings, "approver", department="marketing", owner="bob") as bob:
        assert bob.post(APPROVALS.format("mj", 1), json={"decision": "approve"}).status_code == 200


def test_a_key_without_a_department_cannot_approve(client: TestClient, settings: Settings):
    create(client, threshold())
    submit(client, "mj")
    with signed_client(settings) as another_admin:
        response = another_admin.post(APPROVALS.format("mj", 1), json={"decision": "approve"})
    assert response.status_code == 403
    assert response.json()["code"] == "department_required"


def test_the_required_departments_are_configurable(settings: Settings):
    only_marketing = settings.model_copy(update={"review_departments": ["marketing"]})
    with signed_client(only_marketing) as client:
        create(client, threshold())
        submit(client, "mj")
        assert decide(client, "marketing").json()["version"]["state"] == "approved"
        not_asked = client.post(
            APPROVALS.format("mj", 1),
            json={"decision": "approve"},
            auth=approver(client, "product"),
        )
        assert not_asked.status_code == 409


def test_the_diff_says_what_customers_would_see_differently(client: TestClient):
    create(client, threshold())
    changed = threshold(off=8000, limits={"budget": 10_000_000}, **WINDOW)
    assert client.post("/v1/campaigns/mj/versions", json={"spec": changed}).status_code == 201
    diff = client.get("/v1/campaigns/mj/versions/2/diff", params={"against": 1}).json()
    by_path = {c["path"]: c for c in diff["changes"]}
    assert by_path["tiers[0].discount"]["before"] == 5000
    assert by_path["tiers[0].discount"]["after"] == 8000
    assert by_path["tiers[0].discount"]["aspect"] == "amounts"
    assert by_path["limits.budget"]["aspect"] == "limits"
    assert by_path["valid_until"]["aspect"] == "window"
    assert "version" not in by_path
    assert any("5000 → 8000" in s for s in diff["summary"])


def test_every_move_lands_on_the_campaign_timeline(client: TestClient):
    live(client, threshold())
    client.post("/v1/campaigns", json={"spec": threshold()})  # a duplicate: no timeline entry
    assert client.post("/v1/campaigns/mj/versions", json={"spec": threshold(off=6000)}).status_code
    approve(client, "mj", 2)
    client.post("/v1/campaigns/mj/activate", json={"version": 2, "rollout_percent": "10"})
    client.post("/v1/campaigns/mj/rollout", json={"percent": "50", "reason": "ramp"})
    client.post("/v1/campaigns/mj/pause", json={"reason": "checking"})
    client.post("/v1/campaigns/mj/rollback", json={"reason": "v2 misbehaves"})
    actions = [e["action"] for e in client.get("/v1/campaigns/mj/timeline").json()]
    assert actions == [
        "campaign.created",
        "campaign.submitted",
        "campaign.approved",
        "campaign.approved",
        "campaign.approved",
        "campaign.activated",
        "campaign.version_added",
        "campaign.submitted",
        "campaign.approved",
        "campaign.approved",
        "campaign.approved",
        "campaign.activated",
        "campaign.rollout_changed",
        "campaign.paused",
        "campaign.rolled_back",
    ]


def test_every_new_version_is_linted_when_it_is_added(client: TestClient):
    create(client, threshold(spend=5000, off=20000))
    first = client.get("/v1/campaigns/mj/versions/1").json()
    assert "L101" in {f["code"] for f in first["findings"]}
    added = client.post("/v1/campaigns/mj/versions", json={"spec": threshold(**WINDOW)})
    assert added.status_code == 201
    assert not [f for f in added.json()["findings"] if f["severity"] == "error"]
