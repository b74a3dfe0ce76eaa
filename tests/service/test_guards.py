"""Run-time guards through the HTTP API, on SQLite and PostgreSQL (and, where counters matter, on
Redis counters too): flash-sale reservations, the sweeper, budgets and limits, first orders,
group-buy and the identity ledger.

The API's clock is the real one; the sweeper is called with a time in the future (through the
app's own checkout, on the app's event loop, or through ``promoguard sweep --at``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from tests.service.conftest import SECRET
from tests.service.helpers import coupon_spec, line, live, order, quote, spec, threshold
from typer.testing import CliRunner

from promoguard.cli import app as cli
from promoguard.settings import Settings
from promoguard.store.counters import RedisCounters
from promoguard.store.db import sync_url

TTL = timedelta(seconds=1800)
"""The default ``reservation_ttl_seconds``."""


@pytest.fixture
def settings(database_url: str, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """Like the shared fixture; ``@pytest.mark.parametrize("settings", ["sql", "redis"],
    indirect=True)`` also runs a test with Redis counters (under a prefix of its own)."""
    counters = getattr(request, "param", "sql")
    extra: dict[str, Any] = {}
    if counters == "redis":
        extra = {
            "redis_url": request.getfixturevalue("redis_url"),
            "redis_prefix": f"test-guards:{uuid.uuid4().hex}:",
        }
    yield Settings(
        database_url=database_url,
        environment="test",
        secret_key=SECRET,
        rules_refresh_seconds=0.2,
        **extra,
    )
    if counters == "redis":
        redis = Redis.from_url(extra["redis_url"])
        keys = list(redis.scan_iter(match=extra["redis_prefix"] + "*"))
        if keys:
            redis.delete(*keys)
        redis.close()


both_counters = pytest.mark.parametrize("settings", ["sql", "redis"], indirect=True)


# -- helpers ----------------------------------------------------------------------------------


def flash(stock: int = 5, per_user_limit: int = 2, **fields: Any) -> dict[str, Any]:
    """秒杀: the phone at 50.00 instead of 80.00."""
    return spec(
        "ms",
        "flash_sale",
        scope={"skus": ["phone"]},
        price=5000,
        stock=stock,
        per_user_limit=per_user_limit,
        **fields,
    )


def phone(quantity: int = 1) -> dict[str, Any]:
    return line("phone", 8000, quantity, category="electronics")


def placed(client: TestClient, q: dict[str, Any]) -> dict[str, Any]:
    response = order(client, q["quote_token"], f"k-{uuid.uuid4().hex}")
    assert response.status_code == 201, response.text
    return response.json()


def event(client: TestClient, order_id: str, kind: str) -> Any:
    return client.post(f"/v1/orders/{order_id}/events", json={"type": kind})


def rows(settings: Settings, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(sync_url(settings.database_url))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def reservations(settings: Settings, order_id: str) -> list[tuple[str, int, str]]:
    return rows(  # type: ignore[return-value]
        settings,
        "SELECT key, amount, state FROM reservations WHERE order_id = :o ORDER BY key",
        o=order_id,
    )


def levels(client: TestClient, *keys: str) -> dict[str, int]:
    """The counters as the app's own counter store (SQL or Redis) sees them."""
    services = client.app.state.services  # type: ignore[attr-defined]

    async def read() -> dict[str, int]:
        async with services.db.read() as session:
            return await services.checkout.counters.levels(session, keys)

    return client.portal.call(read)  # type: ignore[union-attr]


def sweep(client: TestClient, at: datetime) -> dict[str, int]:
    """Run the app's sweeper as if it were ``at`` (on the app's event loop)."""
    checkout = client.app.state.services.checkout  # type: ignore[attr-defined]
    return client.portal.call(checkout.sweep, at)  # type: ignore[union-attr]


NOTHING_SWEPT = {
    "orders_expired": 0,
    "groups_expired": 0,
    "refunds_requested": 0,
    "settled": 0,
    "counters_reloaded": 0,
}


def customer_quote(client: TestClient, customer: dict[str, Any], lines: list[Any]) -> Any:
    return client.post("/v1/quotes", json={"customer": customer, "cart": {"lines": lines}})


def rule_ids(q: dict[str, Any]) -> list[str]:
    return [d["rule_id"] for d in q["discounts"]]


# -- flash-sale reservations ------------------------------------------------------------------


