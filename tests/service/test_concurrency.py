"""The limits hold under real concurrency, on SQLite and on PostgreSQL.

Requests come from several workers at once, each with its own app (so its own engines and
connection pool, like separate server workers): spawned OS processes, or threads that each build
their own app. Each worker waits at a barrier and then fires its calls concurrently. The tests
assert only outcomes (statuses, codes, rows), never timings.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from tests.service.conftest import make_key
from tests.service.helpers import coupon_spec, line, live, quote, spec

from promoguard.app import create_app
from promoguard.security.signing import PromoguardAuth
from promoguard.settings import Settings
from promoguard.store.db import sync_url

WORKERS = 4
"""Worker processes (and threads with their own app)."""

IN_FLIGHT = 5
"""Requests one worker has in flight at once (so at most this many connections per worker)."""

BARRIER_TIMEOUT = 120.0
"""Only a guard against a hung worker; no test asserts anything about time."""

Call = tuple[str, dict[str, Any], dict[str, str]]
"""A POST: path, JSON body, headers."""

pytestmark = pytest.mark.filterwarnings(
    # FastAPI silences this pydantic warning with warnings.catch_warnings(), which is not
    # thread-safe: with several apps serving in threads at once it leaks out. Harmless.
    "ignore::pydantic.warnings.UnsupportedFieldAttributeWarning"
)

Outcome = dict[str, Any]
"""What one call got back: status, problem code, order id, whether it was a replay, body."""


# -- workers ----------------------------------------------------------------------------------


def _post(client: TestClient, call: Call) -> Outcome:
    path, body, headers = call
    response = client.post(path, json=body, headers=headers)
    try:
        payload = response.json()
    except ValueError:
        payload = {"raw": response.text}
    return {
        "status": response.status_code,
        "code": payload.get("code") if isinstance(payload, dict) else None,
        "id": payload.get("id") if isinstance(payload, dict) else None,
        "replayed": response.headers.get("Idempotent-Replayed") == "true",
        "body": payload,
    }


def _fire(
    app: Settings | FastAPI, calls: list[Call], barrier: Any, key: tuple[str, str]
) -> list[Outcome]:
    """One worker: its own app and client (signing with ``key``); wait for the others, then
    fire the calls, up to ``IN_FLIGHT`` at once through this worker's app and pool."""
    if isinstance(app, Settings):
        app = create_app(app)
    with TestClient(app, raise_server_exceptions=False, client=("127.0.0.1", 50000)) as client:
        client.auth = PromoguardAuth(*key)
        client.get("/v1/coupons/templates")  # open the pool and load the live rules first
        barrier.wait(BARRIER_TIMEOUT)
        with ThreadPoolExecutor(max(1, min(len(calls), IN_FLIGHT))) as pool:
            return list(pool.map(lambda call: _post(client, call), calls))


Runner = Callable[[Settings, list[list[Call]]], list[Outcome]]


