"""The gate, on both databases: every refused request gets its own code and changes nothing."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from redis.asyncio import Redis
from tests.service.conftest import make_key, signed_client
from tests.service.helpers import claim_headers, coupon_spec, live, snapshot

from promoguard.app import create_app
from promoguard.security import signing
from promoguard.security.nonces import DatabaseNonces, RedisNonces
from promoguard.settings import Settings
from promoguard.store.db import Database


@pytest.fixture
def shop(settings: Settings):
    """A live coupon (with an admin client) and a storefront key; yields (client, key, secret)."""
    settings = settings.model_copy(
        update={"rate_limits": {"coupon_claim": {"customer": "2/minute"}}}
    )
    with signed_client(settings) as admin:
        live(admin, coupon_spec(per_user_limit=50, quantity=1000))
        key_id, secret = make_key(settings, "storefront")
        with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as plain:
            yield plain, key_id, secret, settings


BODY = json.dumps({"customer_id": "c-1"}).encode()


def refused(client: TestClient, database_url: str, headers: dict[str, str], body: bytes = BODY):
    before = snapshot(database_url)
    response = client.post("/v1/coupons/cp/claims", content=body, headers=headers)
    assert snapshot(database_url) == before, "a refused request changed the database"
    assert response.headers["content-type"] == "application/problem+json"
    return response.status_code, response.json()["code"]


def test_a_properly_signed_claim_goes_through(shop, database_url):
    client, key_id, secret, _ = shop
    before = snapshot(database_url)

    response = client.post(
        "/v1/coupons/cp/claims", content=BODY, headers=claim_headers(key_id, secret, BODY)
    )

    assert response.status_code == 201, response.text
    assert snapshot(database_url)["issued_coupons"] == before["issued_coupons"] + 1


def test_each_bad_request_has_its_own_code_and_changes_nothing(shop, database_url):
    client, key_id, secret, settings = shop
    good = claim_headers(key_id, secret, BODY)
    auditor_id, auditor_secret = make_key(settings, "auditor")
    walled_id, walled_secret = make_key(settings, "storefront", allowed_ips=["10.0.0.0/8"])

    cases = {
        "no key at all": ({"content-type": "application/json"}, BODY),
        "key named but unsigned": (
            {signing.HEADER_KEY: key_id, "content-type": "application/json"},
            BODY,
        ),
        "unknown key": (claim_headers("pk_nobody", secret, BODY), BODY),
        "wrong signature": (
            {**good, signing.HEADER_SIGNATURE: signing.signature("guess", "x")},
            BODY,
        ),
        "stale timestamp": (
            claim_headers(key_id, secret, BODY, timestamp=int(time.time()) - 3600),
            BODY,
        ),
        "tampered body": (good, json.dumps({"customer_id": "c-2"}).encode()),
        "wrong role": (claim_headers(auditor_id, auditor_secret, BODY), BODY),
        "disallowed IP": (claim_headers(walled_id, walled_secret, BODY), BODY),
    }
    got = {
        name: refused(client, database_url, headers, body)
        for name, (headers, body) in cases.items()
    }

    assert got == {
        "no key at all": (401, "authentication_required"),
        "key named but unsigned": (401, "signature_required"),
        "unknown key": (401, "unknown_key"),
        "wrong signature": (401, "signature_invalid"),
        "stale timestamp": (401, "timestamp_out_of_window"),
        "tampered body": (400, "body_digest_mismatch"),
        "wrong role": (403, "role_forbidden"),
        "disallowed IP": (403, "ip_not_allowed"),
    }


def test_a_replayed_request_is_refused_and_changes_nothing(shop, database_url):
    client, key_id, secret, _ = shop
    headers = claim_headers(key_id, secret, BODY)
    assert client.post("/v1/coupons/cp/claims", content=BODY, headers=headers).status_code == 201

    assert refused(client, database_url, headers) == (401, "nonce_replayed")


def test_over_the_limit_is_429_with_retry_after_and_changes_nothing(shop, database_url):
    client, key_id, secret, _ = shop
    for _ in range(2):
        ok = client.post(
            "/v1/coupons/cp/claims", content=BODY, headers=claim_headers(key_id, secret, BODY)
        )
        assert ok.status_code == 201

    headers = claim_headers(key_id, secret, BODY)
    before = snapshot(database_url)
    response = client.post("/v1/coupons/cp/claims", content=BODY, headers=headers)

    assert snapshot(database_url) == before
    assert (response.status_code, response.json()["code"]) == (429, "rate_limited")
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["RateLimit-Policy"] == '"customer";q=2;w=60'
    assert response.headers["RateLimit"].startswith('"customer";r=0;')


def test_bearer_keys_work_only_for_roles_that_need_not_sign(settings, database_url):
    relaxed = settings.model_copy(update={"signing_required": ["storefront"]})
    auditor_id, auditor_secret = make_key(relaxed, "auditor")
    shop_id, shop_secret = make_key(relaxed, "storefront")
    with TestClient(create_app(relaxed)) as client:
        as_auditor = client.get(
            "/v1/campaigns", headers={"Authorization": f"Bearer {auditor_id}.{auditor_secret}"}
        )
        wrong = client.get("/v1/campaigns", headers={"Authorization": f"Bearer {auditor_id}.nope"})
        as_shop = client.get(
            "/v1/coupons/templates", headers={"Authorization": f"Bearer {shop_id}.{shop_secret}"}
        )

    assert as_auditor.status_code == 200
    assert (wrong.status_code, wrong.json()["code"]) == (401, "bad_credentials")
    assert (as_shop.status_code, as_shop.json()["code"]) == (401, "signature_required")


def test_forwarded_for_counts_only_from_a_trusted_proxy(settings):
    proxied = settings.model_copy(update={"trusted_proxies": ["192.0.2.0/24"]})
    key_id, secret = make_key(proxied, "auditor", allowed_ips=["203.0.113.7/32"])

    def call(peer: str, forwarded: str) -> int:
        with TestClient(create_app(proxied), client=(peer, 1234)) as client:
            headers = signing.sign(key_id=key_id, secret=secret, method="GET", path="/v1/campaigns")
            return client.get(
                "/v1/campaigns", headers={**headers, "X-Forwarded-For": forwarded}
            ).status_code

    assert call("192.0.2.10", "203.0.113.7") == 200  # the proxy vouches for the client
    assert call("198.51.100.1", "203.0.113.7") == 403  # anyone else's header is ignored
    assert call("192.0.2.10", "203.0.113.7, 198.51.100.9") == 403  # the last untrusted hop counts


def test_a_down_nonce_store_refuses_requests(settings):
    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    key_id, secret = make_key(broken, "auditor")
    with TestClient(create_app(broken)) as client:
        headers = signing.sign(key_id=key_id, secret=secret, method="GET", path="/v1/campaigns")
        response = client.get("/v1/campaigns", headers=headers)

    assert (response.status_code, response.json()["code"]) == (503, "security_store_unavailable")


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):  # an included router (FastAPI >= 0.160)
            found += _api_routes(route.original_router.routes)
    return found


def test_no_route_is_left_open_by_accident(settings):
    """Walk the OpenAPI document: every operation but health refuses a caller without a key,
    and every route declares the roles it admits."""
    app = create_app(settings)
    checked = 0
    with TestClient(app) as client:
        for path, operations in app.openapi()["paths"].items():
            if path in ("/healthz", "/metrics"):  # open by default; see the next test
                continue
            concrete = path.replace("{", "").replace("}", "")  # any value will do
            for method in operations:
                response = client.request(method.upper(), concrete, json={})
                assert (response.status_code, response.json()["code"]) == (
                    401,
                    "authentication_required",
                ), (method, path)
                checked += 1
    routes = [r for r in _api_routes(app.routes) if r.path not in ("/healthz", "/metrics")]
    undeclared = [
        r.path
        for r in routes
        if not any(hasattr(d.call, "admitted_roles") for d in r.dependant.dependencies)
    ]
    assert undeclared == []
    assert checked == sum(len(r.methods) for r in routes) >= 17


def test_metrics_can_be_closed_to_all_but_some_roles(settings):
    closed = settings.model_copy(update={"metrics_roles": ["auditor"]})
    with TestClient(create_app(settings)) as open_, TestClient(create_app(closed)) as shut:
        assert open_.get("/metrics").status_code == 200
        assert "promoguard_breaker_state" in open_.get("/metrics").text
        assert shut.get("/metrics").json()["code"] == "authentication_required"
        key_id, secret = make_key(closed, "auditor")
        signed = signing.sign(key_id=key_id, secret=secret, method="GET", path="/metrics")
        assert shut.get("/metrics", headers=signed).status_code == 200
        key_id, secret = make_key(closed, "storefront")
        signed = signing.sign(key_id=key_id, secret=secret, method="GET", path="/metrics")
        assert shut.get("/metrics", headers=signed).json()["code"] == "role_forbidden"


def test_redis_stores_nonces_and_limits_for_every_worker(settings, redis_url):
    shared = settings.model_copy(
        update={"redis_url": redis_url, "rate_limits": {"campaign_list": {"key": "3/minute"}}}
    )
    key_id, secret = make_key(shared, "auditor")
    headers = signing.sign(key_id=key_id, secret=secret, method="GET", path="/v1/campaigns")
    with TestClient(create_app(shared)) as one, TestClient(create_app(shared)) as two:
        first = one.get("/v1/campaigns", headers=headers)
        replay = two.get("/v1/campaigns", headers=headers)  # another worker, same nonce
        fresh = [
            two.get(
                "/v1/campaigns",
                headers=signing.sign(
                    key_id=key_id, secret=secret, method="GET", path="/v1/campaigns"
                ),
            )
            for _ in range(3)
        ]

    assert first.status_code == 200
    assert (replay.status_code, replay.json()["code"]) == (401, "nonce_replayed")
    # The budget is shared: the first call and the refused replay used two of the three.
    assert [r.status_code for r in fresh] == [200, 429, 429]


@pytest.mark.parametrize("store", ["file", "database"])
def test_a_request_replayed_to_another_worker_is_refused_without_redis(settings, store):
    """The workers share the nonce file (beside the embedded database; on PostgreSQL, the one
    the host's workers resolve), or the database's ``used_nonces`` table."""
    settings = settings.model_copy(update={"nonce_store": store})
    key_id, secret = make_key(settings, "auditor")
    headers = signing.sign(key_id=key_id, secret=secret, method="GET", path="/v1/campaigns")
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        first = one.get("/v1/campaigns", headers=headers)
        replay = two.get("/v1/campaigns", headers=headers)
        again = one.get("/v1/campaigns", headers=headers)

    assert first.status_code == 200
    assert (replay.status_code, replay.json()["code"]) == (401, "nonce_replayed")
    assert (again.status_code, again.json()["code"]) == (401, "nonce_replayed")


def test_auditors_read_the_audit_log_with_before_and_after_and_shops_cannot(settings):
    with signed_client(settings, "operator") as ops:
        live(ops, coupon_spec())
        ops.post("/v1/campaigns/cp/pause", json={"reason": "checking the budget"})
    with (
        signed_client(settings, "auditor") as auditor,
        signed_client(settings, "storefront") as shop,
    ):
        paused = auditor.get("/v1/audit", params={"action": "campaign.paused"})
        denied = shop.get("/v1/audit")
        change = auditor.post("/v1/campaigns/cp/end", json={"reason": "auditors may not"})

    [entry] = paused.json()
    assert entry["detail"]["before"]["status"] == "live"
    assert entry["detail"]["after"]["status"] == "paused"
    assert entry["role"] == "operator"
    assert entry["ip"] == "127.0.0.1"
    assert (denied.status_code, denied.json()["code"]) == (403, "role_forbidden")
    assert (change.status_code, change.json()["code"]) == (403, "role_forbidden")


def test_the_database_nonce_store_accepts_each_nonce_once_under_concurrency(database_url):
    """Concurrent first uses are written in batches; a nonce repeated in or across batches is
    accepted exactly once."""

    async def scenario() -> tuple[list[bool], list[bool], list[bool]]:
        db = Database(database_url)
        store = DatabaseNonces(db)
        now, window = datetime.now(UTC), timedelta(minutes=10)
        try:
            same = await asyncio.gather(
                *(store.first_use("pk_a", "nonce-same-1", now, window) for _ in range(20))
            )
            distinct = await asyncio.gather(
                *(store.first_use("pk_a", f"nonce-{n:04d}", now, window) for n in range(50))
            )
            again = await asyncio.gather(
                *(store.first_use("pk_a", f"nonce-{n:04d}", now, window) for n in range(5))
            )
        finally:
            await db.dispose()
        return same, distinct, again

    same, distinct, again = asyncio.run(scenario())

    assert same.count(True) == 1
    assert all(distinct)
    assert not any(again)


def test_the_database_nonce_store_lets_a_nonce_count_again_once_its_window_has_passed(
    database_url,
):
    async def scenario() -> list[bool]:
        db = Database(database_url)
        store = DatabaseNonces(db)
        now, window = datetime.now(UTC), timedelta(minutes=10)
        try:
            return [
                await store.first_use("pk_a", "nonce-0001", at, window)
                for at in (now, now + window - timedelta(seconds=1), now + window, now + window)
            ]
        finally:
            await store.aclose()
            await db.dispose()

    assert asyncio.run(scenario()) == [True, False, True, False]


def test_the_redis_nonce_store_accepts_each_nonce_once_under_concurrency(redis_url):
    async def scenario() -> tuple[list[bool], list[bool]]:
        redis = Redis.from_url(redis_url)
        store = RedisNonces(redis)
        now, window, key = datetime.now(UTC), timedelta(minutes=10), f"pk_{time.time_ns()}"
        try:
            same = await asyncio.gather(
                *(store.first_use(key, "nonce-same-1", now, window) for _ in range(20))
            )
            distinct = await asyncio.gather(
                *(store.first_use(key, f"nonce-{n:04d}", now, window) for n in range(50))
            )
        finally:
            await redis.aclose()
        return same, distinct

    same, distinct = asyncio.run(scenario())

    assert same.count(True) == 1
    assert all(distinct)
