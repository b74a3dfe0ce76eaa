"""Each worker's cached live rule set, refreshed when the database's stamp moves.

A quote never loads promotions from the database: it reads this cache. The cache checks the
one-row stamp at most every ``refresh_seconds`` (0.5 s by default), so a pause or a new live
version reaches every worker process within a second, and reloads the live specs only when the
stamp has changed. When Redis is configured, a change is also announced on the
``promoguard:rules`` channel and every worker listening drops its cache at once; the stamp
polling stays as the safety net if a message is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from redis.asyncio import Redis

from promoguard.campaigns import service
from promoguard.promotions.engine import PricingPolicy, RuleSet
from promoguard.store.db import Database

__all__ = ["CHANNEL", "LiveRules", "Snapshot"]

CHANNEL = "promoguard:rules"
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The live rules at one stamp, and the rollout of the campaigns live for fewer than all
    customers (campaign id -> basis points; a campaign not named prices for everyone)."""

    stamp: int
    ruleset: RuleSet
    rollout: Mapping[str, int] = field(default_factory=dict)


class LiveRules:
    """The cache; :meth:`current` is what the quote and order paths call."""

    def __init__(
        self,
        db: Database,
        policy: PricingPolicy,
        refresh_seconds: float,
        *,
        redis: Redis | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._policy = policy
        self._refresh = refresh_seconds
        self._redis = redis
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._checked = float("-inf")
        self._invalidations = 0
        self._lock = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self.heard = asyncio.Event()
        """Set whenever a change announced on Redis arrives (tests wait on it)."""

    def invalidate(self) -> None:
        """Check the stamp on the next call (also when a check is under way right now: what it
        read may predate the change)."""
        self._checked = float("-inf")
        self._invalidations += 1

    async def announce(self) -> None:
        """Tell every worker that what is live changed (this one included)."""
        self.invalidate()
        if self._redis is not None:
            try:
                await self._redis.publish(CHANNEL, "changed")
            except Exception:  # polling still catches the change within refresh_seconds
                log.warning("could not announce a rules change on Redis", exc_info=True)

    async def start(self) -> None:
        """Listen for announced changes (only when Redis is configured)."""
        if self._redis is None or self._listener is not None:
            return
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(CHANNEL)
        except Exception:  # Redis down at start: polling the stamp still finds every change
            log.warning("cannot subscribe to %s; relying on the stamp", CHANNEL, exc_info=True)
            return
        self._listener = asyncio.create_task(self._listen(pubsub))

    async def _listen(self, pubsub: object) -> None:
        async for _ in pubsub.listen():  # type: ignore[attr-defined]
            self.invalidate()
            self.heard.set()

    async def stop(self) -> None:
        """Stop listening."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None

    async def current(self) -> Snapshot:
        """The live rule set, at most ``refresh_seconds`` old."""
        snapshot = self._snapshot
        if snapshot is not None and self._clock() - self._checked < self._refresh:
            return snapshot
        async with self._lock:
            if self._snapshot is not None and self._clock() - self._checked < self._refresh:
                return self._snapshot
            invalidations = self._invalidations
            async with self._db.read() as session:
                stamp = await service.rules_stamp(session)
                if self._snapshot is None or stamp != self._snapshot.stamp:
                    stamp, specs, rollout = await service.live_specs(session)
                    self._snapshot = Snapshot(stamp, RuleSet(specs, self._policy), rollout)
            if invalidations == self._invalidations:
                self._checked = self._clock()
            # else: a change was announced while we read; the next call reads again.
            return self._snapshot
