"""Quote → order on both databases: prices, tokens, idempotency, allocations, events."""

from __future__ import annotations

from tests.service.helpers import coupon_spec, line, live, order, quote, threshold


def test_quote_prices_under_the_live_rules_and_signs_a_token(client):
    live(client, threshold())

    q = quote(client, [line("a", 23000)])

    assert q["total"] == 18000
    assert q["discounts"][0]["rule_id"] == "mj"
    assert q["quote_token"].count(".") == 1
    assert q["rules_stamp"] >= 1


def test_an_order_remembers_how_every_line_was_priced(client):
    live(client, threshold())
    q = quote(client, [line("a", 10000), line("b", 20000)])

    placed = order(client, q["quote_token"], "k-1")

    assert placed.status_code == 201, placed.text
    body = placed.json()
    assert body["total"] == 25000
    assert [ln["final_amount"] for ln in body["lines"]] == [8333, 16667]
    assert [ln["allocations"] for ln in body["lines"]] == [
        [{"rule_id": "mj", "rule_version": 1, "amount": 1667}],
        [{"rule_id": "mj", "rule_version": 1, "amount": 3333}],
    ]
    assert client.get(f"/v1/orders/{body['id']}").json() == body


def test_the_same_idempotency_key_and_body_return_the_same_order(client):
    q = quote(client, [line("a", 10000)])

    first = order(client, q["quote_token"], "same")
    again = order(client, q["quote_token"], "same")

    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers


def test_the_same_key_with_another_body_is_refused(client):
    one = quote(client, [line("a", 10000)])
    two = quote(client, [line("b", 10000)])
    order(client, one["quote_token"], "reused")

    response = order(client, two["quote_token"], "reused")

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "idempotency_key_reused"


def test_an_order_needs_an_idempotency_key(client):
    q = quote(client, [line("a", 10000)])

    response = client.post("/v1/orders", json={"quote_token": q["quote_token"]})

    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_missing"


def test_a_tampered_token_is_refused_and_writes_nothing(client):
    q = quote(client, [line("a", 10000)])
    payload, signature = q["quote_token"].split(".")
    forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature

    response = order(client, forged, "forged")

    assert response.status_code == 422
    assert response.json()["code"] == "quote_token_invalid"
    assert order(client, q["quote_token"], "forged").status_code == 201  # the key stayed free


def test_a_quote_whose_price_changed_cannot_be_committed(client):
    live(client, threshold())
    q = quote(client, [line("a", 23000)])
    paused = client.post("/v1/campaigns/mj/pause", json={"reason": "wrong tiers"})
    assert paused.status_code == 200

    response = order(client, q["quote_token"], "after-pause")

    assert response.status_code == 409
    assert response.json()["code"] == "quote_changed"
    assert response.json()["current_total"] == 23000


def test_one_quote_makes_one_order(client):
    q = quote(client, [line("a", 10000)])
    assert order(client, q["quote_token"], "k-a").status_code == 201

    response = order(client, q["quote_token"], "k-b")

    assert response.status_code == 409
    assert response.json()["code"] == "quote_already_used"


def test_a_claimed_coupon_is_redeemed_once_and_returned_on_cancel(client):
    live(client, coupon_spec())
    claimed = client.post("/v1/coupons/cp/claims", json={"customer_id": "c-1"})
    assert claimed.status_code == 201, claimed.text
    q = quote(client, [line("a", 10000)], coupons=["cp"])
    assert q["total"] == 9000

    placed = order(client, q["quote_token"], "with-coupon").json()
    wallet = client.get("/v1/customers/c-1/coupons").json()
    assert [c["state"] for c in wallet] == ["redeemed"]
    again = client.post(
        "/v1/quotes",
        json={"customer": {"id": "c-1"}, "cart": {"lines": [line("a", 10000)]}, "coupons": ["cp"]},
    )
    assert again.status_code == 422
    assert again.json()["code"] == "coupon_not_in_wallet"

    cancelled = client.post(f"/v1/orders/{placed['id']}/events", json={"type": "cancelled"})
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert [c["state"] for c in client.get("/v1/customers/c-1/coupons").json()] == ["issued"]


def test_refunds_follow_each_lines_own_share(client):
    live(client, threshold())
    q = quote(client, [line("a", 10000, 3), line("b", 20000)])
    placed = order(client, q["quote_token"], "refund").json()
    oid = placed["id"]
    assert client.post(f"/v1/orders/{oid}/events", json={"type": "paid"}).status_code == 200

    part = client.post(
        f"/v1/orders/{oid}/events",
        json={"type": "refunded", "lines": [{"sku": "a", "quantity": 2}]},
    )
    rest = client.post(f"/v1/orders/{oid}/events", json={"type": "refunded"})

    a = next(ln for ln in placed["lines"] if ln["sku"] == "a")
    assert part.json()["status"] == "partially_refunded"
    assert part.json()["refunded_total"] == a["final_amount"] * 2 // 3
    assert rest.json()["status"] == "refunded"
    assert rest.json()["refunded_total"] == placed["total"]
    too_much = client.post(f"/v1/orders/{oid}/events", json={"type": "refunded"})
    assert too_much.status_code == 409
    assert too_much.json()["code"] == "invalid_transition"