@both_counters
def test_a_flash_sale_order_reserves_stock_and_the_customers_units(client, settings):
    live(client, flash())
    q = quote(client, [phone(2)])
    assert q["total"] == 10000

    body = placed(client, q)

    assert client.get(f"/v1/orders/{body['id']}").json()["status"] == "created"
    assert reservations(settings, body["id"]) == [
        ("stock:ms", 2, "reserved"),
        ("units:ms:c-1", 2, "reserved"),
    ]
    assert levels(client, "stock:ms", "units:ms:c-1") == {"stock:ms": 2, "units:ms:c-1": 2}


@both_counters
def test_paying_confirms_the_reservations_and_keeps_the_stock_taken(client, settings):
    live(client, flash())
    body = placed(client, quote(client, [phone(2)]))

    paid = event(client, body["id"], "paid")

    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "paid"
    assert [state for _, _, state in reservations(settings, body["id"])] == [
        "confirmed",
        "confirmed",
    ]
    assert levels(client, "stock:ms", "units:ms:c-1") == {"stock:ms": 2, "units:ms:c-1": 2}


@both_counters
def test_cancelling_releases_the_stock_and_the_customers_units(client, settings):
    live(client, flash(per_user_limit=2))
    body = placed(client, quote(client, [phone(2)]))
    # The customer has used their two units: the flash price is gone for them.
    assert quote(client, [phone()])["total"] == 8000

    cancelled = event(client, body["id"], "cancelled")

    assert cancelled.status_code == 200, cancelled.text
    assert [state for _, _, state in reservations(settings, body["id"])] == [
        "released",
        "released",
    ]
    assert levels(client, "stock:ms", "units:ms:c-1") == {"stock:ms": 0, "units:ms:c-1": 0}
    again = quote(client, [phone(2)])
    assert again["total"] == 10000
    assert placed(client, again)["total"] == 10000


@both_counters
def test_cancelling_a_paid_order_releases_what_it_confirmed(client, settings):
    live(client, flash())
    body = placed(client, quote(client, [phone(2)]))
    assert event(client, body["id"], "paid").status_code == 200

    cancelled = event(client, body["id"], "cancelled")

    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["refunded_total"] == body["total"]
    assert {state for _, _, state in reservations(settings, body["id"])} == {"released"}
    assert levels(client, "stock:ms") == {"stock:ms": 0}


@both_counters
def test_the_last_units_of_stock_go_to_the_first_order_and_the_next_is_refused(client, settings):
    live(client, flash(stock=3, per_user_limit=2))
    first = quote(client, [phone(2)], customer="c-1")
    second = quote(client, [phone(2)], customer="c-2")
    assert placed(client, first)["total"] == 10000

    refused = order(client, second["quote_token"], "too-late")

    assert refused.status_code == 409
    problem = refused.json()
    assert problem["code"] == "flash_sale_sold_out"
    assert (problem["rule_id"], problem["needed"], problem["remaining"], problem["limit"]) == (
        "ms",
        2,
        1,
        3,
    )
    assert levels(client, "stock:ms", "units:ms:c-2") == {"stock:ms": 2, "units:ms:c-2": 0}
    assert rows(settings, "SELECT count(*) FROM orders") == [(1,)]


@both_counters
def test_once_sold_out_the_flash_price_is_left_out_and_the_list_price_can_be_ordered(
    client, settings
):
    live(client, flash(stock=3, per_user_limit=2))
    placed(client, quote(client, [phone(2)], customer="c-1"))
    placed(client, quote(client, [phone(1)], customer="c-3"))

    q = quote(client, [phone()], customer="c-2")

    assert q["discounts"] == []
    assert q["total"] == 8000
    body = placed(client, q)
    assert body["total"] == 8000
    assert reservations(settings, body["id"]) == []
    assert levels(client, "stock:ms", "units:ms:c-2") == {"stock:ms": 3, "units:ms:c-2": 0}


@both_counters
def test_reserved_plus_confirmed_stock_is_what_the_counter_says(client, settings):
    live(client, flash(stock=10, per_user_limit=3))
    start = datetime.now(UTC)
    paid = placed(client, quote(client, [phone(3)], customer="c-1"))
    cancelled = placed(client, quote(client, [phone(2)], customer="c-2"))
    event(client, paid["id"], "paid")
    event(client, cancelled["id"], "cancelled")
    expired = placed(client, quote(client, [phone(1)], customer="c-3"))
    sweep(client, datetime.now(UTC) + TTL + timedelta(seconds=1))
    assert client.get(f"/v1/orders/{expired['id']}").json()["status"] == "expired"
    waiting = placed(client, quote(client, [phone(2)], customer="c-4"))
    assert sweep(client, start + TTL - timedelta(minutes=1)) == NOTHING_SWEPT

    held = rows(
        settings,
        "SELECT state, sum(amount) FROM reservations WHERE key = 'stock:ms' "
        "AND state != 'released' GROUP BY state ORDER BY state",
    )

    assert held == [("confirmed", 3), ("reserved", 2)]
    assert levels(client, "stock:ms") == {"stock:ms": 5}
    assert reservations(settings, waiting["id"])[0] == ("stock:ms", 2, "reserved")


