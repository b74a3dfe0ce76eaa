"""The dashboard's buttons beyond the first ones, through the TestClient: change the rollout, roll
back, end a campaign; open an incident by hand, change its severity, write its post-mortem; pay
a claim again. Each is refused to a role the API refuses (403), refused without the confirmation
box (400), and, done, lands in the audit log under the operator's key like the API call."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.service.helpers import approve, live, threshold
from tests.ui.conftest import Staff, login
from tests.ui.test_claim_page import paid_order
from tests.ui.test_dashboard import audit

from promoguard.settings import Settings


def post(shop: TestClient, staff: Staff, url: str, **fields: str) -> Any:
    return shop.post(url, data={"csrf": staff.csrf, **fields}, auth=None, follow_redirects=False)


def refused_then_done(
    shop: TestClient, settings: Settings, url: str, fields: dict[str, str]
) -> tuple[Staff, Any]:
    """An auditor is refused; the operator without the box too; then the operator does it."""
    auditor = login(shop, settings, "auditor")
    assert post(shop, auditor, url, confirm="yes", **fields).status_code == 403
    operator = login(shop, settings, "operator")
    assert post(shop, operator, url, **fields).status_code == 400
    done = post(shop, operator, url, confirm="yes", **fields)
    assert done.status_code == 303, done.text
    return operator, done


def campaign(shop: TestClient) -> dict[str, Any]:
    found: dict[str, Any] = shop.get("/v1/campaigns/mj").json()
    return found


def test_an_operator_changes_the_rollout_and_the_audit_names_the_key(
    shop: TestClient, settings: Settings
):
    live(shop, threshold())
    url = "/ui/campaigns/mj/rollout"
    staff, done = refused_then_done(shop, settings, url, {"percent": "12.5", "reason": "canary"})
    assert done.headers["location"] == "/ui/campaigns/mj"
    assert campaign(shop)["rollout_bps"] == 1250
    [entry] = audit(shop, "campaign.rollout_changed")
    assert (entry["key_id"], entry["actor"]) == (staff.key_id, staff.key_id)
    page = shop.get("/ui/campaigns/mj", auth=None)
    assert "now prices for 12.5 % of customers" in page.text
    assert 'id="campaign-rollout">12.50 %' in page.text


def test_a_rollout_out_of_range_is_refused_with_the_apis_code(shop: TestClient, settings: Settings):
    live(shop, threshold())
    staff = login(shop, settings, "operator")
    done = post(shop, staff, "/ui/campaigns/mj/rollout", confirm="yes", percent="250")
    assert done.status_code == 303
    assert "invalid_request" in shop.get("/ui/campaigns/mj", auth=None).text
    assert campaign(shop)["rollout_bps"] == 10_000
    assert audit(shop, "campaign.rollout_changed") == []


def test_an_operator_rolls_back_to_the_previous_version(shop: TestClient, settings: Settings):
    live(shop, threshold(off=2000))
    added = shop.post("/v1/campaigns/mj/versions", json={"spec": threshold(off=3000)})
    assert added.status_code == 201, added.text
    approve(shop, "mj", 2)
    assert shop.post("/v1/campaigns/mj/activate", json={"version": 2}).status_code == 200
    login(shop, settings, "operator")
    assert "Roll back to version 1" in shop.get("/ui/campaigns/mj", auth=None).text
    url = "/ui/campaigns/mj/rollback"
    staff, _ = refused_then_done(shop, settings, url, {"reason": "v2 too deep"})
    assert campaign(shop)["live_version"] == 1
    [entry] = audit(shop, "campaign.rolled_back")
    assert entry["key_id"] == staff.key_id
    assert entry["detail"]["reason"] == "v2 too deep"


def test_ending_a_campaign_needs_a_reason_and_is_audited(shop: TestClient, settings: Settings):
    live(shop, threshold())
    staff = login(shop, settings, "operator")
    no_reason = post(shop, staff, "/ui/campaigns/mj/end", confirm="yes", reason="")
    assert no_reason.status_code == 303
    assert "invalid_request" in shop.get("/ui/campaigns/mj", auth=None).text
    assert campaign(shop)["status"] == "live"
    staff, _ = refused_then_done(shop, settings, "/ui/campaigns/mj/end", {"reason": "sale over"})
    assert campaign(shop)["status"] == "ended"
    [entry] = audit(shop, "campaign.ended")
    assert entry["key_id"] == staff.key_id
    assert "End campaign" not in shop.get("/ui/campaigns/mj", auth=None).text


def test_an_operator_opens_an_incident_by_hand_and_lands_on_it(
    shop: TestClient, settings: Settings
):
    live(shop, threshold())
    fields = {"title": "Coupons fail at checkout", "severity": "P2", "versions": "mj:1"}
    staff, done = refused_then_done(shop, settings, "/ui/incidents", fields)
    [incident] = shop.get("/v1/incidents").json()
    assert done.headers["location"] == f"/ui/incidents/{incident['id']}"
    assert (incident["title"], incident["severity"]) == ("Coupons fail at checkout", "P2")
    assert incident["versions"] == [["mj", 1]]
    assert incident["opened_by"] == staff.key_id
    [entry] = audit(shop, "incident.opened")
    assert entry["key_id"] == staff.key_id
    page = shop.get(done.headers["location"], auth=None)
    assert f"Incident #{incident['id']} opened as P2." in page.text


def test_an_incident_form_the_api_would_refuse_opens_nothing(shop: TestClient, settings: Settings):
    staff = login(shop, settings, "operator")
    bad = post(shop, staff, "/ui/incidents", confirm="yes", title="x", versions="mj:zero")
    assert bad.headers["location"] == "/ui/incidents"
    assert "invalid_request" in shop.get("/ui/incidents", auth=None).text
    assert shop.get("/v1/incidents").json() == []


def opened(shop: TestClient, severity: str = "P2") -> int:
    answer = shop.post("/v1/incidents", json={"title": "by hand", "severity": severity})
    assert answer.status_code == 201, answer.text
    number: int = answer.json()["id"]
    return number


def test_raising_the_severity_needs_no_reason_lowering_does(shop: TestClient, settings: Settings):
    incident = opened(shop, "P2")
    url = f"/ui/incidents/{incident}/severity"
    staff, _ = refused_then_done(shop, settings, url, {"severity": "P1"})
    assert shop.get(f"/v1/incidents/{incident}").json()["severity"] == "P1"
    [entry] = audit(shop, "incident.severity")
    assert entry["key_id"] == staff.key_id
    lowered = post(shop, staff, url, confirm="yes", severity="P3")
    assert lowered.status_code == 303
    assert "reason_required" in shop.get(f"/ui/incidents/{incident}", auth=None).text
    assert shop.get(f"/v1/incidents/{incident}").json()["severity"] == "P1"
    post(shop, staff, url, confirm="yes", severity="P3", reason="only one store affected")
    assert shop.get(f"/v1/incidents/{incident}").json()["severity"] == "P3"


def test_an_operator_writes_the_post_mortem(shop: TestClient, settings: Settings):
    incident = opened(shop)
    url = f"/ui/incidents/{incident}/postmortem"
    fields = {
        "summary": "Coupons failed for 20 minutes",
        "root_cause": "An expired certificate",
        "factors": "no expiry alert\nmanual renewal",
        "actions": "Alert 30 days before expiry | ops | 2026-12-31\nAutomate renewal | platform",
    }
    staff, done = refused_then_done(shop, settings, url, fields)
    assert done.headers["location"] == url
    found = shop.get(f"/v1/incidents/{incident}").json()
    assert (found["summary"], found["root_cause"]) == (fields["summary"], fields["root_cause"])
    assert found["contributing_factors"] == ["no expiry alert", "manual renewal"]
    assert found["action_items"] == [
        {"what": "Alert 30 days before expiry", "owner": "ops", "due": "2026-12-31"},
        {"what": "Automate renewal", "owner": "platform"},
    ]
    [entry] = audit(shop, "incident.postmortem")
    assert entry["key_id"] == staff.key_id
    page = shop.get(url, auth=None)
    assert "Automate renewal | platform" in page.text  # the form shows what is stored
    no_owner = post(shop, staff, url, confirm="yes", actions="Fix it")
    assert no_owner.status_code == 303
    assert "invalid_request" in shop.get(url, auth=None).text


@pytest.fixture
def approved_claim(shop: TestClient, settings: Settings) -> str:
    """A claim approved with a goodwill refund, its payout not paid (no provider answers)."""
    order = paid_order(shop)
    applied = shop.post(
        "/v1/claims",
        json={"order_id": order, "customer_id": "c-7", "reason": "other", "message": "crushed"},
    )
    assert applied.status_code == 201, applied.text
    claim: str = applied.json()["id"]
    decided = shop.post(
        f"/v1/claims/{claim}/decision",
        json={"decision": "approve", "reason": "sorry", "amount": 500},
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "approved"
    return claim


def test_an_operator_pays_an_approved_claim_again(
    shop: TestClient, settings: Settings, approved_claim: str
):
    url = f"/ui/claims/{approved_claim}/pay"
    operator = login(shop, settings, "operator")
    assert "Pay again" in shop.get(f"/ui/claims/{approved_claim}", auth=None).text
    # No provider configured: the API's refusal, as a message; nothing audited.
    post(shop, operator, url, confirm="yes")
    assert "payments_not_configured" in shop.get(f"/ui/claims/{approved_claim}", auth=None).text
    assert audit(shop, "claim.pay_requested") == []
    # A provider that does not answer: the payout fails again, the attempt is audited.
    settings.payment_provider_url = "http://127.0.0.1:9"
    settings.payment_timeout_seconds = 1
    approver = login(shop, settings, "approver", department="marketing")
    assert post(shop, approver, url, confirm="yes").status_code == 403
    staff, _ = refused_then_done(shop, settings, url, {})
    [entry] = audit(shop, "claim.pay_requested")
    assert (entry["key_id"], entry["detail"]["status"]) == (staff.key_id, "approved")
    page = shop.get(f"/ui/claims/{approved_claim}", auth=None)
    assert "the payout did not succeed this time" in page.text
    assert 'id="claim-payout">¥5.00' in page.text


def test_an_operator_takes_an_approved_version_live(shop: TestClient, settings: Settings):
    assert shop.post("/v1/campaigns", json={"spec": threshold()}).status_code == 201
    approve(shop, "mj")
    login(shop, settings, "operator")
    assert "Take version 1 live" in shop.get("/ui/campaigns/mj", auth=None).text
    url = "/ui/campaigns/mj/versions/1/activate"
    staff, _ = refused_then_done(shop, settings, url, {"percent": "20"})
    found = campaign(shop)
    assert (found["status"], found["live_version"], found["rollout_bps"]) == ("live", 1, 2000)
    [entry] = audit(shop, "campaign.activated")
    assert entry["key_id"] == staff.key_id
    assert (
        "Version 1 of mj is live for 20 % of customers."
        in shop.get("/ui/campaigns/mj", auth=None).text
    )
