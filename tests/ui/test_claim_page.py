"""The customer's claim page through the TestClient: languages, the order look-up that shows
nothing for a wrong pair, CSRF, and a claim that reaches the team's queue and its answer."""

from __future__ import annotations

from fastapi.testclient import TestClient
from tests.service.helpers import line, live, order, quote, threshold
from tests.ui.conftest import csrf_of, login

from promoguard.settings import Settings


def paid_order(shop: TestClient, customer: str = "c-7") -> str:
    live(shop, threshold(spend=20000, off=2000))
    priced = quote(shop, [line("sku-8", 30000)], customer=customer)
    placed = order(shop, priced["quote_token"], f"k-{customer}")
    assert placed.status_code == 201, placed.text
    number: str = placed.json()["id"]
    assert shop.post(f"/v1/orders/{number}/events", json={"type": "paid"}).status_code == 200
    return number


def test_the_claim_page_is_chinese_by_default_and_english_on_request(shop: TestClient):
    zh = shop.get("/claim", auth=None)
    assert zh.status_code == 200
    assert '<html lang="zh-CN">' in zh.text
    assert "查询订单" in zh.text
    en = shop.get("/claim?lang=en", auth=None)
    assert "Look up an order" in en.text
    assert "Look up an order" in shop.get("/claim", auth=None).text  # the choice is remembered


def test_a_wrong_customer_id_shows_no_order_and_a_missing_token_is_refused(shop: TestClient):
    number = paid_order(shop)
    token = csrf_of(shop.get("/claim?lang=en", auth=None).text)
    wrong = shop.post(
        "/claim/lookup",
        data={"csrf": token, "order_id": number, "customer_id": "c-8", "lang": "en"},
        auth=None,
    )
    assert wrong.status_code == 404
    assert "¥280.00" not in wrong.text  # nothing of the order
    forged = shop.post(
        "/claim/lookup",
        data={"csrf": "forged", "order_id": number, "customer_id": "c-7", "lang": "en"},
        auth=None,
    )
    assert forged.status_code == 403
    right = shop.post(
        "/claim/lookup",
        data={"csrf": token, "order_id": number, "customer_id": "c-7", "lang": "en"},
        auth=None,
    )
    assert right.status_code == 200
    assert "¥280.00" in right.text  # what was paid


def test_a_claim_from_the_page_is_decided_by_the_team_and_the_customer_sees_it(
    shop: TestClient, settings: Settings
):
    number = paid_order(shop)
    token = csrf_of(shop.get("/claim?lang=en", auth=None).text)
    applied = shop.post(
        "/claim/apply",
        data={
            "csrf": token,
            "order_id": number,
            "customer_id": "c-7",
            "lang": "en",
            "reason": "other",
            "message": "damaged",
        },
        auth=None,
        follow_redirects=False,
    )
    assert applied.status_code == 303, applied.text
    status_url = applied.headers["location"]
    claim = status_url.split("/claim/status/")[1].split("?")[0]
    assert "Being reviewed by a person" in shop.get(status_url, auth=None).text
    assert shop.get(f"/v1/claims/{claim}").json()["status"] == "needs_review"

    staff = login(shop, settings, "approver", department="product")
    queue = shop.get("/ui/claims", auth=None)
    assert claim in queue.text
    rejected = shop.post(
        f"/ui/claims/{claim}/decision",
        data={"csrf": staff.csrf, "confirm": "yes", "decision": "reject", "reason": "no proof"},
        auth=None,
    )
    assert rejected.status_code == 200
    events = shop.get(f"/v1/claims/{claim}/events").json()
    assert events[-1]["actor"] == staff.key_id
    assert events[-1]["status"] == "rejected"
    assert "Not approved" in shop.get(status_url, auth=None).text
