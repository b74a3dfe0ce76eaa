"""Counters against limits, on every backend: SqlCounters on SQLite and PostgreSQL (inside the
caller's transaction) and RedisCounters on the real Redis (one Lua script, with a crash journal).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from redis.asyncio import Redis
from tests.service.conftest import POSTGRES_URL, REDIS_URL, _postgres_or_skip, _unreachable

from promoguard.errors import UnavailableError
from promoguard.store import counters as counters_module
from promoguard.store import migrate
from promoguard.store.counters import Counters, Part, RedisCounters, SqlCounters, Take
from promoguard.store.db import Database


class _RefusedError(Exception):
    """Rolls a SQL transaction back after a refused take, as the checkout does."""


class Store:
    """One backend behind the calls the checkout makes, each in its own unit of work."""

    def __init__(self, counters: Counters, db: Database | None) -> None:
        self.counters = counters
        self._db = db

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[Any]:
        if self._db is None:  # Redis needs no session
            yield None
            return
        async with self._db.write() as session:
            yield session

    async def take(self, takes: Sequence[Take], owner: str = "order-1") -> Take | None:
        try:
            async with self._session() as session:
                refused = await self.counters.take(session, takes, owner)
                if refused is not None:
                    raise _RefusedError(refused)
        except _RefusedError as exc:
            return exc.args[0]
        return None

    async def give_back(self, parts: Sequence[Part]) -> None:
        async with self._session() as session:
            await self.counters.give_back(session, parts)

    async def levels(self, *keys: str) -> dict[str, int]:
        async with self._session() as session:
            return await self.counters.levels(session, keys)


Scenario = Callable[[Store], Awaitable[None]]
Runner = Callable[[Scenario], None]


@pytest.fixture
def redis_prefix() -> str:
    return f"test-counters:{uuid.uuid4().hex}:"


def _redis_or_skip() -> None:
    import redis  # noqa: PLC0415

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        _unreachable("Redis", REDIS_URL, exc)


async def _drop_keys(redis: Redis, prefix: str) -> None:
    keys = [key async for key in redis.scan_iter(match=prefix + "*")]
    if keys:
        await redis.delete(*keys)


def _redis_runner(prefix: str, *, loaded: bool = True) -> Runner:
    """Runs scenarios against RedisCounters under ``prefix``: loaded, as every worker loads
    them when it starts, or not (``loaded=False``: an empty Redis)."""
    _redis_or_skip()

    def run(scenario: Scenario) -> None:
        async def main() -> None:
            redis = Redis.from_url(REDIS_URL)
            try:
                counters = RedisCounters(redis, prefix)
                if loaded:
                    await counters.load({})
                await scenario(Store(counters, None))
            finally:
                await _drop_keys(redis, prefix)
                await redis.aclose()

        asyncio.run(main())

    return run


def _sql_runner(url: str) -> Runner:
    def run(scenario: Scenario) -> None:
        async def main() -> None:
            db = Database(url)
            try:
                await scenario(Store(SqlCounters(), db))
            finally:
                await db.dispose()

        asyncio.run(main())

    return run


@contextmanager
def _sql_store(kind: str, tmp_path: Path) -> Iterator[Runner]:
    """A fresh, migrated database of ``kind`` (its own file or PostgreSQL schema)."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'counters.db'}"
        migrate.upgrade(url)
        yield _sql_runner(url)
        return
    _postgres_or_skip()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    plain = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
        migrate.upgrade(url)
        yield _sql_runner(url)
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path, redis_prefix: str) -> Iterator[Runner]:
    """Runs a scenario against a fresh store of each backend."""
    if request.param == "redis":
        yield _redis_runner(redis_prefix)
        return
    with _sql_store(request.param, tmp_path) as run:
        yield run


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runner]:
    """Runs a scenario against SqlCounters on each database."""
    with _sql_store(request.param, tmp_path) as run:
        yield run


@pytest.fixture
def redis_store(redis_prefix: str) -> Runner:
    """Runs a scenario against RedisCounters (the journal is Redis's alone)."""
    return _redis_runner(redis_prefix)


def stock(amount: int, limit: int = 10) -> Take:
    return Take("stock:ms", amount, limit, "flash_sale_sold_out")