@pytest.mark.parametrize("settings", ["redis"], indirect=True)
def test_a_redis_that_comes_back_empty_refuses_orders_until_loaded_and_never_oversells(
    client, settings
):
    live(client, flash(stock=5, per_user_limit=3))
    paid = placed(client, quote(client, [phone(3)], customer="c-1"))
    event(client, paid["id"], "paid")
    placed(client, quote(client, [phone(1)], customer="c-2"))
    cancelled = placed(client, quote(client, [phone(1)], customer="c-3"))
    event(client, cancelled["id"], "cancelled")
    assert levels(client, "stock:ms") == {"stock:ms": 4}
    # Redis restarts without persistence: every key under the prefix is gone.
    redis = Redis.from_url(settings.redis_url)
    redis.delete(*redis.scan_iter(match=f"{settings.redis_prefix}*"))
    redis.close()
    before = rows(settings, "SELECT count(*) FROM orders")

    refused = order(client, quote(client, [phone(2)], customer="c-4")["quote_token"], "k-empty")

    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "counters_not_loaded"
    assert rows(settings, "SELECT count(*) FROM orders") == before
    assert levels(client, "stock:ms") == {"stock:ms": 0}  # nothing taken from the empty store

    report = sweep(client, datetime.now(UTC))

    assert report["counters_reloaded"] == 3  # the stock, c-1's and c-2's units; not c-3's
    assert levels(client, "stock:ms", "units:ms:c-1", "units:ms:c-2", "units:ms:c-3") == {
        "stock:ms": 4,
        "units:ms:c-1": 3,
        "units:ms:c-2": 1,
        "units:ms:c-3": 0,
    }
    assert sweep(client, datetime.now(UTC))["counters_reloaded"] == 0
    last = placed(client, quote(client, [phone(1)], customer="c-4"))
    assert reservations(settings, last["id"]) == [
        ("stock:ms", 1, "reserved"),
        ("units:ms:c-4", 1, "reserved"),
    ]
    sold_out = quote(client, [phone(1)], customer="c-5")
    assert [d["rule_id"] for d in sold_out["discounts"]] == []
    assert levels(client, "stock:ms") == {"stock:ms": 5}


@pytest.mark.parametrize("settings", ["redis"], indirect=True)
def test_a_cancellation_stands_when_redis_cannot_take_the_units_back(client, settings, caplog):
    live(client, flash(stock=5))
    body = placed(client, quote(client, [phone(2)], customer="c-1"))
    checkout = client.app.state.services.checkout  # type: ignore[attr-defined]
    working = checkout.counters
    # Redis stops answering between the cancellation's commit and the give-back.
    dead = AsyncRedis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    checkout.counters = RedisCounters(dead, settings.redis_prefix)
    try:
        cancelled = event(client, body["id"], "cancelled")
    finally:
        checkout.counters = working
        client.portal.call(dead.aclose)  # type: ignore[union-attr]

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert {state for _, _, state in reservations(settings, body["id"])} == {"released"}
    # The units were not given back: the counter stays high (undersell, never oversell).
    assert levels(client, "stock:ms") == {"stock:ms": 2}
    assert "could not give back stock:ms 2" in caplog.text


def test_a_repeated_cancel_is_refused_and_gives_back_nothing_twice(client, settings):
    live(client, flash())
    one = placed(client, quote(client, [phone(2)], customer="c-1"))
    placed(client, quote(client, [phone(1)], customer="c-2"))
    assert event(client, one["id"], "cancelled").status_code == 200

    again = event(client, one["id"], "cancelled")

    assert again.status_code == 409
    assert again.json()["code"] == "invalid_transition"
    assert levels(client, "stock:ms") == {"stock:ms": 1}


# -- the sweeper ------------------------------------------------------------------------------


