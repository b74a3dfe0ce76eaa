"""The run-time guards hold under real concurrency, on every counter backend.

Flash-sale stock, a campaign budget, a per-customer limit, the first-order identity ledger and
group-buy places are raced by up to eight spawned processes, each with its own app and pool
(like separate server workers). Every test runs on SQLite, on PostgreSQL, and with Redis counters
(the PostgreSQL database plus Redis under a prefix of its own). Each worker does its steps before
a barrier (usually the quotes), waits for the others, then fires the rest (the orders, payments,
joins) with a few requests in flight. The tests assert only outcomes, never timings.

The workers call with a bearer key: request signing (a nonce written per request) is proven in
test_security and test_concurrency, and here it would only make the race slower.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from tests.members.test_clients import reference_service
from tests.service.conftest import make_key, signed_client
from tests.service.helpers import line, live, order, quote, spec
from tests.service.test_concurrency import BARRIER_TIMEOUT, count, tally

from promoguard.app import create_app
from promoguard.orders.guards import customer_key
from promoguard.remediation.affected import find_affected
from promoguard.settings import Settings
from promoguard.store.db import Database, sync_url

PROCESSES = 8
"""Worker processes racing (a pool of its own, kept for the module)."""

IN_FLIGHT = 2
"""Flows one worker runs at once, each one step at a time (kept small: eight workers share two
cores in CI)."""

backends = pytest.mark.parametrize(
    ("database_url", "counters"),
    [("sqlite", "sql"), ("postgresql", "sql"), ("postgresql", "redis")],
    ids=["sqlite", "postgresql", "redis"],
    indirect=True,
)
"""SQLite, PostgreSQL, and Redis counters (in front of PostgreSQL)."""

# -- backends ---------------------------------------------------------------------------------


@pytest.fixture
def counters(request: pytest.FixtureRequest) -> str:
    """Where the counters live: ``sql`` (the database) or ``redis``."""
    return str(getattr(request, "param", "sql"))


@pytest.fixture
def shop(settings: Settings, counters: str, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """The settings of the backend under test; Redis keys get a prefix of their own, deleted
    afterwards."""
    if counters == "sql":
        yield settings
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"guards-{uuid.uuid4().hex[:12]}:"
    yield settings.model_copy(update={"redis_url": url, "redis_prefix": prefix})
    store = redis.Redis.from_url(url)
    try:
        keys = list(store.scan_iter(match=f"{prefix}*"))
        if keys:
            store.delete(*keys)
    finally:
        store.close()


@pytest.fixture
def api(shop: Settings) -> Iterator[TestClient]:
    """The service on the backend under test, called with an admin key."""
    with signed_client(shop) as test_client:
        yield test_client


def scalar(settings: Settings, sql: str, **params: Any) -> Any:
    """One value read straight from the database."""
    engine = sa.create_engine(sync_url(settings.database_url))
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar_one()
    finally:
        engine.dispose()


def affected_degraded(settings: Settings) -> set[str]:
    """The orders remediation finds as degraded (no faulty version: degraded quotes only)."""

    async def find() -> set[str]:
        db = Database(settings.database_url)
        try:
            async with db.read() as session:
                found = await find_affected(
                    session, versions=[], start=datetime(2000, 1, 1, tzinfo=UTC), end=None
                )
        finally:
            await db.dispose()
        return {a.order_id for a in found if a.degraded}

    return asyncio.run(find())


def level(settings: Settings, key: str) -> int:
    """How much of counter ``key`` is used, wherever the backend keeps it."""
    if settings.redis_url is None:
        used = scalar(settings, "SELECT coalesce(max(used), 0) FROM counters WHERE key = :k", k=key)
        return int(used)
    store = redis.Redis.from_url(settings.redis_url)
    try:
        return int(store.get(f"{settings.redis_prefix}counter:{key}") or 0)
    finally:
        store.close()


def unsettled(settings: Settings) -> int:
    """Redis journal entries left (takes whose order neither committed nor gave back)."""
    if settings.redis_url is None:
        return 0
    store = redis.Redis.from_url(settings.redis_url)
    try:
        return int(store.hlen(f"{settings.redis_prefix}journal"))
    finally:
        store.close()


def reserved(settings: Settings, key: str) -> dict[str, int]:
    """Amounts held on counter ``key`` by the orders' reservations, per state."""
    engine = sa.create_engine(sync_url(settings.database_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT state, sum(amount) FROM reservations WHERE key = :k GROUP BY state"
                ),
                {"k": key},
            )
            held = {str(state): int(amount) for state, amount in rows}
    finally:
        engine.dispose()
    return {state: held.get(state, 0) for state in ("reserved", "confirmed", "released")}