def budget(amount: int, limit: int = 1000) -> Take:
    return Take("budget:mj", amount, limit, "budget_exhausted")


# -- every backend ----------------------------------------------------------------------------


def test_unknown_counters_are_at_zero(store: Runner) -> None:
    async def scenario(s: Store) -> None:
        assert await s.levels("stock:ms", "budget:mj") == {"stock:ms": 0, "budget:mj": 0}
        assert await s.levels() == {}

    store(scenario)


def test_a_take_raises_every_counter_it_names(store: Runner) -> None:
    async def scenario(s: Store) -> None:
        assert await s.take([stock(3), budget(250)]) is None
        assert await s.take([stock(2), budget(100)], owner="order-2") is None

        assert await s.levels("stock:ms", "budget:mj") == {"stock:ms": 5, "budget:mj": 350}

    store(scenario)


def test_a_take_exactly_at_the_limit_succeeds_and_one_more_is_refused(store: Runner) -> None:
    async def scenario(s: Store) -> None:
        assert await s.take([stock(7)]) is None
        assert await s.take([stock(3)], owner="order-2") is None  # 10 of 10
        assert await s.levels("stock:ms") == {"stock:ms": 10}

        refused = await s.take([stock(1)], owner="order-3")

        assert refused == stock(1)
        assert refused.refusal == "flash_sale_sold_out"
        assert await s.levels("stock:ms") == {"stock:ms": 10}

    store(scenario)


def test_a_first_take_above_its_limit_is_refused(store: Runner) -> None:
    async def scenario(s: Store) -> None:
        assert await s.take([stock(11)]) == stock(11)
        assert await s.levels("stock:ms") == {"stock:ms": 0}

    store(scenario)


def test_takes_are_all_or_nothing(store: Runner) -> None:
    async def scenario(s: Store) -> None:
        assert await s.take([budget(900)]) is None

        # The stock fits, the budget does not: neither is taken. Keys are taken in sorted
        # order, so the refused key comes first here and last below: both leave nothing.
        refused = await s.take([stock(4), budget(200)], owner="order-2")
        assert refused == budget(200)
        assert await s.levels("stock:ms", "budget:mj") == {"stock:ms": 0, "budget:mj": 900}

        late = Take("z-cap:mj", 2, 1, "redemption_cap_reached")
        refused = await s.take([stock(4), late], owner="order-3")
        assert refused == late
        assert await s.levels("stock:ms", "z-cap:mj") == {"stock:ms": 0, "z-cap:mj": 0}

    store(scenario)


def test_a_refused_take_takes_nothing_even_from_keys_that_fit(store: Runner) -> None:
    async def scenario(s: Store) -> None:
        first = Take("a:first", 1, 5, "customer_limit_reached")
        over = Take("b:second", 3, 2, "identity_limit_reached")

        assert await s.take([first, over]) == over
        assert await s.levels("a:first", "b:second") == {"a:first": 0, "b:second": 0}

    store(scenario)


def test_give_back_lowers_the_counters_and_frees_the_room(store: Runner) -> None:
    async def scenario(s: Store) -> None:
        assert await s.take([stock(10), budget(600)]) is None
        assert await s.take([stock(1)], owner="order-2") == stock(1)

        await s.give_back([("stock:ms", 4), ("budget:mj", 600)])

        assert await s.levels("stock:ms", "budget:mj") == {"stock:ms": 6, "budget:mj": 0}
        assert await s.take([stock(4)], owner="order-3") is None
        assert await s.take([stock(1)], owner="order-4") == stock(1)

    store(scenario)


def test_give_back_of_nothing_changes_nothing(store: Runner) -> None:
    async def scenario(s: Store) -> None:
        assert await s.take([stock(2)]) is None

        await s.give_back([])

        assert await s.levels("stock:ms") == {"stock:ms": 2}

    store(scenario)


def test_an_empty_take_succeeds_and_changes_nothing(store: Runner) -> None:
    async def scenario(s: Store) -> None:
        assert await s.take([]) is None
        assert await s.levels("stock:ms") == {"stock:ms": 0}

    store(scenario)


# -- the Redis journal ------------------------------------------------------------------------