@both_counters
def test_the_sweeper_expires_an_unpaid_order_past_the_reservation_time(client, settings):
    live(client, flash())
    start = datetime.now(UTC)
    body = placed(client, quote(client, [phone(2)]))

    assert sweep(client, start + TTL - timedelta(minutes=1)) == NOTHING_SWEPT
    assert client.get(f"/v1/orders/{body['id']}").json()["status"] == "created"

    report = sweep(client, datetime.now(UTC) + TTL + timedelta(seconds=1))

    assert report["orders_expired"] == 1
    assert client.get(f"/v1/orders/{body['id']}").json()["status"] == "expired"
    assert {state for _, _, state in reservations(settings, body["id"])} == {"released"}
    assert levels(client, "stock:ms", "units:ms:c-1") == {"stock:ms": 0, "units:ms:c-1": 0}
    late = event(client, body["id"], "paid")
    assert late.status_code == 409
    assert late.json()["code"] == "invalid_transition"
    assert client.get(f"/v1/orders/{body['id']}").json()["status"] == "expired"


@both_counters
def test_a_second_sweep_changes_nothing(client, settings):
    live(client, flash())
    body = placed(client, quote(client, [phone(2)]))
    other = placed(client, quote(client, [phone(1)], customer="c-2"))
    at = datetime.now(UTC) + TTL + timedelta(seconds=1)
    assert sweep(client, at)["orders_expired"] == 2
    before = (
        levels(client, "stock:ms", "units:ms:c-1", "units:ms:c-2"),
        rows(settings, "SELECT order_id, type FROM order_events ORDER BY id"),
        rows(settings, "SELECT key, amount, state FROM reservations ORDER BY id"),
    )

    assert sweep(client, at) == NOTHING_SWEPT
    assert sweep(client, at + timedelta(hours=1)) == NOTHING_SWEPT

    after = (
        levels(client, "stock:ms", "units:ms:c-1", "units:ms:c-2"),
        rows(settings, "SELECT order_id, type FROM order_events ORDER BY id"),
        rows(settings, "SELECT key, amount, state FROM reservations ORDER BY id"),
    )
    assert after == before
    assert before[0] == {"stock:ms": 0, "units:ms:c-1": 0, "units:ms:c-2": 0}
    expired = [(oid, kind) for oid, kind in before[1] if kind == "expired"]
    assert sorted(expired) == sorted([(body["id"], "expired"), (other["id"], "expired")])


def test_the_sweeper_leaves_paid_orders_alone(client, settings):
    live(client, flash())
    body = placed(client, quote(client, [phone(2)]))
    assert event(client, body["id"], "paid").status_code == 200

    assert sweep(client, datetime.now(UTC) + 2 * TTL) == NOTHING_SWEPT

    assert client.get(f"/v1/orders/{body['id']}").json()["status"] == "paid"
    assert levels(client, "stock:ms") == {"stock:ms": 2}


def test_the_sweeper_gives_back_coupons_and_identity_marks(client, settings):
    live(client, coupon_spec())
    live(client, spec("fo", "first_order", discount=1000))
    assert client.post("/v1/coupons/cp/claims", json={"customer_id": "c-1"}).status_code == 201
    facts = {"id": "c-1", "phone": "13800138000"}
    cart = {"lines": [line("a", 10000)]}
    first = client.post("/v1/quotes", json={"customer": facts, "cart": cart, "coupons": ["cp"]})
    assert sorted(rule_ids(first.json())) == ["cp", "fo"]
    body = placed(client, first.json())
    assert [c["state"] for c in client.get("/v1/customers/c-1/coupons").json()] == ["redeemed"]
    # Another account on the same phone: not a first order while c-1's order awaits payment.
    linked = customer_quote(client, {"id": "c-9", "phone": "+86 138 0013 8000"}, cart["lines"])
    assert rule_ids(linked.json()) == []

    report = sweep(client, datetime.now(UTC) + TTL + timedelta(seconds=1))

    assert report["orders_expired"] == 1
    assert [c["state"] for c in client.get("/v1/customers/c-1/coupons").json()] == ["issued"]
    assert rows(settings, "SELECT count(*) FROM identity_marks") == [(0,)]
    again = customer_quote(client, {"id": "c-9", "phone": "+86 138 0013 8000"}, cart["lines"])
    assert rule_ids(again.json()) == ["fo"]
    # The first-order counters of the phone were given back too: the order goes through.
    assert placed(client, again.json())["discount_total"] == 1000
    assert event(client, body["id"], "paid").json()["code"] == "invalid_transition"


