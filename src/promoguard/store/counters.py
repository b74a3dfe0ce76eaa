# ruff: noqa: ARG002  (every backend takes the same arguments; each uses the ones it needs)
"""Counters used against limits — flash-sale stock, budgets, redemption caps, per-customer and
per-identity limits — with one interface and two backends.

A :class:`Take` asks to raise a counter by an amount only if it stays within its limit. Several
takes are all-or-nothing: an order that fits the stock but not the budget takes neither.

- :class:`SqlCounters` (SQLite and PostgreSQL): a conditional upsert per take inside the order's
  own transaction (``INSERT ... ON CONFLICT DO UPDATE SET used = used + n WHERE used + n <= limit
  RETURNING used``); a refusal aborts the transaction, so nothing is half-taken. Keys are taken
  in one fixed order (contended ones last) so two PostgreSQL transactions never lock the same
  rows in opposite orders.
- :class:`RedisCounters`: one Lua script checks every take and only then raises them all, in one
  atomic step. Redis is the admission gate and the database's reservation rows are the record:
  the script also writes a journal entry (which order took what) that is cleared once the order's
  transaction commits; the sweeper settles entries left behind by a crash (see :meth:`settle`).

  A Redis that comes back empty (restarted without persistence, flushed, failed over to a replica
  that had not caught up) would let every counter start again at zero and sell the stock twice.
  So the counters carry a marker key, written only when they are loaded from the record
  (:meth:`Counters.load`: each counter raised to what the reservations hold); while it is
  missing every take is refused (``503 counters_not_loaded``) and nothing is written. Every
  worker loads them when it starts and at each sweep, whichever comes first. A Redis that does
  not answer refuses takes and reads the same way (``503 counter_store_unavailable``).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import ClassVar, NamedTuple, cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import Table, case, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.errors import UnavailableError
from promoguard.orders.models import Counter
from promoguard.store.db import PlainSQL, upsert_insert

__all__ = ["Counters", "RedisCounters", "SqlCounters", "Take"]


class Take(NamedTuple):
    """Raise counter ``key`` by ``amount`` if it stays within ``limit``; ``refusal`` is the
    problem code a caller gets when it would not."""

    key: str
    amount: int
    limit: int
    refusal: str
    shared: bool = False
    """Many customers contend for this counter (stock, a budget): it is taken after the
    per-customer ones, so its row lock (PostgreSQL) is held as briefly as possible."""


Part = tuple[str, int]
"""(counter key, amount) to give back."""


class Counters(ABC):
    """The interface every backend implements."""

    transactional: ClassVar[bool]
    """True when takes live in the database transaction (a rollback undoes them)."""

    @abstractmethod
    async def take(self, session: AsyncSession, takes: Sequence[Take], owner: str) -> Take | None:
        """Take every one of ``takes`` for ``owner`` (an order id), or none of them.

        Returns:
            None when all were taken, else the first take that would pass its limit.
        """

    @abstractmethod
    async def committed(self, owner: str) -> None:
        """The owner's transaction committed: what it took is now on record."""

    async def undo(self, owner: str) -> bool:
        """Give back what ``owner`` took if its transaction did not commit (a transactional
        store's rollback already did); tell whether anything was given back."""
        return False

    async def settle(
        self, older_than: float, on_record: Callable[[list[str]], Awaitable[set[str]]]
    ) -> int:
        """Settle takes a crashed process left half-done (nothing to do for a transactional
        store); returns how many were given back."""
        return 0

    @abstractmethod
    async def give_back(self, session: AsyncSession, parts: Sequence[Part]) -> None:
        """Lower counters by what a cancelled, expired or failed order had taken."""

    @abstractmethod
    async def levels(self, session: AsyncSession, keys: Iterable[str]) -> dict[str, int]:
        """How much of each counter is used (missing keys are at 0)."""

    @abstractmethod
    def take_plain(self, sql: PlainSQL, takes: Sequence[Take], owner: str) -> Take | None:
        """:meth:`take` inside an order's plain-SQL transaction
        (:meth:`~promoguard.store.db.Database.write_plain`)."""

    @abstractmethod
    def levels_plain(self, sql: PlainSQL, keys: Iterable[str]) -> dict[str, int]:
        """:meth:`levels` inside an order's plain-SQL transaction."""

    async def loaded(self) -> bool:
        """Whether the counters hold at least the record (a transactional store always does:
        its counters are in the same database as the reservations)."""
        return True

    async def load(self, record: Mapping[str, int]) -> int:
        """Raise each counter to at least ``record[key]`` (what the reservations hold, never
        lower one) and mark the counters loaded; returns how many were raised."""
        return 0