# -- the race ---------------------------------------------------------------------------------

Step = tuple[Any, ...]
"""``("quote", body)``, ``("order", idempotency key)`` (commits the flow's last quote),
``("paid",)`` (pays the flow's last order, if it was placed) or ``("post", path, body)``."""

Flow = tuple[list[Step], list[Step]]
"""One customer's steps before the barrier and after it, run in order."""

Outcome = dict[str, Any]
"""What one step got back: step, status, problem code, body (a quote without its token)."""


async def _step(client: httpx.AsyncClient, step: Step, state: dict[str, Any]) -> Outcome:
    kind = step[0]
    if kind == "quote":
        response = await client.post("/v1/quotes", json=step[1])
    elif kind == "order":
        if "token" not in state:
            return {"step": kind, "status": None, "code": None, "body": None}
        response = await client.post(
            "/v1/orders", json={"quote_token": state["token"]}, headers={"Idempotency-Key": step[1]}
        )
    elif kind == "paid":
        if "order_id" not in state:
            return {"step": kind, "status": None, "code": None, "body": None}
        path = f"/v1/orders/{state['order_id']}/events"
        response = await client.post(path, json={"type": "paid"})
    else:
        response = await client.post(step[1], json=step[2])
    try:
        body = response.json()
    except ValueError:
        body = {"raw": response.text}
    if not isinstance(body, dict):
        body = {"value": body}
    ok = response.status_code < 300
    if kind == "quote" and ok:
        state["token"] = body.pop("quote_token")
    if kind == "order" and ok:
        state["order_id"] = body["id"]
    return {
        "step": kind,
        "status": response.status_code,
        "code": None if ok else body.get("code"),
        "body": body,
    }


def _work(
    settings: Settings, key: tuple[str, str], flows: list[tuple[int, Flow]], barrier: Any
) -> list[tuple[int, list[Outcome]]]:
    """One worker process: its own app, event loop and pool; the flows' first steps, the
    barrier, then the rest, ``IN_FLIGHT`` flows at a time.

    The TestClient only runs the app's lifespan and lends its event loop: the calls go through
    an async client on that loop, so a worker's requests overlap without a thread each."""
    states: list[dict[str, Any]] = [{} for _ in flows]
    outcomes: list[list[Outcome]] = [[] for _ in flows]
    app = create_app(settings)

    async def phase(number: int) -> None:
        transport = httpx.ASGITransport(
            app=app, raise_app_exceptions=False, client=("127.0.0.1", 50000)
        )
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {key[0]}.{key[1]}"},
        ) as client:
            gate = asyncio.Semaphore(IN_FLIGHT)

            async def run(n: int) -> None:
                async with gate:
                    for step in flows[n][1][number]:
                        outcomes[n].append(await _step(client, step, states[n]))

            await client.get("/v1/coupons/templates")  # open the pool, load the live rules
            await asyncio.gather(*(run(n) for n in range(len(flows))))

    with TestClient(app, raise_server_exceptions=False) as runner:
        runner.portal.call(phase, 0)
        barrier.wait(BARRIER_TIMEOUT)
        runner.portal.call(phase, 1)
    return [(index, outcomes[n]) for n, (index, _) in enumerate(flows)]


Race = Callable[[Settings, list[Flow]], list[list[Outcome]]]


@pytest.fixture(scope="module")
def race() -> Iterator[Race]:
    """Deal the flows round-robin to up to ``PROCESSES`` spawned workers and race them; returns
    each flow's outcomes, in the order of the flows."""
    context = multiprocessing.get_context("spawn")
    with (
        context.Manager() as manager,
        ProcessPoolExecutor(PROCESSES, mp_context=context) as pool,
    ):

        def run(settings: Settings, flows: list[Flow]) -> list[list[Outcome]]:
            dealt = list(enumerate(flows))
            batches = [dealt[n::PROCESSES] for n in range(min(PROCESSES, len(flows)))]
            barrier = manager.Barrier(len(batches))
            key = make_key(settings, "admin")
            bearer = settings.model_copy(update={"signing_required": []})  # see the docstring
            futures = [pool.submit(_work, bearer, key, batch, barrier) for batch in batches]
            found = dict(pair for future in futures for pair in future.result())
            return [found[n] for n in range(len(flows))]

        yield run


