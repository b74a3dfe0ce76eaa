"""Every worker's cached rule set follows what is live: by the database stamp, and at once over
Redis when it is configured. Each worker here is a separate app or cache with its own engine."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from tests.service.helpers import live, threshold

from promoguard.campaigns import service
from promoguard.campaigns.live import LiveRules
from promoguard.promotions.engine import PricingPolicy
from promoguard.store.db import Database


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_another_worker_sees_a_change_once_its_refresh_interval_passes(client, database_url):
    async def scenario() -> None:
        clock = FakeClock()
        db = Database(database_url)
        other = LiveRules(db, PricingPolicy(), refresh_seconds=0.5, clock=clock)
        try:
            before = await other.current()
            live(client, threshold())  # another worker makes a campaign live
            cached = await other.current()
            clock.now += 0.5
            after = await other.current()
        finally:
            await db.dispose()
        assert len(before.ruleset) == 0
        assert cached is before  # within the interval the cache is trusted
        assert [r.id for r in after.ruleset.rules] == ["mj"]
        assert after.stamp > before.stamp

    asyncio.run(scenario())


def test_a_change_announced_on_redis_reaches_other_workers_at_once(client, database_url, redis_url):
    async def scenario() -> None:
        clock = FakeClock()
        db = Database(database_url)
        redis_a, redis_b = Redis.from_url(redis_url), Redis.from_url(redis_url)
        announcer = LiveRules(db, PricingPolicy(), refresh_seconds=60, redis=redis_a, clock=clock)
        listener = LiveRules(db, PricingPolicy(), refresh_seconds=60, redis=redis_b, clock=clock)
        await listener.start()
        try:
            before = await listener.current()
            live(client, threshold())
            assert (await listener.current()) is before  # a 60 s interval has not passed
            await announcer.announce()
            await asyncio.wait_for(listener.heard.wait(), timeout=10)
            after = await listener.current()
        finally:
            await listener.stop()
            await redis_a.aclose()
            await redis_b.aclose()
            await db.dispose()
        assert [r.id for r in after.ruleset.rules] == ["mj"]

    asyncio.run(scenario())


def test_a_change_announced_while_a_check_is_under_way_is_not_lost(
    client, database_url, monkeypatch
):
    """A check that read the stamp before a change must not mark the cache fresh after it."""
    original = service.rules_stamp

    async def scenario() -> None:
        clock = FakeClock()
        db = Database(database_url)
        rules = LiveRules(db, PricingPolicy(), refresh_seconds=60, clock=clock)
        read, release = asyncio.Event(), asyncio.Event()
        armed = True

        async def stamp_then_wait(session):  # the first read of the stamp stalls after reading
            nonlocal armed
            value = await original(session)
            if armed:
                armed = False
                read.set()
                await release.wait()
            return value

        try:
            before = await rules.current()
            rules.invalidate()
            monkeypatch.setattr(service, "rules_stamp", stamp_then_wait)
            checking = asyncio.ensure_future(rules.current())
            await read.wait()  # the check has read the old stamp ...
            live(client, threshold())  # ... when a campaign goes live
            rules.invalidate()  # and the change is announced
            release.set()
            await checking
            after = await rules.current()
        finally:
            monkeypatch.setattr(service, "rules_stamp", original)
            await db.dispose()
        assert len(before.ruleset) == 0
        assert [r.id for r in after.ruleset.rules] == ["mj"]

    asyncio.run(scenario())
