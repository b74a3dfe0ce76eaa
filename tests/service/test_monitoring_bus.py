"""Monitoring shared between workers through Redis: every watch sees every worker's signals, and
exactly one worker acts on each alert. Runs on SQLite and PostgreSQL, with the local Redis.

Two apps (two workers' worth of watch, live rules and checkout) share one database; each test
drives the watches' ticks by hand, so it decides exactly what each one has seen.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis.asyncio import Redis
from tests.service.conftest import signed_client
from tests.service.helpers import approve, catalogue, line, live, order, quote, threshold

from promoguard.monitoring.bus import RedisBus, decode, encode
from promoguard.monitoring.detectors import Alert
from promoguard.monitoring.signals import ClaimSignal, OrderSignal, RequestSignal
from promoguard.settings import Settings

SIGNALS = [
    OrderSignal(
        at=1.5,
        order_id="o-1",
        customer_id="c-1",
        list_total=30000,
        discount_total=6000,
        member_tier="gold",
        identity=("device:ab12", "phone:cd34"),
        discounts=(("mj", 2, 6000), ("vip", 1, 0)),
    ),
    OrderSignal(1.75, "o-2", "c-2", 100, 0, None, (), ()),
    ClaimSignal(2.0, "coupon-1", "c-3", False, "sold_out", ("device:ab12",)),
    ClaimSignal(2.5, "coupon-1", "c-4", True, None),
    RequestSignal(3.0, "/v1/quotes", 200, 0.0123),
]


def test_a_batch_of_signals_survives_the_round_trip():
    assert decode(encode(SIGNALS)) == SIGNALS
    assert decode(encode([])) == []


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own: tests running at once must not share a stream."""
    return f"test-{uuid.uuid4().hex[:12]}:"


def _run(redis_url: str, body: Any) -> Any:
    async def go() -> Any:
        redis = Redis.from_url(redis_url)
        try:
            return await body(redis)
        finally:
            await redis.aclose()

    return asyncio.run(go())


def test_each_bus_sees_every_workers_signals_once_in_stream_order(redis_url: str, prefix: str):
    async def body(redis: Redis) -> None:
        a, b = RedisBus(redis, prefix), RedisBus(redis, prefix)
        await a.start()
        await b.start()
        assert await a.exchange([]) == []
        assert await b.exchange([]) == []
        assert await a.exchange(SIGNALS[:2]) == SIGNALS[:2]
        assert await b.exchange(SIGNALS[2:3]) == SIGNALS[:3]
        assert await a.exchange(SIGNALS[3:]) == SIGNALS[2:]
        assert await b.exchange([]) == SIGNALS[3:]
        assert await a.exchange([]) == []
        # A worker that starts later reads what is published from then on.
        later = RedisBus(redis, prefix)
        await later.start()
        assert await later.exchange([]) == []
        assert await a.exchange(SIGNALS[:1]) == SIGNALS[:1]
        assert await later.exchange([]) == SIGNALS[:1]

    _run(redis_url, body)


def test_reading_a_backlog_larger_than_one_read_gets_all_of_it(redis_url: str, prefix: str):
    async def body(redis: Redis) -> None:
        writer, reader = RedisBus(redis, prefix), RedisBus(redis, prefix, batch_limit=3)
        await reader.start()
        for signal in SIGNALS * 2:
            await writer.exchange([signal])
        assert await reader.exchange([]) == SIGNALS * 2

    _run(redis_url, body)


def test_one_worker_claims_an_alert_per_rule_and_subject(redis_url: str, prefix: str):
    def alert(subject: str) -> Alert:
        return Alert("r", "d", "P1", (), subject, None, None, 0, 0, "m", 0.0)  # type: ignore[arg-type]

    async def body(redis: Redis) -> list[bool]:
        a, b = RedisBus(redis, prefix), RedisBus(redis, prefix)
        return [
            await a.claim(alert("campaign:mj:v2"), 300),
            await b.claim(alert("campaign:mj:v2"), 300),
            await a.claim(alert("campaign:mj:v2"), 300),
            await b.claim(alert("campaign:vip:v1"), 300),
        ]

    assert _run(redis_url, body) == [True, False, False, True]


# -- two workers' watches ---------------------------------------------------------------------


@pytest.fixture
def two_apps(settings: Settings, redis_url: str, prefix: str) -> Iterator[list[TestClient]]:
    """Two apps on one database and one Redis, evaluating only when a test ticks them."""
    shared = settings.model_copy(
        update={"monitor_interval_seconds": 3600, "redis_url": redis_url, "redis_prefix": prefix}
    )
    with ExitStack() as stack:
        apps = [stack.enter_context(signed_client(shared)) for _ in range(2)]
        assert apps[0].put("/v1/catalogue", json=catalogue()).status_code == 200
        yield apps