def _sorted(takes: Sequence[Take]) -> list[Take]:
    # One fixed order for everyone (no two transactions lock rows in opposite orders), with
    # the contended counters last.
    return sorted(takes, key=lambda t: (t.shared, t.key))


class SqlCounters(Counters):
    """Counters in the ``counters`` table, raised by conditional upserts in the caller's
    transaction."""

    transactional = True

    async def take(
        self,
        session: AsyncSession,
        takes: Sequence[Take],
        owner: str,
    ) -> Take | None:
        """Raise each counter within its limit; on a refusal the caller must roll back."""
        table = Counter.__table__
        assert isinstance(table, Table)
        insert = upsert_insert(session)
        for take in _sorted(takes):
            if take.amount > take.limit:
                return take
            statement = (
                insert(table)
                .values(key=take.key, used=take.amount)
                .on_conflict_do_update(
                    index_elements=[table.c.key],
                    set_={"used": table.c.used + take.amount},
                    where=table.c.used + take.amount <= take.limit,
                )
                .returning(table.c.used)
            )
            if (await session.execute(statement)).scalar_one_or_none() is None:
                return take
        return None

    def take_plain(self, sql: PlainSQL, takes: Sequence[Take], owner: str) -> Take | None:
        """:meth:`take` as plain SQL: the same conditional upsert per take, in the same order."""
        for take in _sorted(takes):
            if take.amount > take.limit:
                return take
            # ``used`` in DO UPDATE is the stored row's (on both SQLite and PostgreSQL).
            taken = sql.one(
                "INSERT INTO counters (key, used) VALUES (?, ?) ON CONFLICT (key) DO UPDATE"
                " SET used = counters.used + ? WHERE counters.used + ? <= ? RETURNING used",
                (take.key, take.amount, take.amount, take.amount, take.limit),
            )
            if taken is None:
                return take
        return None

    def levels_plain(self, sql: PlainSQL, keys: Iterable[str]) -> dict[str, int]:
        """:meth:`levels` as plain SQL, in one query."""
        wanted = list(keys)
        if not wanted:
            return {}
        rows = sql.all(
            f"SELECT key, used FROM counters WHERE key IN ({sql.marks(len(wanted))})", wanted
        )
        return dict.fromkeys(wanted, 0) | dict(rows)

    async def committed(self, owner: str) -> None:
        """Nothing to do: the takes committed with the order."""

    async def give_back(self, session: AsyncSession, parts: Sequence[Part]) -> None:
        """Lower the counters in the caller's transaction (never below zero)."""
        for key, amount in sorted(parts):
            await session.execute(
                update(Counter)
                .where(Counter.key == key)
                # Floored at zero: a counter below zero would admit more than its limit.
                .values(used=case((Counter.used > amount, Counter.used - amount), else_=0))
                .execution_options(synchronize_session=False)
            )

    async def levels(self, session: AsyncSession, keys: Iterable[str]) -> dict[str, int]:
        """Read the counters in one query."""
        wanted = list(keys)
        if not wanted:
            return {}
        rows = await session.execute(
            select(Counter.key, Counter.used).where(Counter.key.in_(wanted))
        )
        return dict.fromkeys(wanted, 0) | {row.key: row.used for row in rows}