class OnRecord:
    """The sweeper's question "which of these orders committed?", answered from a set."""

    def __init__(self, committed: set[str]) -> None:
        self.committed = committed
        self.asked: list[list[str]] = []

    async def __call__(self, owners: list[str]) -> set[str]:
        self.asked.append(sorted(owners))
        return self.committed & set(owners)


async def _journal(s: Store) -> dict[bytes, bytes]:
    counters = s.counters
    assert isinstance(counters, RedisCounters)
    return await counters._redis.hgetall(counters._journal)  # type: ignore[misc]


def test_settle_gives_back_a_take_whose_owner_never_committed(redis_store: Runner) -> None:
    async def scenario(s: Store) -> None:
        assert await s.take([stock(3), budget(200)], owner="crashed") is None
        assert set(await _journal(s)) == {b"crashed"}
        on_record = OnRecord(committed=set())

        given = await s.counters.settle(older_than=0, on_record=on_record)

        assert given == 1
        assert on_record.asked == [["crashed"]]
        assert await s.levels("stock:ms", "budget:mj") == {"stock:ms": 0, "budget:mj": 0}
        assert await _journal(s) == {}
        assert await s.counters.settle(older_than=0, on_record=on_record) == 0
        assert await s.levels("stock:ms") == {"stock:ms": 0}

    redis_store(scenario)


def test_settle_keeps_a_take_whose_owner_is_on_record_and_drops_the_entry(
    redis_store: Runner,
) -> None:
    async def scenario(s: Store) -> None:
        assert await s.take([stock(3)], owner="committed-but-crashed") is None
        on_record = OnRecord(committed={"committed-but-crashed"})

        given = await s.counters.settle(older_than=0, on_record=on_record)

        assert given == 0
        assert await s.levels("stock:ms") == {"stock:ms": 3}
        assert await _journal(s) == {}
        # Nothing left to ask about: the next settle does not even ask.
        assert await s.counters.settle(older_than=0, on_record=on_record) == 0
        assert len(on_record.asked) == 1
        assert await s.levels("stock:ms") == {"stock:ms": 3}

    redis_store(scenario)


def test_settle_sorts_several_owners_by_whether_they_are_on_record(redis_store: Runner) -> None:
    async def scenario(s: Store) -> None:
        assert await s.take([stock(2)], owner="kept") is None
        assert await s.take([stock(3)], owner="lost") is None

        given = await s.counters.settle(older_than=0, on_record=OnRecord(committed={"kept"}))

        assert given == 1
        assert await s.levels("stock:ms") == {"stock:ms": 2}
        assert await _journal(s) == {}

    redis_store(scenario)


def test_settle_leaves_fresh_entries_alone(redis_store: Runner) -> None:
    async def scenario(s: Store) -> None:
        assert await s.take([stock(3)], owner="in-flight") is None
        on_record = OnRecord(committed=set())

        assert await s.counters.settle(older_than=60, on_record=on_record) == 0

        assert on_record.asked == []
        assert await s.levels("stock:ms") == {"stock:ms": 3}
        assert set(await _journal(s)) == {b"in-flight"}

    redis_store(scenario)


def test_committed_clears_the_journal_entry_and_keeps_the_take(redis_store: Runner) -> None:
    async def scenario(s: Store) -> None:
        assert await s.take([stock(3)], owner="paid") is None

        await s.counters.committed("paid")

        assert await _journal(s) == {}
        assert await s.counters.undo("paid") is False
        assert await s.counters.settle(older_than=0, on_record=OnRecord(set())) == 0
        assert await s.levels("stock:ms") == {"stock:ms": 3}

    redis_store(scenario)


def test_undo_twice_gives_back_once(redis_store: Runner) -> None:
    async def scenario(s: Store) -> None:
        assert await s.take([stock(3)], owner="first") is None
        assert await s.take([stock(4), budget(100)], owner="failed") is None

        assert await s.counters.undo("failed") is True
        assert await s.counters.undo("failed") is False

        assert await s.levels("stock:ms", "budget:mj") == {"stock:ms": 3, "budget:mj": 0}
        assert set(await _journal(s)) == {b"first"}

    redis_store(scenario)


