"""Every worker's cached rule set follows what is live: by the database stamp, and at once over
Redis when it is configured. Each worker here is a separate app or cache with its own engine."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis
from tests.service.helpers import live, threshold

from promoguard.campaigns import service
from promoguard.campaigns.live import SUPPRESS_SECONDS, LiveRules
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


# -- suppression: the kill switch's head start ------------------------------------------------


def test_a_suppressed_version_is_left_out_until_a_reload_shows_it_paused(client, database_url):
    async def scenario() -> list[list[str]]:
        clock = FakeClock()
        db = Database(database_url)
        rules = LiveRules(db, PricingPolicy(), refresh_seconds=0.5, clock=clock)
        seen = []
        try:
            held = await rules.current()
            seen.append([r.id for r in held.ruleset.rules])
            rules.suppress("mj", 1)
            now = await rules.current()  # no reload needed: at once
            seen.append([r.id for r in now.ruleset.rules])
            assert now.suppressed == frozenset({("mj", 1)})
            # An order that took its snapshot before is given the suppressed view at commit.
            seen.append([r.id for r in rules.fresh(held).ruleset.rules])
            rules.suppress("vip", 3)  # a version that is not live: nothing to leave out
            seen.append([r.id for r in (await rules.current()).ruleset.rules])
            client.post("/v1/campaigns/mj/pause", json={"reason": "test"})
            clock.now += 0.5
            paused = await rules.current()
            seen.append([r.id for r in paused.ruleset.rules])
            assert rules._suppressed == {}  # the reload dropped it: mj v1 is not live any more
            client.post("/v1/campaigns/mj/activate", json={"version": 1})  # resumed on purpose
            clock.now += 0.5
            seen.append([r.id for r in (await rules.current()).ruleset.rules])
        finally:
            await db.dispose()
        return seen

    live(client, threshold())
    assert asyncio.run(scenario()) == [["mj"], [], [], [], [], ["mj"]]


def test_a_suppression_whose_pause_never_comes_lapses(client, database_url):
    async def scenario() -> tuple[int, int]:
        clock = FakeClock()
        db = Database(database_url)
        rules = LiveRules(db, PricingPolicy(), refresh_seconds=60, clock=clock)
        try:
            rules.suppress("mj", 1)
            during = len((await rules.current()).ruleset)
            clock.now += SUPPRESS_SECONDS
            after = len((await rules.current()).ruleset)
        finally:
            await db.dispose()
        return during, after

    live(client, threshold())
    assert asyncio.run(scenario()) == (0, 1)


def test_a_kill_reaches_other_workers_over_redis_before_any_database_change(
    client, database_url, redis_url
):
    async def scenario() -> tuple[int, int]:
        clock = FakeClock()
        db = Database(database_url)
        redis_a, redis_b = Redis.from_url(redis_url), Redis.from_url(redis_url)
        channel = f"test-{uuid.uuid4().hex}:rules"  # tests running at once must not hear it
        killer, other = (
            LiveRules(db, PricingPolicy(), 60, redis=r, channel=channel, clock=clock)
            for r in (redis_a, redis_b)
        )
        await other.start()
        try:
            before = len((await other.current()).ruleset)
            await killer.kill("mj", 1)
            await asyncio.wait_for(other.heard.wait(), timeout=10)
            after = len((await other.current()).ruleset)
        finally:
            await other.stop()
            await redis_a.aclose()
            await redis_b.aclose()
            await db.dispose()
        return before, after

    live(client, threshold())
    assert asyncio.run(scenario()) == (1, 0)