# KEYS: the counters; ARGV: loaded marker, journal hash, owner, journal entry, then (amount,
# limit) per key. Checks every key before raising any, so a refusal takes nothing. Returns 0, the
# 1-based index of the first key that would pass its limit, or -1 when the counters are not
# loaded (the marker is missing: an empty Redis).
_TAKE = """
if redis.call('EXISTS', ARGV[1]) == 0 then return -1 end
for i, key in ipairs(KEYS) do
  local used = tonumber(redis.call('GET', key) or '0')
  if used + tonumber(ARGV[3 + 2 * i]) > tonumber(ARGV[4 + 2 * i]) then return i end
end
for i, key in ipairs(KEYS) do redis.call('INCRBY', key, ARGV[3 + 2 * i]) end
redis.call('HSET', ARGV[2], ARGV[3], ARGV[4])
return 0
"""

# KEYS: counters; ARGV: the loaded marker (empty: not yet, more batches follow), then the
# recorded amount per key. Raises each counter to its record (never lowers one: a take admitted
# since the record was read stays counted), then sets the marker. Returns how many were raised.
_LOAD = """
local raised = 0
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') < tonumber(ARGV[i + 1]) then
    redis.call('SET', key, ARGV[i + 1])
    raised = raised + 1
  end
end
if ARGV[1] ~= '' then redis.call('SET', ARGV[1], '1') end
return raised
"""

LOAD_BATCH = 1000
"""Counters loaded per script call: a shop with many per-customer counters does not hold Redis
in one long script; the marker is set with the last batch."""

# KEYS: journal hash; ARGV: owner, then (key, amount) pairs. Gives back only if the entry was
# still there, so two sweepers settling the same crash give back once.
_UNDO = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
for i = 2, #ARGV, 2 do
  if redis.call('DECRBY', ARGV[i], ARGV[i + 1]) < 0 then redis.call('SET', ARGV[i], 0) end
end
return 1
"""


# KEYS: counters; ARGV: amounts. Lowers each, never below zero.
_GIVE = """
for i, key in ipairs(KEYS) do
  if redis.call('DECRBY', key, ARGV[i]) < 0 then redis.call('SET', key, 0) end