def quote_body(customer: str, lines: list[dict[str, Any]], **facts: Any) -> dict[str, Any]:
    return {"customer": {"id": customer, **facts}, "cart": {"lines": lines}}


def rules_of(body: dict[str, Any]) -> list[str]:
    """The rule ids a quote or an order was discounted by."""
    return [d["rule_id"] for d in body.get("discounts", [])]


def last(outcomes: list[Outcome], step: str) -> Outcome:
    """A flow's outcome of its (last) step of this kind."""
    return [o for o in outcomes if o["step"] == step][-1]


def every(flows: list[list[Outcome]]) -> list[Outcome]:
    return [o for outcomes in flows for o in outcomes if o["status"] is not None]


# -- flash sale -------------------------------------------------------------------------------

FLASH_STOCK = 100
FLASH_CHECKOUTS = 2000


@backends
def test_racing_checkouts_confirm_exactly_the_flash_sale_stock(shop, api, race):
    live(
        api,
        spec(
            "fs",
            "flash_sale",
            scope={"skus": ["phone"]},
            price=5000,
            stock=FLASH_STOCK,
            per_user_limit=1,
        ),
    )
    phone = [line("phone", 10000)]
    flows: list[Flow] = []
    for n in range(FLASH_CHECKOUTS):
        checkout = [("order", f"flash-{n}"), ("paid",)]
        asked = ("quote", quote_body(f"fan-{n:04}", phone))
        # Half quote before the race (every one of them is offered the flash price), half
        # quote during it, while the stock runs out.
        flows.append(([asked], checkout) if n % 2 else ([], [asked, *checkout]))

    results = race(shop, flows)

    tally(every(results))  # no 5xx anywhere: quotes, orders, payments
    flash, plain, refused = [], [], Counter[str]()
    for outcomes in results:
        asked, placed, paid = (last(outcomes, s) for s in ("quote", "order", "paid"))
        assert asked["status"] == 200, asked
        if placed["status"] == 201:
            assert paid["status"] == 200, paid
            assert paid["body"]["status"] == "paid"
            if rules_of(placed["body"]) == ["fs"]:
                flash.append(placed["body"])
            else:  # priced without the flash sale from the start
                assert rules_of(asked["body"]) == rules_of(placed["body"]) == []
                plain.append(placed["body"])
        else:
            assert placed["status"] == 409, placed
            refused[placed["code"]] += 1
    assert len(flash) == FLASH_STOCK
    assert {o["total"] for o in flash} == {5000}
    assert {o["total"] for o in plain} <= {10000}
    assert set(refused) <= {"flash_sale_sold_out", "quote_changed"}
    assert len(flash) + len(plain) + refused.total() == FLASH_CHECKOUTS
    assert len({o["customer_id"] for o in flash}) == FLASH_STOCK

    # The record agrees: every unit is confirmed by a paid order, none is left reserved, and
    # confirmed + reserved + available = the stock.
    held = reserved(shop, "stock:fs")
    used = level(shop, "stock:fs")
    assert held == {"reserved": 0, "confirmed": FLASH_STOCK, "released": 0}
    assert used == held["confirmed"] + held["reserved"] == FLASH_STOCK
    assert held["confirmed"] + held["reserved"] + (FLASH_STOCK - used) == FLASH_STOCK
    assert count(shop, "orders", "status = 'paid'") == len(flash) + len(plain)
    assert count(shop, "orders", "status <> 'paid'") == 0
    units = scalar(shop, "SELECT coalesce(sum(units), 0) FROM redemptions WHERE rule_id = 'fs'")
    assert units == FLASH_STOCK
    assert unsettled(shop) == 0


# -- budget -----------------------------------------------------------------------------------

BUDGET = 1_000_000
"""10,000.00 yuan, in fen."""

TIERS = [(10000, 1000), (20000, 3000), (50000, 8000), (100000, 20000)]
"""满100减10, 满200减30, 满500减80, 满1000减200 (fen)."""

CART_PRICES = [12000, 25000, 60000, 120000]
"""One cart per tier, so orders need 10, 30, 80 or 200 yuan of the budget."""


