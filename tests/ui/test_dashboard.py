"""The dashboard through the TestClient: login, the session cookie, CSRF, confirmation, roles,
and actions that land in the audit log under the operator's key, like the API's."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi.testclient import TestClient
from tests.service.conftest import make_key
from tests.service.helpers import live, submit, threshold
from tests.ui.conftest import csrf_of, login

from promoguard.security.keys import revoke_key
from promoguard.settings import Settings
from promoguard.store.db import Database


def audit(shop: TestClient, action: str) -> list[dict[str, Any]]:
    found = shop.get("/v1/audit", params={"action": action})
    assert found.status_code == 200, found.text
    rows: list[dict[str, Any]] = found.json()
    return rows


def status_of(shop: TestClient, campaign_id: str) -> str:
    status: str = shop.get(f"/v1/campaigns/{campaign_id}").json()["status"]
    return status


def test_a_page_without_a_session_sends_to_the_login_form_and_back(shop: TestClient):
    answer = shop.get("/ui/incidents", auth=None, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/login?next=/ui/incidents"
    assert shop.get("/ui/static/ui.js", auth=None).status_code == 200


def test_login_sets_an_http_only_strict_session_cookie(shop: TestClient, settings: Settings):
    key_id, secret = make_key(settings, "operator")
    form = shop.get("/ui/login", auth=None)
    done = shop.post(
        "/ui/login",
        data={"csrf": csrf_of(form.text), "key_id": key_id, "secret": secret, "next": "/ui/plans"},
        auth=None,
        follow_redirects=False,
    )
    assert (done.status_code, done.headers["location"]) == (303, "/ui/plans")
    cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith("pg_session="))
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain HTTP here; set when served over TLS
    page = shop.get("/ui/plans", auth=None)
    assert page.status_code == 200
    assert key_id in page.text


def test_a_wrong_secret_or_a_missing_form_token_starts_no_session(
    shop: TestClient, settings: Settings
):
    key_id, secret = make_key(settings, "operator")
    form = shop.get("/ui/login", auth=None)
    token = csrf_of(form.text)
    wrong = shop.post(
        "/ui/login", data={"csrf": token, "key_id": key_id, "secret": secret + "x"}, auth=None
    )
    assert wrong.status_code == 401
    assert "pg_session" not in wrong.headers.get("set-cookie", "")
    forged = shop.post(
        "/ui/login", data={"csrf": "forged", "key_id": key_id, "secret": secret}, auth=None
    )
    assert forged.status_code == 403
    assert "pg_session" not in forged.headers.get("set-cookie", "")
    assert shop.get("/ui/campaigns", auth=None, follow_redirects=False).status_code == 303


def test_a_storefront_key_cannot_log_in(shop: TestClient, settings: Settings):
    key_id, secret = make_key(settings, "storefront")
    form = shop.get("/ui/login", auth=None)
    refused = shop.post(
        "/ui/login",
        data={"csrf": csrf_of(form.text), "key_id": key_id, "secret": secret},
        auth=None,
    )
    assert refused.status_code == 403
    assert "cannot use the dashboard" in refused.text


def test_a_tampered_cookie_or_a_revoked_key_ends_the_session(shop: TestClient, settings: Settings):
    staff = login(shop, settings, "auditor")
    cookie = shop.cookies["pg_session"]
    payload, mac = cookie.split(".")
    shop.cookies.delete("pg_session")
    shop.cookies.set("pg_session", f"{payload}x.{mac}")
    assert shop.get("/ui/campaigns", auth=None, follow_redirects=False).status_code == 303
    shop.cookies.delete("pg_session")
    shop.cookies.set("pg_session", cookie)
    assert shop.get("/ui/campaigns", auth=None).status_code == 200

    async def revoke() -> None:
        db = Database(settings.database_url)
        async with db.write() as session:
            await revoke_key(session, key_id=staff.key_id, actor="test")
        await db.dispose()

    asyncio.run(revoke())
    assert shop.get("/ui/campaigns", auth=None, follow_redirects=False).status_code == 303


def test_pausing_needs_the_session_token_and_a_confirmation_and_is_audited_under_the_key(
    shop: TestClient, settings: Settings
):
    live(shop, threshold())
    staff = login(shop, settings, "operator")
    url = "/ui/campaigns/mj/pause"
    forged = shop.post(url, data={"csrf": "x", "confirm": "yes", "reason": "r"}, auth=None)
    assert forged.status_code == 403
    unconfirmed = shop.post(url, data={"csrf": staff.csrf, "reason": "r"}, auth=None)
    assert unconfirmed.status_code == 400
    assert status_of(shop, "mj") == "live"

    done = shop.post(
        url,
        data={"csrf": staff.csrf, "confirm": "yes", "reason": "wrong tiers"},
        auth=None,
        follow_redirects=False,
    )
    assert (done.status_code, done.headers["location"]) == (303, "/ui/campaigns/mj")
    assert status_of(shop, "mj") == "paused"
    [entry] = audit(shop, "campaign.paused")
    assert (entry["key_id"], entry["actor"], entry["role"]) == (
        staff.key_id,
        staff.key_id,
        "operator",
    )
    page = shop.get("/ui/campaigns/mj", auth=None)
    assert "paused: no quote discounts" in page.text  # the message, once
    assert "paused: no quote discounts" not in shop.get("/ui/campaigns/mj", auth=None).text


def test_an_auditor_reads_every_page_but_changes_nothing(shop: TestClient, settings: Settings):
    live(shop, threshold())
    staff = login(shop, settings, "auditor")
    for path in ("/ui/campaigns", "/ui/campaigns/mj", "/ui/alerts", "/ui/incidents", "/ui/plans"):
        page = shop.get(path, auth=None)
        assert page.status_code == 200, path
    assert "Pause campaign" not in shop.get("/ui/campaigns/mj", auth=None).text
    refused = shop.post(
        "/ui/campaigns/mj/pause",
        data={"csrf": staff.csrf, "confirm": "yes", "reason": "r"},
        auth=None,
    )
    assert refused.status_code == 403
    assert status_of(shop, "mj") == "live"


def test_an_approver_approves_a_version_for_their_department_and_an_operator_may_not(
    shop: TestClient, settings: Settings
):
    assert shop.post("/v1/campaigns", json={"spec": threshold()}).status_code == 201
    submit(shop, "mj")
    url = "/ui/campaigns/mj/versions/1/decision"
    operator = login(shop, settings, "operator")
    assert "Approve version 1" not in shop.get("/ui/campaigns/mj", auth=None).text
    refused = shop.post(
        url, data={"csrf": operator.csrf, "confirm": "yes", "decision": "approve"}, auth=None
    )
    assert refused.status_code == 403

    staff = login(shop, settings, "approver", department="marketing")
    assert "Approve version 1" in shop.get("/ui/campaigns/mj", auth=None).text
    done = shop.post(
        url,
        data={"csrf": staff.csrf, "confirm": "yes", "decision": "approve", "reason": "ok"},
        auth=None,
    )
    assert done.status_code == 200
    assert "approved for marketing" in done.text
    review = shop.get("/v1/campaigns/mj/versions/1/approvals").json()
    assert [(a["department"], a["approver"]) for a in review["approvals"]] == [
        ("marketing", staff.key_id)
    ]
    [entry] = audit(shop, "campaign.approved")
    assert entry["key_id"] == staff.key_id
    again = shop.post(
        url, data={"csrf": staff.csrf, "confirm": "yes", "decision": "approve"}, auth=None
    )
    assert "already_decided" in again.text  # the service's refusal comes back as a message


def test_logging_out_ends_the_session(shop: TestClient, settings: Settings):
    staff = login(shop, settings, "operator")
    out = shop.post("/ui/logout", data={"csrf": staff.csrf}, auth=None, follow_redirects=False)
    assert out.status_code == 303
    assert shop.get("/ui/campaigns", auth=None, follow_redirects=False).status_code == 303