end
return 0
"""


class RedisCounters(Counters):
    """Counters in Redis, taken all-or-nothing by a Lua script, with a crash journal."""

    transactional = False

    def __init__(self, redis: Redis, prefix: str = "promoguard:") -> None:
        self._redis = redis
        self._prefix = prefix + "counter:"
        self._journal = prefix + "journal"
        self._marker = prefix + "counters:loaded"
        self._take = redis.register_script(_TAKE)
        self._load = redis.register_script(_LOAD)
        self._undo = redis.register_script(_UNDO)
        self._give = redis.register_script(_GIVE)

    def _key(self, key: str) -> str:
        return self._prefix + key

    async def take(
        self,
        session: AsyncSession,
        takes: Sequence[Take],
        owner: str,
    ) -> Take | None:
        """Check and raise every counter in one atomic script; journal what ``owner`` took."""
        return await self._take_all(takes, owner)

    def take_plain(self, sql: PlainSQL, takes: Sequence[Take], owner: str) -> Take | None:
        """:meth:`take`, its script run on the event loop while the transaction waits."""
        return sql.wait(self._take_all(takes, owner))

    def levels_plain(self, sql: PlainSQL, keys: Iterable[str]) -> dict[str, int]:
        """:meth:`levels`, read on the event loop while the transaction waits."""
        return sql.wait(self._levels(keys))

    async def _take_all(self, takes: Sequence[Take], owner: str) -> Take | None:
        ordered = _sorted(takes)
        if not ordered:
            return None
        entry = orjson.dumps({"at": time.time(), "parts": [(t.key, t.amount) for t in ordered]})
        args: list[str | int | bytes] = [self._marker, self._journal, owner, entry]
        for t in ordered:
            args += [t.amount, t.limit]
        try:
            refused = int(await self._take(keys=[self._key(t.key) for t in ordered], args=args))
        except RedisError as exc:
            raise _unavailable(exc) from exc
        if refused < 0:
            raise UnavailableError(
                "counters_not_loaded",
                "the counter store lost its data and is being loaded again from the "
                "reservations; nothing was taken: retry in a moment",
            )
        return ordered[refused - 1] if refused else None

    async def loaded(self) -> bool:
        """Whether the marker :meth:`load` writes is there (absent: an empty Redis)."""
        return bool(await self._redis.exists(self._marker))

    async def load(self, record: Mapping[str, int]) -> int:
        """Raise each counter to its recorded amount, :data:`LOAD_BATCH` at a time, and mark
        the counters loaded with the last batch (takes stay refused until then)."""
        keys = list(record)
        raised = 0
        for start in range(0, max(len(keys), 1), LOAD_BATCH):
            batch = keys[start : start + LOAD_BATCH]
            last = start + LOAD_BATCH >= len(keys)
            raised += int(
                await self._load(
                    keys=[self._key(key) for key in batch],
                    args=[self._marker if last else "", *(record[key] for key in batch)],
                )
            )
        return raised

    async def committed(self, owner: str) -> None:
        """The order is on record: its journal entry is no longer needed."""
        await cast(Awaitable[int], self._redis.hdel(self._journal, owner))

    async def give_back(self, session: AsyncSession, parts: Sequence[Part]) -> None:
        """Lower the counters in one atomic script (never below zero, like the SQL store)."""
        if not parts:
            return
        await self._give(
            keys=[self._key(key) for key, _ in parts], args=[amount for _, amount in parts]
        )

    async def undo(self, owner: str) -> bool:
        """Give back what ``owner`` took, if its journal entry is still there (once only)."""
        entry = await cast(Awaitable[bytes | None], self._redis.hget(self._journal, owner))
        if entry is None:
            return False
        args: list[str | int] = [owner]
        for key, amount in orjson.loads(entry)["parts"]:
            args += [self._key(key), amount]
        return bool(await self._undo(keys=[self._journal], args=args))

    async def settle(
        self, older_than: float, on_record: Callable[[list[str]], Awaitable[set[str]]]
    ) -> int:
        """Settle journal entries older than ``older_than`` seconds, left by a process that
        died between its take and its commit: an order on record keeps what it took (the entry
        is dropped), an order that never committed gives it back. Returns how many were given
        back."""
        entries = await cast(Awaitable[dict[bytes, bytes]], self._redis.hgetall(self._journal))
        cutoff = time.time() - older_than
        stale = [
            owner.decode() for owner, entry in entries.items() if orjson.loads(entry)["at"] < cutoff
        ]
        if not stale:
            return 0
        kept = await on_record(stale)
        given = 0
        for owner in stale:
            if owner in kept:
                await self.committed(owner)
            elif await self.undo(owner):
                given += 1
        return given

    async def levels(self, session: AsyncSession, keys: Iterable[str]) -> dict[str, int]:
        """Read the counters with one MGET."""
        return await self._levels(keys)

    async def _levels(self, keys: Iterable[str]) -> dict[str, int]:
        wanted = list(keys)
        if not wanted:
            return {}
        try:
            values = await self._redis.mget([self._key(k) for k in wanted])
        except RedisError as exc:
            raise _unavailable(exc) from exc
        return {k: int(v or 0) for k, v in zip(wanted, values, strict=True)}


def _unavailable(exc: RedisError) -> UnavailableError:
    return UnavailableError(
        "counter_store_unavailable",
        f"the counter store (Redis) did not answer ({type(exc).__name__}): retry in a moment",
    )