@pytest.fixture(scope="module")
def in_processes() -> Iterator[Runner]:
    """Run each batch of calls in its own spawned process (a pool kept for the module)."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(WORKERS, mp_context=context) as pool:

        def run(settings: Settings, batches: list[list[Call]]) -> list[Outcome]:
            assert len(batches) <= WORKERS, "every batch needs its own process at the barrier"
            barrier = manager.Barrier(len(batches))
            key = make_key(settings, "admin")
            futures = [pool.submit(_fire, settings, batch, barrier, key) for batch in batches]
            return [outcome for future in futures for outcome in future.result()]

        yield run


@pytest.fixture
def in_threads() -> Runner:
    """Run each batch of calls in its own thread with its own app (the apps are built first,
    one after another; each serves from its own event loop and pool)."""

    def run(settings: Settings, batches: list[list[Call]]) -> list[Outcome]:
        apps = [create_app(settings) for _ in batches]
        barrier = threading.Barrier(len(batches))
        key = make_key(settings, "admin")
        with ThreadPoolExecutor(len(batches)) as pool:
            futures = [
                pool.submit(_fire, a, b, barrier, key) for a, b in zip(apps, batches, strict=True)
            ]
            return [outcome for future in futures for outcome in future.result()]

    return run


# -- builders and checks ----------------------------------------------------------------------


def claim(campaign_id: str, customer: str) -> Call:
    return (f"/v1/coupons/{campaign_id}/claims", {"customer_id": customer}, {})


def commit(token: str, key: str) -> Call:
    return ("/v1/orders", {"quote_token": token}, {"Idempotency-Key": key})


def spread(calls: list[Call], workers: int = WORKERS) -> list[list[Call]]:
    """Deal the calls round-robin to the workers."""
    return [calls[n::workers] for n in range(min(workers, len(calls)))]


def tally(outcomes: list[Outcome]) -> Counter[tuple[int, str | None]]:
    """How many of each (status, code); a 5xx fails the test with its body."""
    errors = [o["body"] for o in outcomes if o["status"] >= 500]
    assert not errors, f"server errors under concurrency: {errors}"
    return Counter((o["status"], o["code"] if o["status"] >= 400 else None) for o in outcomes)


def count(settings: Settings, table: str, where: str = "", **params: Any) -> int:
    """Rows in a table, read straight from the database."""
    engine = sa.create_engine(sync_url(settings.database_url))
    try:
        with engine.connect() as conn:
            sql = f"SELECT count(*) FROM {table}" + (f" WHERE {where}" if where else "")
            return int(conn.execute(sa.text(sql), params).scalar_one())
    finally:
        engine.dispose()


# -- coupons ----------------------------------------------------------------------------------


def test_coupon_quantity_is_never_exceeded(settings, client, in_processes):
    live(client, coupon_spec("cp10", quantity=10, per_user_limit=1))
    claims = [claim("cp10", f"c-{n:02}") for n in range(40)]

    outcomes = in_processes(settings, spread(claims))

    assert tally(outcomes) == {(201, None): 10, (409, "coupon_sold_out"): 30}
    winners = {o["body"]["customer_id"] for o in outcomes if o["status"] == 201}
    assert len(winners) == 10
    assert count(settings, "issued_coupons", "campaign_id = :c", c="cp10") == 10
    assert count(settings, "coupon_stock", "campaign_id = :c AND issued = 10", c="cp10") == 1
    assert count(settings, "customer_usage", "counter = :k", k="claim:cp10") == 10
    [template] = client.get("/v1/coupons/templates").json()
    assert (template["campaign_id"], template["remaining"]) == ("cp10", 0)


def test_a_customer_cannot_claim_past_the_per_user_limit(settings, client, in_processes):
    live(client, coupon_spec("cp2", quantity=1000, per_user_limit=2))
    claims = [claim("cp2", "greedy") for _ in range(20)]

    outcomes = in_processes(settings, spread(claims))

    assert tally(outcomes) == {(201, None): 2, (409, "coupon_limit_reached"): 18}
    wallet = client.get("/v1/customers/greedy/coupons").json()
    assert [c["state"] for c in wallet] == ["issued", "issued"]
    assert count(settings, "issued_coupons", "customer_id = :c", c="greedy") == 2
    [template] = client.get("/v1/coupons/templates").json()
    assert template["remaining"] == 998


# -- orders -----------------------------------------------------------------------------------


def test_the_same_key_and_token_at_once_make_one_order(settings, client, in_processes):
    token = quote(client, [line("a", 10000)])["quote_token"]
    calls = [commit(token, "same-key") for _ in range(12)]

    outcomes = in_processes(settings, spread(calls))

    assert tally(outcomes) == {(201, None): 12}
    assert len({o["id"] for o in outcomes}) == 1
    assert [o["replayed"] for o in outcomes].count(False) == 1  # the one that made it
    assert count(settings, "orders") == 1
    assert count(settings, "quotes") == 1
    assert count(settings, "idempotency_keys") == 1


def test_one_quote_makes_one_order_under_concurrency(settings, client, in_threads):
    token = quote(client, [line("a", 10000)])["quote_token"]
    calls = [commit(token, f"key-{n}") for n in range(12)]

    outcomes = in_threads(settings, spread(calls))

    assert tally(outcomes) == {(201, None): 1, (409, "quote_already_used"): 11}
    assert count(settings, "orders") == 1
    assert count(settings, "idempotency_keys") == 1


def test_a_coupon_is_redeemed_once_under_concurrency(settings, client, in_processes):
    live(client, coupon_spec("cp", discount=1000))
    assert client.post("/v1/coupons/cp/claims", json={"customer_id": "c-1"}).status_code == 201
    tokens = [quote(client, [line("a", 10000)], coupons=["cp"])["quote_token"] for _ in range(8)]
    calls = [commit(token, f"coupon-{n}") for n, token in enumerate(tokens)]

    outcomes = in_processes(settings, spread(calls))

    counts = tally(outcomes)
    assert counts[(201, None)] == 1
    assert set(counts) - {(201, None)} <= {(409, "coupon_already_used"), (409, "quote_changed")}
    [placed] = [o["body"] for o in outcomes if o["status"] == 201]
    assert [d["rule_id"] for d in placed["discounts"]] == ["cp"]
    assert placed["total"] == 9000
    wallet = client.get("/v1/customers/c-1/coupons").json()
    assert [(c["state"], c["order_id"]) for c in wallet] == [("redeemed", placed["id"])]
    assert count(settings, "orders") == 1
    assert count(settings, "redemptions", "kind = 'coupon'") == 1


def test_a_flash_sale_per_user_limit_holds_under_concurrency(settings, client, in_threads):
    live(
        client,
        spec(
            "fs", "flash_sale", scope={"skus": ["phone"]}, price=5000, stock=100, per_user_limit=1
        ),
    )
    quotes = [quote(client, [line("phone", 10000)], customer="fan") for _ in range(5)]
    assert {(q["total"], q["discounts"][0]["rule_id"]) for q in quotes} == {(5000, "fs")}
    calls = [commit(q["quote_token"], f"flash-{n}") for n, q in enumerate(quotes)]

    outcomes = in_threads(settings, [[call] for call in calls])

    counts = tally(outcomes)
    assert counts[(201, None)] == 1
    refused = set(counts) - {(201, None)}
    assert refused <= {(409, "flash_sale_limit_reached"), (409, "quote_changed")}
    [placed] = [o["body"] for o in outcomes if o["status"] == 201]
    assert [d["rule_id"] for d in placed["discounts"]] == ["fs"]
    assert count(settings, "orders") == 1
    assert count(settings, "redemptions", "kind = 'flash_sale' AND units = 1") == 1
    assert count(settings, "counters", "key = 'units:fs:fan' AND used = 1") == 1
    assert count(settings, "counters", "key = 'stock:fs' AND used = 1") == 1


def test_racing_cancellations_give_the_stock_back_once(settings, client, in_threads):
    live(
        client,
        spec("fs", "flash_sale", scope={"skus": ["phone"]}, price=5000, stock=10, per_user_limit=1),
    )
    placed = []
    for customer in ("keeps", "cancels"):
        token = quote(client, [line("phone", 10000)], customer=customer)["quote_token"]
        response = client.post(
            "/v1/orders", json={"quote_token": token}, headers={"Idempotency-Key": customer}
        )
        assert response.status_code == 201, response.text
        placed.append(response.json()["id"])
    assert count(settings, "counters", "key = 'stock:fs' AND used = 2") == 1
    cancel = (f"/v1/orders/{placed[1]}/events", {"type": "cancelled"}, {})

    outcomes = in_threads(settings, [[cancel] for _ in range(WORKERS)])

    assert tally(outcomes) == {(200, None): 1, (409, "invalid_transition"): WORKERS - 1}
    # Given back once: the other order's unit is still counted.
    assert count(settings, "counters", "key = 'stock:fs' AND used = 1") == 1
    assert count(settings, "reservations", "state = 'released'") == 2  # stock and units
