"""Each worker's cached live rule set, refreshed when the database's stamp moves.

A quote never loads promotions from the database: it reads this cache. The cache checks the
one-row stamp at most every ``refresh_seconds`` (0.5 s by default), so a pause or a new live
version reaches every worker process within a second, and reloads the live specs only when the
stamp has changed. When Redis is configured, a change is also announced on the ``<prefix>rules``
channel (``promoguard:rules`` by default) and every worker listening drops its cache at once;
the stamp polling stays as the safety net if a message is lost.

**Suppression: the kill switch's head start.** When monitoring decides to pause a version it
first calls :meth:`LiveRules.kill`: this worker stops pricing with that version at once (quotes
leave it out, and an order whose quote had it is refused as ``quote_changed`` when it reaches its
write transaction) and, with Redis, tells every worker to do the same (a ``suppress:`` message on
the channel). The pause is written to the database next; once a reloaded rule set no longer has
the version live the suppression is dropped. A suppression whose pause never came (the version
was no longer live) lapses after ``SUPPRESS_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from redis.asyncio import Redis

from promoguard.campaigns import service
from promoguard.promotions.engine import PricingPolicy, RuleSet
from promoguard.store.db import Database

__all__ = ["CHANNEL", "SUPPRESS_SECONDS", "LiveRules", "Snapshot"]

CHANNEL = "promoguard:rules"
"""The channel with the default key prefix: ``<PROMOGUARD_REDIS_PREFIX>rules``."""
SUPPRESS_SECONDS = 30.0
"""How long a version stays suppressed when no reload shows it paused."""
_SUPPRESS = "suppress:"

Version = tuple[str, int]
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The live rules at one stamp, and the rollout of the campaigns live for fewer than all
    customers (campaign id -> basis points; a campaign not named prices for everyone)."""

    stamp: int
    ruleset: RuleSet
    rollout: Mapping[str, int] = field(default_factory=dict)
    suppressed: frozenset[Version] = frozenset()
    """Versions left out of ``ruleset`` on their way to being paused (:meth:`LiveRules.kill`)."""


class LiveRules:
    """The cache; :meth:`current` is what the quote and order paths call."""

    def __init__(
        self,
        db: Database,
        policy: PricingPolicy,
        refresh_seconds: float,
        *,
        redis: Redis | None = None,
        channel: str = CHANNEL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._policy = policy
        self._refresh = refresh_seconds
        self._redis = redis
        self.channel = channel
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._checked = float("-inf")
        self._invalidations = 0
        self._lock = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._suppressed: dict[Version, float] = {}
        """Suppressed versions and until when (``clock`` time)."""
        self._view: tuple[Snapshot, Snapshot] | None = None
        """The last ``(base, what quotes see of it)``; good until ``_view_until``."""
        self._view_until = 0.0
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
                await self._redis.publish(self.channel, "changed")
            except Exception:  # polling still catches the change within refresh_seconds
                log.warning("could not announce a rules change on Redis", exc_info=True)

    async def start(self) -> None:
        """Listen for announced changes (only when Redis is configured)."""
        if self._redis is None or self._listener is not None:
            return
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)
        except Exception:  # Redis down at start: polling the stamp still finds every change
            log.warning("cannot subscribe to %s; relying on the stamp", self.channel, exc_info=True)
            return
        self._listener = asyncio.create_task(self._listen(pubsub))

    async def _listen(self, pubsub: object) -> None:
        async for message in pubsub.listen():  # type: ignore[attr-defined]
            data = message.get("data") if isinstance(message, dict) else None
            text = data.decode() if isinstance(data, bytes) else str(data or "")
            if text.startswith(_SUPPRESS):
                try:
                    campaign_id, version = json.loads(text.removeprefix(_SUPPRESS))
                    self.suppress(str(campaign_id), int(version))
                except (ValueError, TypeError):
                    log.warning("ignoring a malformed suppress message: %r", text[:200])
            else:
                self.invalidate()
            self.heard.set()

    def suppress(self, campaign_id: str, version: int) -> None:
        """Stop pricing with this version in this worker now (see the module docstring)."""
        self._suppressed[(campaign_id, version)] = self._clock() + SUPPRESS_SECONDS
        self._view = None

    async def kill(self, campaign_id: str, version: int) -> None:
        """Suppress the version here and, with Redis, in every worker (before pausing it)."""
        self.suppress(campaign_id, version)
        if self._redis is not None:
            try:
                message = _SUPPRESS + json.dumps([campaign_id, version])
                await self._redis.publish(self.channel, message)
            except Exception:  # the pause that follows still reaches every worker
                log.warning("could not announce a suppression on Redis", exc_info=True)

    def _present(self, base: Snapshot) -> Snapshot:
        """``base`` without the suppressed versions; worked out once per base and suppression
        (the quote path calls it while a suppression is on)."""
        if not self._suppressed:
            return base
        now = self._clock()
        cached = self._view
        if cached is not None and cached[0] is base and now < self._view_until:
            return cached[1]
        for key, until in list(self._suppressed.items()):
            if until <= now:
                del self._suppressed[key]
        live = {(rule.id, rule.version) for rule in base.ruleset.rules}
        hidden = frozenset(k for k in self._suppressed if k in live)
        view = base
        if hidden:
            kept = [r.spec for r in base.ruleset.rules if (r.id, r.version) not in hidden]
            view = Snapshot(base.stamp, RuleSet(kept, self._policy), base.rollout, hidden)
        self._view = (base, view)
        self._view_until = min(self._suppressed.values(), default=now)
        return view

    def fresh(self, snapshot: Snapshot) -> Snapshot:
        """``snapshot`` unless a version in it has been suppressed since: then the same rules
        without it (no I/O; the order path calls it once it holds its write transaction)."""
        if not self._suppressed or self._snapshot is None:
            return snapshot
        return self._present(self._snapshot if snapshot.stamp == self._snapshot.stamp else snapshot)

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
            return self._present(snapshot) if self._suppressed else snapshot
        async with self._lock:
            if self._snapshot is not None and self._clock() - self._checked < self._refresh:
                return self._present(self._snapshot)
            invalidations = self._invalidations
            async with self._db.read() as session:
                stamp = await service.rules_stamp(session)
                if self._snapshot is None or stamp != self._snapshot.stamp:
                    stamp, specs, rollout = await service.live_specs(session)
                    self._snapshot = Snapshot(stamp, RuleSet(specs, self._policy), rollout)
                    self._forget_paused(self._snapshot)
            if invalidations == self._invalidations:
                self._checked = self._clock()
            # else: a change was announced while we read; the next call reads again.
            return self._present(self._snapshot)

    def _forget_paused(self, loaded: Snapshot) -> None:
        """Drop the suppressions of versions the database no longer has live."""
        if self._suppressed:
            live = {(rule.id, rule.version) for rule in loaded.ruleset.rules}
            for key in [k for k in self._suppressed if k not in live]:
                del self._suppressed[key]