@backends
def test_a_raced_budget_is_never_overspent_and_refuses_only_what_it_cannot_cover(shop, api, race):
    tiers = [{"min_spend": s, "discount": d} for s, d in TIERS]
    live(api, spec("mj", "threshold", tiers=tiers, limits={"budget": BUDGET}))
    flows: list[Flow] = [
        (
            [("quote", quote_body(f"b-{n:03}", [line("bag", CART_PRICES[n % 4])]))],
            [("order", f"budget-{n}")],
        )
        for n in range(300)  # asking for 2,400,000 fen in all
    ]

    results = race(shop, flows)

    counts = tally(every(results))
    assert set(counts) <= {(200, None), (201, None), (409, "budget_exhausted")}
    spent = 0
    refusals = []
    for outcomes in results:
        asked, placed = last(outcomes, "quote"), last(outcomes, "order")
        [offered] = asked["body"]["discounts"]
        assert offered["rule_id"] == "mj"
        if placed["status"] == 201:
            assert [(d["rule_id"], d["amount"]) for d in placed["body"]["discounts"]] == [
                ("mj", offered["amount"])
            ]
            spent += offered["amount"]
        else:
            problem = placed["body"]
            assert (problem["rule_id"], problem["limit"]) == ("mj", BUDGET)
            assert problem["needed"] == offered["amount"]
            assert problem["remaining"] < problem["needed"]
            refusals.append(problem)
    assert refusals, "the race did not exhaust the budget"
    assert spent <= BUDGET
    remaining = BUDGET - spent
    # Nobody was refused while the budget could still cover their discount.
    assert all(problem["needed"] > remaining for problem in refusals)
    assert level(shop, "budget:mj") == spent
    assert reserved(shop, "budget:mj") == {"reserved": spent, "confirmed": 0, "released": 0}
    assert unsettled(shop) == 0


# -- per-customer limit -----------------------------------------------------------------------

LONG_ID = "solo-" + "x" * 115
"""A customer id near the API's 128 characters: the counter keys must still fit."""


@backends
def test_a_per_customer_limit_of_one_holds_under_fifty_parallel_orders(shop, api, race):
    live(
        api,
        spec(
            "pc",
            "threshold",
            tiers=[{"min_spend": 10000, "discount": 1000}],
            limits={"per_customer": 1},
        ),
    )
    # The same account throughout; the tier the shop asserts varies (no rule prices by it).
    tiers = [None, "silver", "gold"]
    flows: list[Flow] = [
        (
            [("quote", quote_body(LONG_ID, [line("hat", 15000)], member_tier=tiers[n % 3]))],
            [("order", f"solo-{n}")],
        )
        for n in range(50)
    ]

    results = race(shop, flows)

    assert all(rules_of(last(o, "quote")["body"]) == ["pc"] for o in results)
    placed = [last(o, "order") for o in results]
    assert tally(placed) == {(201, None): 1, (409, "customer_limit_reached"): 49}
    [winner] = [o["body"] for o in placed if o["status"] == 201]
    assert (rules_of(winner), winner["total"]) == (["pc"], 14000)
    assert count(shop, "orders") == 1
    assert level(shop, customer_key("pc", LONG_ID)) == 1
    assert unsettled(shop) == 0


# -- first order ------------------------------------------------------------------------------

SHARED_PHONE = {
    "acct-a": "+86 138 0013 8000",
    "acct-b": "13800138000",
    "acct-c": "+8613800138000",
}
"""Three accounts, one phone written three ways."""