def test_promoguard_sweep_at_expires_unpaid_orders_from_the_command_line(client, settings):
    live(client, flash())
    body = placed(client, quote(client, [phone(2)]))
    env = {
        "PROMOGUARD_DATABASE_URL": settings.database_url,
        "PROMOGUARD_SECRET_KEY": SECRET,
        "PROMOGUARD_ENVIRONMENT": "test",
        "PROMOGUARD_RESERVATION_TTL_SECONDS": str(int(TTL.total_seconds())),
    }
    runner = CliRunner()
    early = (datetime.now(UTC) + TTL / 2).isoformat()
    late = (datetime.now(UTC) + TTL + timedelta(minutes=1)).isoformat()

    not_yet = runner.invoke(cli, ["sweep", "--at", early], env=env)
    assert not_yet.exit_code == 0, not_yet.output
    assert client.get(f"/v1/orders/{body['id']}").json()["status"] == "created"

    swept = runner.invoke(cli, ["sweep", "--at", late], env=env)

    assert swept.exit_code == 0, swept.output
    assert "orders expired" in swept.output
    assert client.get(f"/v1/orders/{body['id']}").json()["status"] == "expired"
    assert levels(client, "stock:ms") == {"stock:ms": 0}
    assert event(client, body["id"], "paid").json()["code"] == "invalid_transition"


def test_promoguard_sweep_at_needs_a_utc_offset(settings):
    env = {"PROMOGUARD_DATABASE_URL": settings.database_url, "PROMOGUARD_SECRET_KEY": SECRET}

    result = CliRunner().invoke(cli, ["sweep", "--at", "2030-01-01T00:00:00"], env=env)

    assert result.exit_code != 0
    assert "UTC offset" in result.output


# -- budgets and limits -----------------------------------------------------------------------


@both_counters
def test_an_order_past_the_budget_is_refused_with_needed_and_remaining(client, settings):
    live(client, threshold(limits={"budget": 8000}))
    one = quote(client, [line("a", 20000)], customer="c-1")
    two = quote(client, [line("a", 20000)], customer="c-2")
    assert placed(client, one)["discount_total"] == 5000

    refused = order(client, two["quote_token"], "over-budget")

    assert refused.status_code == 409
    problem = refused.json()
    assert problem["code"] == "budget_exhausted"
    assert problem["rule_id"] == "mj"
    assert (problem["needed"], problem["remaining"], problem["limit"]) == (5000, 3000, 8000)
    assert levels(client, "budget:mj") == {"budget:mj": 5000}
    assert rows(settings, "SELECT count(*) FROM orders") == [(1,)]


@both_counters
def test_a_quote_leaves_out_a_discount_the_budget_can_no_longer_cover(client, settings):
    live(client, threshold(limits={"budget": 8000}))
    placed(client, quote(client, [line("a", 20000)], customer="c-1"))

    q = quote(client, [line("a", 20000)], customer="c-2")

    assert q["discounts"] == []
    assert q["total"] == 20000
    assert placed(client, q)["total"] == 20000
    assert levels(client, "budget:mj") == {"budget:mj": 5000}


@both_counters
def test_a_cancelled_order_gives_its_budget_back(client, settings):
    live(client, threshold(limits={"budget": 8000}))
    one = placed(client, quote(client, [line("a", 20000)], customer="c-1"))
    assert quote(client, [line("a", 20000)], customer="c-2")["discounts"] == []

    assert event(client, one["id"], "cancelled").status_code == 200

    assert levels(client, "budget:mj") == {"budget:mj": 0}
    q = quote(client, [line("a", 20000)], customer="c-2")
    assert rule_ids(q) == ["mj"]
    assert placed(client, q)["discount_total"] == 5000
    assert levels(client, "budget:mj") == {"budget:mj": 5000}


def test_the_redemption_cap_counts_orders(client, settings):
    live(client, threshold(limits={"max_redemptions": 2}))
    quotes = [quote(client, [line("a", 20000)], customer=f"c-{n}") for n in range(3)]
    placed(client, quotes[0])
    placed(client, quotes[1])

    refused = order(client, quotes[2]["quote_token"], "third")

    assert refused.status_code == 409
    assert refused.json()["code"] == "redemption_cap_reached"
    assert (refused.json()["remaining"], refused.json()["limit"]) == (0, 2)


def test_the_per_customer_limit_holds_whatever_else_the_customer_has(client, settings):
    live(client, threshold(limits={"per_customer": 1}))
    live(client, coupon_spec())
    assert client.post("/v1/coupons/cp/claims", json={"customer_id": "c-1"}).status_code == 201
    cart = {"lines": [line("a", 20000)]}
    plain = quote(client, cart["lines"])
    with_coupon = client.post(
        "/v1/quotes", json={"customer": {"id": "c-1"}, "cart": cart, "coupons": ["cp"]}
    ).json()
    assert sorted(rule_ids(with_coupon)) == ["cp", "mj"]
    body = placed(client, plain)

    refused = order(client, with_coupon["quote_token"], "second")

    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "customer_limit_reached"
    assert [key for key, _, _ in reservations(settings, body["id"])] == ["customer:mj:c-1"]