def test_a_refused_take_writes_no_journal_entry(redis_store: Runner) -> None:
    async def scenario(s: Store) -> None:
        assert await s.take([stock(11)], owner="refused") == stock(11)

        assert await _journal(s) == {}
        assert await s.counters.undo("refused") is False

    redis_store(scenario)


def test_an_empty_redis_refuses_every_take_until_loaded_from_the_record(redis_prefix: str) -> None:
    async def scenario(s: Store) -> None:
        assert await s.counters.loaded() is False
        with pytest.raises(UnavailableError) as refused:
            await s.take([stock(1)], owner="too-soon")
        assert refused.value.code == "counters_not_loaded"
        assert refused.value.status == 503
        assert await s.levels("stock:ms") == {"stock:ms": 0}
        assert await _journal(s) == {}

        assert await s.counters.load({"stock:ms": 8, "budget:mj": 0}) == 1

        assert await s.counters.loaded() is True
        assert await s.levels("stock:ms", "budget:mj") == {"stock:ms": 8, "budget:mj": 0}
        assert await s.take([stock(3)]) == stock(3)  # 8 + 3 > 10: the record counts
        assert await s.take([stock(2)]) is None

    _redis_runner(redis_prefix, loaded=False)(scenario)


def test_a_large_record_is_loaded_in_batches_and_marked_loaded_with_the_last(
    redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(counters_module, "LOAD_BATCH", 2)
    record = {f"units:ms:c-{i}": i + 1 for i in range(5)}

    async def scenario(s: Store) -> None:
        counters = s.counters
        assert isinstance(counters, RedisCounters)
        script, seen = counters._load, []

        async def spied(**kwargs: Any) -> Any:
            raised = await script(**kwargs)
            seen.append((len(kwargs["keys"]), await counters.loaded()))
            return raised

        counters._load = spied  # type: ignore[assignment]

        assert await counters.load(record) == 5

        assert seen == [(2, False), (2, False), (1, True)]
        assert await s.levels(*record) == record

    _redis_runner(redis_prefix, loaded=False)(scenario)


def test_loading_never_lowers_a_counter(redis_store: Runner) -> None:
    async def scenario(s: Store) -> None:
        assert await s.take([stock(5)], owner="admitted") is None

        # A take admitted after the record was read is not undone by loading the record.
        assert await s.counters.load({"stock:ms": 3, "budget:mj": 40}) == 1

        assert await s.levels("stock:ms", "budget:mj") == {"stock:ms": 5, "budget:mj": 40}

    redis_store(scenario)


def test_a_redis_that_does_not_answer_refuses_takes_and_reads_with_503() -> None:
    async def main() -> None:
        # Nothing listens on port 1: every call fails to connect.
        redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
        counters = RedisCounters(redis, "unreachable:")
        try:
            for call in (
                counters.take(None, [stock(1)], "order"),  # type: ignore[arg-type]
                counters.levels(None, ["stock:ms"]),  # type: ignore[arg-type]
            ):
                with pytest.raises(UnavailableError) as refused:
                    await call
                assert refused.value.code == "counter_store_unavailable"
                assert refused.value.status == 503
        finally:
            await redis.aclose()

    asyncio.run(main())


def test_sql_counters_have_no_journal(sql_store: Runner) -> None:
    async def scenario(s: Store) -> None:
        assert await s.take([stock(3)], owner="order") is None
        # A rollback undoes a SQL take: there is nothing to undo or settle afterwards.
        assert await s.counters.undo("order") is False
        assert await s.counters.settle(older_than=0, on_record=OnRecord(set())) == 0
        assert await s.levels("stock:ms") == {"stock:ms": 3}

    sql_store(scenario)


def test_sql_give_back_never_lowers_a_counter_below_zero(sql_store: Runner) -> None:
    async def scenario(s: Store) -> None:
        assert await s.take([stock(2)]) is None

        await s.give_back([("stock:ms", 5)])

        assert await s.levels("stock:ms") == {"stock:ms": 0}
        # Below zero, the stock would sell 13 units of 10.
        assert await s.take([stock(10)], owner="order-2") is None
        assert await s.take([stock(1)], owner="order-3") == stock(1)

    sql_store(scenario)