@backends
def test_accounts_sharing_a_phone_get_one_first_order_discount_between_them(shop, api, race):
    live(api, spec("fo", "first_order", discount=2000))
    book = [line("book", 10000)]
    flows: list[Flow] = [
        ([("quote", quote_body(account, book, phone=phone))], [("order", f"{account}-{n}")])
        for n in range(4)
        for account, phone in SHARED_PHONE.items()
    ]

    results = race(shop, flows)

    assert all(rules_of(last(o, "quote")["body"]) == ["fo"] for o in results)
    placed = [last(o, "order") for o in results]
    counts = tally(placed)
    assert counts[(201, None)] == 1
    assert set(counts) - {(201, None)} <= {(409, "first_order_used"), (409, "quote_changed")}
    [first] = [o["body"] for o in placed if o["status"] == 201]
    assert (rules_of(first), first["total"]) == (["fo"], 8000)
    paid = api.post(f"/v1/orders/{first['id']}/events", json={"type": "paid"})
    assert paid.status_code == 200, paid.text

    # One after another: the other accounts are no longer offered it...
    others = [a for a in SHARED_PHONE if a != first["customer_id"]]
    for account in others:
        offered = quote(api, book, customer=account, facts={"phone": SHARED_PHONE[account]})
        assert (rules_of(offered), offered["total"]) == ([], 10000)

    # ...until the first order is cancelled: then one of them can have it, once.
    cancelled = api.post(f"/v1/orders/{first['id']}/events", json={"type": "cancelled"})
    assert cancelled.status_code == 200, cancelled.text
    second, third = others
    offered = quote(api, book, customer=second, facts={"phone": SHARED_PHONE[second]})
    assert rules_of(offered) == ["fo"]
    placed_again = order(api, offered["quote_token"], "after-cancel")
    assert placed_again.status_code == 201, placed_again.text
    assert rules_of(placed_again.json()) == ["fo"]
    offered = quote(api, book, customer=third, facts={"phone": SHARED_PHONE[third]})
    assert rules_of(offered) == []
    phone = "first:" + _phone_signal(shop)
    assert reserved(shop, phone) == {"reserved": 1, "confirmed": 0, "released": 1}
    assert level(shop, phone) == 1
    assert unsettled(shop) == 0


def _phone_signal(settings: Settings) -> str:
    """The hashed signal of the shared phone, as the identity ledger keys it."""
    from promoguard.orders.identity import Identity  # noqa: PLC0415
    from promoguard.orders.schemas import CustomerFacts  # noqa: PLC0415

    facts = CustomerFacts(id="any", phone="13800138000")
    identity = Identity(facts, secret=settings.secret_key, region=settings.default_region)
    [phone] = [s for s in identity.signals if s.startswith("phone:")]
    return phone


# -- group buy --------------------------------------------------------------------------------

LEADER = {
    "id": "lead",
    "phone": "+86 139 1234 5678",
    "device_id": "dev-lead",
    "payment_fingerprint": "pay-lead",
    "address": "No. 1, Jianguo Rd",
}
TWINS = [
    {"id": "twin-device-1", "device_id": "dev-lead"},
    {"id": "twin-device-2", "device_id": "dev-lead"},
    {"id": "twin-device-3", "device_id": "dev-lead", "phone": "13700137000"},
    {"id": "twin-device-4", "device_id": "dev-lead", "address": "2 Other St"},
    {"id": "twin-phone", "phone": "13912345678"},
    {"id": "twin-payment", "payment_fingerprint": "pay-lead"},
    {"id": "twin-address", "address": "no 1 jianguo rd."},
    {"id": "lead", "device_id": "dev-other"},
]
"""Other accounts (and the leader's own) that share one of the leader's signals."""


def _join(group_id: str, customer: dict[str, Any]) -> Step:
    return ("post", f"/v1/groups/{group_id}/members", {"customer": customer})


@backends
def test_a_group_cannot_complete_with_the_same_identity_twice(shop, api, race):
    live(api, spec("gb", "group_buy", scope={"skus": ["mug"]}, price=3000, group_size=2))
    opened = api.post("/v1/groups", json={"rule_id": "gb", "customer": LEADER})
    assert opened.status_code == 201, opened.text
    group_id = opened.json()["id"]

    results = race(shop, [([], [_join(group_id, twin)]) for twin in TWINS])

    joins = [last(o, "post") for o in results]
    assert tally(joins) == {(409, "group_same_identity"): len(TWINS)}
    assert [m["customer_id"] for m in api.get(f"/v1/groups/{group_id}").json()["members"]] == [
        "lead"
    ]

    friend = {"id": "friend", "phone": "13600136000", "device_id": "dev-friend"}
    joined = api.post(f"/v1/groups/{group_id}/members", json={"customer": friend})
    assert joined.status_code == 200, joined.text
    for member in (LEADER, friend):
        facts = {k: v for k, v in member.items() if k != "id"}
        offered = quote(api, [line("mug", 5000)], customer=member["id"], facts=facts)
        assert (rules_of(offered), offered["total"]) == (["gb"], 3000)
        placed = order(api, offered["quote_token"], f"group-{member['id']}")
        assert placed.status_code == 201, placed.text
        paid = api.post(f"/v1/orders/{placed.json()['id']}/events", json={"type": "paid"})
        assert paid.status_code == 200, paid.text
    group = api.get(f"/v1/groups/{group_id}").json()
    assert (group["state"], group["paid"]) == ("complete", 2)
    assert sorted(m["customer_id"] for m in group["members"]) == ["friend", "lead"]