def test_the_per_identity_limit_counts_linked_accounts_as_one(client, settings):
    live(client, threshold(limits={"per_identity": 1}))
    one = customer_quote(client, {"id": "c-1", "device_id": "dev-shared"}, [line("a", 20000)])
    two = customer_quote(client, {"id": "c-2", "device_id": "dev-shared"}, [line("a", 20000)])
    placed(client, one.json())

    refused = order(client, two.json()["quote_token"], "same-device")

    assert refused.status_code == 409
    assert refused.json()["code"] == "identity_limit_reached"


# -- first orders -----------------------------------------------------------------------------


def first_order_live(client: TestClient) -> None:
    live(client, spec("fo", "first_order", discount=1000))


def test_an_account_alone_gets_no_first_order_discount(client):
    first_order_live(client)

    q = customer_quote(client, {"id": "c-new"}, [line("a", 10000)])

    assert q.status_code == 200
    assert q.json()["discounts"] == []
    assert q.json()["total"] == 10000


@pytest.mark.parametrize(
    "facts",
    [{"phone": "138 0013 8000"}, {"device_id": "device-0001"}],
    ids=["phone", "device"],
)
def test_a_new_customer_with_a_phone_or_device_gets_the_first_order_discount(client, facts):
    first_order_live(client)

    q = customer_quote(client, {"id": "c-new", **facts}, [line("a", 10000)])

    assert q.status_code == 200, q.text
    assert rule_ids(q.json()) == ["fo"]
    assert q.json()["total"] == 9000
    assert placed(client, q.json())["total"] == 9000


def test_a_new_account_on_a_known_device_gets_no_first_order_discount(client):
    first_order_live(client)
    first = customer_quote(client, {"id": "c-1", "device_id": "device-0001"}, [line("a", 10000)])
    placed(client, first.json())

    reregistered = customer_quote(
        client, {"id": "c-2", "device_id": "device-0001"}, [line("a", 10000)]
    )
    unrelated = customer_quote(
        client, {"id": "c-3", "device_id": "device-0002"}, [line("a", 10000)]
    )

    assert reregistered.json()["discounts"] == []
    assert reregistered.json()["total"] == 10000
    assert rule_ids(unrelated.json()) == ["fo"]


def test_a_first_order_quoted_twice_on_linked_accounts_is_given_once(client):
    first_order_live(client)
    one = customer_quote(client, {"id": "c-1", "phone": "13800138000"}, [line("a", 10000)])
    two = customer_quote(client, {"id": "c-2", "phone": "+8613800138000"}, [line("a", 10000)])
    assert rule_ids(one.json()) == rule_ids(two.json()) == ["fo"]
    placed(client, one.json())

    refused = order(client, two.json()["quote_token"], "second-first-order")

    assert refused.status_code == 409
    assert refused.json()["code"] in {"quote_changed", "first_order_used"}


def test_a_cancelled_first_order_frees_the_identity(client):
    first_order_live(client)
    first = customer_quote(client, {"id": "c-1", "device_id": "device-0001"}, [line("a", 10000)])
    body = placed(client, first.json())

    assert event(client, body["id"], "cancelled").status_code == 200

    again = customer_quote(client, {"id": "c-2", "device_id": "device-0001"}, [line("a", 10000)])
    assert rule_ids(again.json()) == ["fo"]
    assert placed(client, again.json())["total"] == 9000


def test_first_order_in_the_request_is_refused(client):
    first_order_live(client)

    response = customer_quote(client, {"id": "c-1", "first_order": True}, [line("a", 10000)])

    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "invalid_request"
    assert [e["path"] for e in problem["errors"]] == ["customer.first_order"]


def test_an_impossible_phone_number_is_phone_invalid(client):
    response = customer_quote(client, {"id": "c-1", "phone": "12345"}, [line("a", 10000)])

    assert response.status_code == 422
    assert response.json()["code"] == "phone_invalid"
    assert [e["path"] for e in response.json()["errors"]] == ["customer.phone"]


# -- group-buy --------------------------------------------------------------------------------


def group_buy(size: int = 2, minutes: int = 60) -> dict[str, Any]:
    """拼团: the pot at 66.00 instead of 99.00 for a group of ``size``."""
    return spec(
        "pt",
        "group_buy",
        scope={"skus": ["pot"]},
        price=6600,
        group_size=size,
        time_limit_minutes=minutes,
    )


def pot() -> dict[str, Any]:
    return line("pot", 9900, category="kitchen")


