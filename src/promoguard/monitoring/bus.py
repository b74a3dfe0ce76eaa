"""How the workers' watches share what they see: locally (one worker) or on a Redis stream.

Each worker's watch drains its own buffer every tick and hands the batch to a :class:`SignalBus`,
which returns the signals its detectors are to see:

* :class:`LocalBus` (no Redis configured): the worker's own signals. With one worker that is all
  the traffic; with several, each worker's detectors see its share (ratios stay fair, counts are
  per worker — so configure Redis when running several workers).
* :class:`RedisBus` (``PROMOGUARD_REDIS_URL`` set): each tick appends the worker's batch as one
  entry to the stream ``<prefix>monitor:signals`` (``XADD … MAXLEN ~``, so the stream stays
  bounded) and reads every entry since its last one (``XREAD``). Every worker's detectors then see
  the whole shop's traffic: velocity and identity-cluster counts are shop-wide, and a faulty
  version is judged on the evidence of all workers together, so it is caught after as many
  affected orders as with one worker. Every worker finds the same alerts; :meth:`claim` (``SET NX
  EX`` per rule and subject for the rule's cooldown) lets exactly one of them act on each.

A bus never stops monitoring: when Redis fails, the tick goes on with the worker's own signals
(and acts on its own alerts); the failures are logged once per streak by the watch.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis

from promoguard.monitoring.detectors import Alert
from promoguard.monitoring.signals import ClaimSignal, OrderSignal, RequestSignal, Signal

__all__ = ["LocalBus", "RedisBus", "SignalBus", "decode", "encode"]


class SignalBus(Protocol):
    """What a watch exchanges its signals through."""

    shared: bool
    """True when the detectors see every worker's signals."""

    async def start(self) -> None:
        """Get ready (when the worker starts)."""

    async def exchange(self, signals: Sequence[Signal]) -> list[Signal]:
        """Publish this worker's new signals; returns what the detectors are to see now."""

    async def claim(self, alert: Alert, hold_seconds: float) -> bool:
        """True when this worker is the one to act on ``alert``."""


class LocalBus:
    """One worker's own signals, and it acts on all of its alerts."""

    shared = False

    async def start(self) -> None:
        """Nothing to prepare."""

    async def exchange(self, signals: Sequence[Signal]) -> list[Signal]:
        """The same signals."""
        return list(signals)

    async def claim(self, alert: Alert, hold_seconds: float) -> bool:  # noqa: ARG002
        """Always this worker."""
        return True


_ORDER, _CLAIM, _REQUEST = "o", "c", "r"


def encode(signals: Sequence[Signal]) -> bytes:
    """A batch of signals as compact JSON (lists, not objects: a batch can be thousands)."""
    rows: list[list[Any]] = []
    for s in signals:
        if isinstance(s, OrderSignal):
            rows.append(
                [
                    _ORDER,
                    s.at,
                    s.order_id,
                    s.customer_id,
                    s.list_total,
                    s.discount_total,
                    s.member_tier,
                    s.identity,
                    s.discounts,
                ]
            )
        elif isinstance(s, ClaimSignal):
            rows.append([_CLAIM, s.at, s.campaign_id, s.customer_id, s.ok, s.code, s.identity])
        else:
            rows.append([_REQUEST, s.at, s.route, s.status, s.seconds])
    return orjson.dumps(rows)


def decode(blob: bytes) -> list[Signal]:
    """The signals :func:`encode` wrote."""
    signals: list[Signal] = []
    for row in orjson.loads(blob):
        kind = row[0]
        if kind == _ORDER:
            signals.append(
                OrderSignal(
                    at=row[1],
                    order_id=row[2],
                    customer_id=row[3],
                    list_total=row[4],
                    discount_total=row[5],
                    member_tier=row[6],
                    identity=tuple(row[7]),
                    discounts=tuple((c, v, a) for c, v, a in row[8]),
                )
            )
        elif kind == _CLAIM:
            signals.append(ClaimSignal(row[1], row[2], row[3], row[4], row[5], tuple(row[6])))
        elif kind == _REQUEST:
            signals.append(RequestSignal(row[1], row[2], row[3], row[4]))
    return signals


class RedisBus:
    """Every worker's signals through one Redis stream; one worker acts on each alert.

    Args:
        redis: the client (``decode_responses`` off).
        prefix: the key prefix (``PROMOGUARD_REDIS_PREFIX``): services sharing a prefix share
            their monitoring.
        max_entries: the stream's approximate bound, in batches (each worker adds at most one
            per tick: 20 a second at the default interval).
        batch_limit: entries read per call at most (the rest is read on the next ticks).
    """

    shared = True

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        max_entries: int = 20_000,
        batch_limit: int = 2_000,
    ) -> None:
        self._redis = redis
        self.stream = f"{prefix}monitor:signals"
        self._alerts = f"{prefix}monitor:alert:"
        self._max = max_entries
        self._limit = batch_limit
        self.worker = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        """This worker's name in the stream (its own entries are not decoded again)."""
        self._last: bytes | str | None = None
        """The newest entry read; set by :meth:`start` (or the first exchange) to the stream's
        newest, so a worker reads what every worker publishes from its start on."""

    async def start(self) -> None:
        """Begin at the stream's end (the watch calls this when the worker starts)."""
        newest = await self._redis.xrevrange(self.stream, count=1)
        self._last = newest[0][0] if newest else "0-0"

    async def exchange(self, signals: Sequence[Signal]) -> list[Signal]:
        """Append this worker's batch, read every entry since the last call: the other workers'
        signals plus this worker's own (in the order the stream has them)."""
        if self._last is None:  # Redis was down at start
            await self.start()
        last: bytes | str = self._last or "0-0"
        added = None
        if signals:
            added = await self._redis.xadd(
                self.stream,
                {"w": self.worker, "b": encode(signals)},
                maxlen=self._max,
                approximate=True,
            )
        seen: list[Signal] = []
        own = self.worker.encode()
        while True:
            read = await self._redis.xread({self.stream: last}, count=self._limit)
            entries = read[0][1] if read else []
            for entry_id, fields in entries:
                self._last = last = entry_id
                if fields[b"w"] != own:
                    seen.extend(decode(fields[b"b"]))
                elif entry_id == added:
                    seen.extend(signals)
                # else: this worker's batch of a call that failed after adding it; the watch
                # fed that batch to its detectors itself then.
            if len(entries) < self._limit:
                return seen

    async def claim(self, alert: Alert, hold_seconds: float) -> bool:
        """Whether this worker acts on the alert: the first to claim its rule and subject
        within ``hold_seconds`` (the rule's cooldown, at least one second)."""
        key = f"{self._alerts}{alert.rule}:{alert.subject}"
        claimed = await self._redis.set(key, self.worker, nx=True, ex=max(1, int(hold_seconds)))
        return bool(claimed)