GROUP_SIZE = 5


@backends
def test_racing_joins_by_distinct_people_never_overfill_a_group(shop, api, race):
    live(api, spec("gb5", "group_buy", scope={"skus": ["mug"]}, price=3000, group_size=GROUP_SIZE))
    opened = api.post("/v1/groups", json={"rule_id": "gb5", "customer": {"id": "host"}})
    assert opened.status_code == 201, opened.text
    group_id = opened.json()["id"]
    joiners = [{"id": f"guest-{n:02}", "device_id": f"dev-guest-{n:02}"} for n in range(24)]

    results = race(shop, [([], [_join(group_id, guest)]) for guest in joiners])

    joins = [last(o, "post") for o in results]
    places = GROUP_SIZE - 1
    assert tally(joins) == {(200, None): places, (409, "group_full"): len(joiners) - places}
    winners = {g["id"] for g, o in zip(joiners, joins, strict=True) if o["status"] == 200}
    members = api.get(f"/v1/groups/{group_id}").json()["members"]
    assert {m["customer_id"] for m in members} == winners | {"host"}
    assert count(shop, "group_members", "group_id = :g", g=group_id) == GROUP_SIZE
    assert scalar(shop, "SELECT members FROM buy_groups WHERE id = :g", g=group_id) == GROUP_SIZE


# -- member tiers: the fallback ---------------------------------------------------------------


def test_quotes_keep_answering_without_the_member_price_once_the_tier_service_is_gone(
    settings: Settings,
):
    with reference_service() as (base, process):
        httpx.put(f"{base}/v1/tiers/c-gold", json={"tier": "gold"}).raise_for_status()
        tiered = settings.model_copy(
            update={
                "member_tiers_url": base,
                "dependency_timeout_ms": 10_000,  # a stopped service refuses at once anyway
                "breaker_threshold": 2,
                "breaker_reset_seconds": 3600,
            }
        )
        with signed_client(tiered) as client:
            offers = [{"tier": "gold", "price": 6000}]
            live(client, spec("mp", "member_price", scope={"skus": ["tea"]}, offers=offers))
            tea = [line("tea", 10000)]

            # While it runs, the service's tier decides: the member gets the member price, a
            # customer merely asserting "gold" does not.
            member = quote(client, tea, customer="c-gold")
            assert (rules_of(member), member["total"], member["degraded"]) == (["mp"], 6000, [])
            claimed = quote(client, tea, customer="c-plain", facts={"member_tier": "gold"})
            assert (rules_of(claimed), claimed["total"], claimed["degraded"]) == ([], 10000, [])
            placed = order(client, member["quote_token"], "tier-up")
            assert placed.status_code == 201, placed.text
            assert placed.json()["total"] == 6000

            process.terminate()
            process.wait(timeout=20)

            # Gone: every quote still answers, degraded, and nobody gets the member price (past
            # the breaker's threshold too); an order still goes through, at the list price.
            gold = {"member_tier": "gold"}
            after = [quote(client, tea, customer="c-gold", facts=gold) for _ in range(6)]
            assert {(tuple(rules_of(q)), q["total"]) for q in after} == {((), 10000)}
            assert all("member_tiers" in q["degraded"] for q in after)
            placed = order(client, after[-1]["quote_token"], "tier-down")
            assert placed.status_code == 201, placed.text
            assert (placed.json()["total"], placed.json()["discounts"]) == (10000, [])
            # The order keeps what its quote left out, and remediation finds it as degraded.
            stored = scalar(
                settings,
                "SELECT q.quote FROM quotes q JOIN orders o ON o.quote_id = q.id WHERE o.id = :o",
                o=placed.json()["id"],
            )
            stored = stored if isinstance(stored, dict) else json.loads(stored)
            assert (stored["degraded"], stored["asserted_tier"]) == (["member_tiers"], "gold")
            assert affected_degraded(tiered) == {placed.json()["id"]}