def open_group(client: TestClient, customer: dict[str, Any], rule_id: str = "pt") -> Any:
    return client.post("/v1/groups", json={"rule_id": rule_id, "customer": customer})


def join(client: TestClient, group_id: str, customer: dict[str, Any]) -> Any:
    return client.post(f"/v1/groups/{group_id}/members", json={"customer": customer})


def test_a_group_opens_only_for_a_live_group_buy_rule(client):
    live(client, threshold())
    live(client, group_buy())

    not_group = open_group(client, {"id": "c-1"}, rule_id="mj")
    unknown = open_group(client, {"id": "c-1"}, rule_id="nope")
    opened = open_group(client, {"id": "c-1"})

    assert not_group.status_code == unknown.status_code == 404
    assert not_group.json()["code"] == unknown.json()["code"] == "group_buy_not_live"
    assert opened.status_code == 201, opened.text
    group = opened.json()
    assert (group["rule_id"], group["size"], group["state"]) == ("pt", 2, "open")
    assert [m["customer_id"] for m in group["members"]] == ["c-1"]
    assert client.get(f"/v1/groups/{group['id']}").json() == group


def test_joining_fills_a_group_and_a_full_group_is_refused(client):
    live(client, group_buy(size=2))
    group = open_group(client, {"id": "c-1"}).json()

    joined = join(client, group["id"], {"id": "c-2"})
    full = join(client, group["id"], {"id": "c-3"})

    assert joined.status_code == 200, joined.text
    assert [m["customer_id"] for m in joined.json()["members"]] == ["c-1", "c-2"]
    assert full.status_code == 409
    assert full.json()["code"] == "group_full"
    members = client.get(f"/v1/groups/{group['id']}").json()["members"]
    assert [m["customer_id"] for m in members] == ["c-1", "c-2"]


def test_one_identity_takes_one_place(client):
    live(client, group_buy(size=3))
    group = open_group(client, {"id": "c-1", "phone": "13800138000"}).json()

    again = join(client, group["id"], {"id": "c-1"})
    same_phone = join(client, group["id"], {"id": "c-2", "phone": "+86 138 0013 8000"})

    assert again.status_code == same_phone.status_code == 409
    assert again.json()["code"] == same_phone.json()["code"] == "group_same_identity"
    assert len(client.get(f"/v1/groups/{group['id']}").json()["members"]) == 1


def test_an_unknown_group_is_group_not_found(client):
    response = join(client, "no-such-group", {"id": "c-2"})

    assert response.status_code == 404
    assert response.json()["code"] == "group_not_found"


def test_a_member_is_quoted_the_group_price_and_a_non_member_is_not(client):
    live(client, group_buy())
    open_group(client, {"id": "c-1"})

    member = quote(client, [pot()], customer="c-1")
    stranger = quote(client, [pot()], customer="c-2")

    assert member["total"] == 6600
    assert rule_ids(member) == ["pt"]
    assert stranger["total"] == 9900
    assert stranger["discounts"] == []


def test_a_group_is_complete_when_every_member_has_paid_and_then_closed(client):
    live(client, group_buy(size=2))
    group = open_group(client, {"id": "c-1"}).json()
    join(client, group["id"], {"id": "c-2"})
    one = placed(client, quote(client, [pot()], customer="c-1"))
    two = placed(client, quote(client, [pot()], customer="c-2"))
    # The place is used: a second order from the same member is at the list price.
    assert quote(client, [pot()], customer="c-1")["total"] == 9900

    event(client, one["id"], "paid")
    assert client.get(f"/v1/groups/{group['id']}").json()["state"] == "open"
    event(client, two["id"], "paid")

    done = client.get(f"/v1/groups/{group['id']}").json()
    assert (done["state"], done["paid"]) == ("complete", 2)
    assert all(m["paid"] for m in done["members"])
    closed = join(client, group["id"], {"id": "c-3"})
    assert closed.status_code == 409
    assert closed.json()["code"] == "group_closed"


def test_an_expired_group_cannot_be_joined(client):
    live(client, group_buy(size=3, minutes=1))
    group = open_group(client, {"id": "c-1"}).json()

    report = sweep(client, datetime.now(UTC) + timedelta(minutes=2))

    assert report["groups_expired"] == 1
    assert client.get(f"/v1/groups/{group['id']}").json()["state"] == "expired"
    refused = join(client, group["id"], {"id": "c-2"})
    assert refused.status_code == 409
    assert refused.json()["code"] == "group_closed"
    assert quote(client, [pot()], customer="c-1")["total"] == 9900


