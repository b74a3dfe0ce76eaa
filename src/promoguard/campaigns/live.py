"""Each worker's cached live rule set, refreshed when the database's stamp moves.

A quote never loads promotions from the database: it reads this cache. The cache checks the
one-row stamp at most every ``refresh_seconds`` (0.5 s by default), so a pause or a new live
version reaches every worker process within a second, and reloads the live specs only when the
stamp has changed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from promoguard.campaigns import service
from promoguard.promotions.engine import PricingPolicy, RuleSet
from promoguard.store.db import Database

__all__ = ["LiveRules", "Snapshot"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The live rules at one stamp."""

    stamp: int
    ruleset: RuleSet


class LiveRules:
    """The cache; :meth:`current` is what the quote and order paths call."""

    def __init__(self, db: Database, policy: PricingPolicy, refresh_seconds: float) -> None:
        self._db = db
        self._policy = policy
        self._refresh = refresh_seconds
        self._snapshot: Snapshot | None = None
        self._checked = 0.0
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """Check the stamp on the next call (after this process changed what is live)."""
        self._checked = 0.0

    async def current(self) -> Snapshot:
        """The live rule set, at most ``refresh_seconds`` old."""
        snapshot = self._snapshot
        if snapshot is not None and time.monotonic() - self._checked < self._refresh:
            return snapshot
        async with self._lock:
            if self._snapshot is not None and time.monotonic() - self._checked < self._refresh:
                return self._snapshot
            async with self._db.read() as session:
                stamp = await service.rules_stamp(session)
                if self._snapshot is None or stamp != self._snapshot.stamp:
                    stamp, specs = await service.live_specs(session)
                    self._snapshot = Snapshot(stamp, RuleSet(specs, self._policy))
            self._checked = time.monotonic()
            return self._snapshot