def tick(client: TestClient) -> list[Alert]:
    watch = client.app.state.services.watch  # type: ignore[attr-defined]
    fired: list[Alert] = client.portal.call(watch.tick)  # type: ignore[union-attr]
    return fired


def buy(client: TestClient, n: int, prefix: str) -> None:
    for i in range(n):
        priced = quote(client, [line("sku-8", 30000)], customer=f"{prefix}-{i}")
        assert priced["discount_total"] == 6000
        assert order(client, priced["quote_token"], f"{prefix}-{i}").status_code == 201


def deeper_v2_live(client: TestClient) -> None:
    """``mj`` v1 (满200减20) live, then v2 three times as deep (it passes review)."""
    live(client, threshold(spend=20000, off=2000))
    added = client.post("/v1/campaigns/mj/versions", json={"spec": threshold(off=6000)})
    assert added.status_code == 201, added.text
    approve(client, "mj", 2)
    assert client.post("/v1/campaigns/mj/activate", json={"version": 2}).status_code == 200


def test_faulty_orders_split_over_two_workers_are_judged_together_and_paused_once(
    two_apps: list[TestClient],
):
    """Four faulty orders per worker: the rule wants seven of them here (at least five, and
    enough evidence against the profile's tail), so neither worker's own four are enough."""
    a, b = two_apps
    deeper_v2_live(a)
    buy(a, 4, "on-a")
    buy(b, 4, "on-b")

    assert tick(a) == []  # a has seen its own four (b has not published yet)
    found_by_b = tick(b)  # b sees a's four and its own: eight
    found_by_a = tick(a)  # a now sees b's four as well: it finds the alert, b has claimed it

    assert [(x.rule, x.version) for x in found_by_b] == [("discount-above-profile", 2)]
    assert [(x.rule, x.version) for x in found_by_a] == [("discount-above-profile", 2)]
    acted = [[x.rule for x in c.app.state.services.watch.fired] for c in (a, b)]  # type: ignore[attr-defined]
    assert acted == [[], ["discount-above-profile"]]
    stored = a.get("/v1/alerts", params={"campaign_id": "mj"}).json()
    assert [(x["rule"], x["outcome"]["pause"]) for x in stored] == [
        ("discount-above-profile", "paused")
    ]
    timeline = a.get("/v1/campaigns/mj/timeline").json()
    assert [e["actor"] for e in timeline if e["action"] == "campaign.paused"] == ["monitor"]
    assert a.get("/v1/campaigns/mj").json()["status"] == "paused"


def test_without_redis_each_worker_judges_only_its_own_orders(settings: Settings):
    """The same eight orders with no Redis: each worker's four are too few to act on."""
    alone = settings.model_copy(update={"monitor_interval_seconds": 3600})
    with signed_client(alone) as a, signed_client(alone) as b:
        assert a.put("/v1/catalogue", json=catalogue()).status_code == 200
        deeper_v2_live(a)
        buy(a, 4, "on-a")
        buy(b, 4, "on-b")
        assert (tick(a), tick(b), tick(a)) == ([], [], [])
        assert a.get("/v1/campaigns/mj").json()["status"] == "live"


def test_with_redis_unreachable_a_worker_still_judges_its_own_orders(settings: Settings):
    """The bus fails (nothing listens on the port): the watch goes on with its own signals."""
    alone = settings.model_copy(update={"monitor_interval_seconds": 3600})
    with signed_client(alone) as a:
        watch = a.app.state.services.watch  # type: ignore[attr-defined]

        async def unreachable() -> RedisBus:
            return RedisBus(Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=1), "x:")

        watch.bus = a.portal.call(unreachable)  # type: ignore[union-attr]
        assert a.put("/v1/catalogue", json=catalogue()).status_code == 200
        deeper_v2_live(a)
        buy(a, 8, "on-a")
        assert [x.rule for x in tick(a)] == ["discount-above-profile"]
        assert a.get("/v1/campaigns/mj").json()["status"] == "paused"


def test_an_order_quoted_before_a_kill_is_refused_when_it_commits(settings: Settings):
    """The monitor's kill stops a version in the order path too, before the pause is written."""
    with signed_client(settings) as client:
        live(client, threshold(spend=20000, off=2000))
        priced = quote(client, [line("sku-8", 30000)], customer="early")
        assert priced["discount_total"] == 2000
        rules = client.app.state.services.live  # type: ignore[attr-defined]
        client.portal.call(rules.kill, "mj", 1)  # type: ignore[union-attr]
        refused = order(client, priced["quote_token"], "early")
        assert (refused.status_code, refused.json()["code"]) == (409, "quote_changed")
        again = quote(client, [line("sku-8", 30000)], customer="early")
        assert again["discount_total"] == 0
        assert client.get("/v1/campaigns/mj").json()["status"] == "live"  # not paused by this