def test_an_expired_group_refunds_paid_members_once_and_expires_unpaid_orders(client, settings):
    live(client, group_buy(size=3, minutes=1))
    group = open_group(client, {"id": "c-1"}).json()
    join(client, group["id"], {"id": "c-2"})
    paid = placed(client, quote(client, [pot()], customer="c-1"))
    unpaid = placed(client, quote(client, [pot()], customer="c-2"))
    assert event(client, paid["id"], "paid").status_code == 200
    at = datetime.now(UTC) + timedelta(minutes=2)  # past the group's time, not the order's TTL

    report = sweep(client, at)

    assert report == {**NOTHING_SWEPT, "groups_expired": 1, "refunds_requested": 1}
    refunded = client.get(f"/v1/orders/{paid['id']}").json()
    assert (refunded["status"], refunded["refunded_total"]) == ("cancelled", 6600)
    assert client.get(f"/v1/orders/{unpaid['id']}").json()["status"] == "expired"
    assert event(client, unpaid["id"], "paid").json()["code"] == "invalid_transition"
    requests = "SELECT order_id, customer_id, amount, cause, state FROM refund_requests"
    assert rows(settings, requests) == [
        (paid["id"], "c-1", 6600, f"group_expired:{group['id']}", "pending")
    ]
    assert client.get(f"/v1/groups/{group['id']}").json()["state"] == "expired"

    assert sweep(client, at) == NOTHING_SWEPT
    assert sweep(client, at + TTL + timedelta(minutes=1)) == NOTHING_SWEPT
    assert len(rows(settings, requests)) == 1
    assert client.get(f"/v1/orders/{paid['id']}").json()["refunded_total"] == 6600


def test_a_complete_group_is_not_expired_by_the_sweeper(client, settings):
    live(client, group_buy(size=2, minutes=1))
    group = open_group(client, {"id": "c-1"}).json()
    join(client, group["id"], {"id": "c-2"})
    for customer in ("c-1", "c-2"):
        body = placed(client, quote(client, [pot()], customer=customer))
        assert event(client, body["id"], "paid").status_code == 200

    assert sweep(client, datetime.now(UTC) + timedelta(minutes=2)) == NOTHING_SWEPT

    assert client.get(f"/v1/groups/{group['id']}").json()["state"] == "complete"
    assert rows(settings, "SELECT count(*) FROM refund_requests") == [(0,)]


# -- the identity ledger and degraded quotes --------------------------------------------------


def plain_order(client: TestClient, customer: dict[str, Any]) -> dict[str, Any]:
    q = customer_quote(client, customer, [line("a", 10000)])
    assert q.status_code == 200, q.text
    return placed(client, q.json())


def linked(client: TestClient, customer_id: str) -> list[str]:
    response = client.get(f"/v1/customers/{customer_id}/identity")
    assert response.status_code == 200, response.text
    assert response.json()["customer_id"] == customer_id
    return response.json()["linked"]


def test_the_identity_endpoint_lists_accounts_linked_directly_and_transitively(client):
    plain_order(client, {"id": "c-1", "phone": "13800138000"})
    shared = plain_order(client, {"id": "c-2", "phone": "+86 138 0013 8000", "device_id": "dev-7"})
    plain_order(client, {"id": "c-3", "device_id": "dev-7"})
    plain_order(client, {"id": "c-4", "phone": "13900139000"})

    assert sorted(linked(client, "c-1")) == ["c-2", "c-3"]
    assert sorted(linked(client, "c-3")) == ["c-1", "c-2"]
    assert linked(client, "c-4") == []
    assert linked(client, "nobody") == []

    # Without c-2's order, nothing ties the phone to the device any more.
    assert event(client, shared["id"], "cancelled").status_code == 200
    assert linked(client, "c-1") == []
    assert linked(client, "c-3") == []


def test_a_quote_lists_no_degraded_dependency_normally(client):
    live(client, threshold())

    q = quote(client, [line("a", 23000)])

    assert q["degraded"] == []
    assert q["total"] == 18000


def test_a_long_rule_id_and_customer_id_still_fit_the_counter_keys(client):
    rule = "r" * 64
    customer = "c" * 128
    live(client, threshold(rule, spend=100, off=10, limits={"per_customer": 1}))
    first = quote(client, [line("a", 1000)], customer=customer)
    placed = client.post(
        "/v1/orders", json={"quote_token": first["quote_token"]}, headers={"Idempotency-Key": "k1"}
    )
    assert placed.status_code == 201, placed.text
    again = quote(client, [line("a", 1000)], customer=customer)
    assert again["total"] == 1000  # the limit of one is used: no discount the second time
