"""Database.write_plain: one write transaction of plain SQL on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from promoguard.orders.models import Counter, IdempotencyRecord
from promoguard.store import migrate
from promoguard.store.db import PLAIN_CONNECTIONS, Database, PlainSQL

Scenario = Callable[[Database], Awaitable[None]]


def run(url: str, scenario: Scenario) -> None:
    async def main() -> None:
        db = Database(url)
        try:
            await scenario(db)
        finally:
            await db.dispose()

    asyncio.run(main())


def _started() -> None:
    return None


async def _set(event: asyncio.Event) -> None:
    event.set()  # on the event loop: an asyncio.Event is not to be set from another thread


def _insert(key: str, used: int) -> Callable[[PlainSQL, None], None]:
    def work(sql: PlainSQL, _: None) -> None:
        sql.run('INSERT INTO counters ("key", used) VALUES (?, ?)', (key, used))

    return work


async def _counters(db: Database) -> dict[str, int]:
    async with db.read() as session:
        return {row.key: row.used for row in (await session.scalars(select(Counter))).all()}


def test_a_plain_transaction_is_committed_whole_or_not_at_all(database_url):
    async def scenario(db: Database) -> None:
        def half_then_fail(sql: PlainSQL, _: None) -> None:
            _insert("a", 1)(sql, None)
            raise RuntimeError("stop")

        with pytest.raises(RuntimeError):
            await db.write_plain(half_then_fail, _started)
        assert await _counters(db) == {}
        await db.write_plain(_insert("a", 2), _started)
        assert await _counters(db) == {"a": 2}

    run(database_url, scenario)


def test_driver_errors_are_raised_as_sqlalchemy_errors_and_roll_back(database_url):
    async def scenario(db: Database) -> None:
        await db.write_plain(_insert("a", 1), _started)

        def twice(sql: PlainSQL, _: None) -> None:
            _insert("b", 1)(sql, None)
            _insert("a", 1)(sql, None)  # the key exists

        with pytest.raises(IntegrityError):
            await db.write_plain(twice, _started)
        assert await _counters(db) == {"a": 1}

    run(database_url, scenario)


def test_instants_and_json_read_back_through_the_orm(database_url):
    at = datetime(2026, 11, 11, 0, 0, 0, tzinfo=UTC)
    answer: dict[str, Any] = {"id": "o-1", "lines": [{"sku": "a", "amount": 100}], "n": None}

    async def scenario(db: Database) -> None:
        def work(sql: PlainSQL, _: None) -> None:
            sql.run(
                "INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                ("orders", "k", "h", 201, sql.json(answer), sql.instant(at)),
            )

        await db.write_plain(work, _started)
        async with db.read() as session:
            record = await session.get(IdempotencyRecord, ("orders", "k"))
            assert record is not None
            assert (record.response, record.created_at) == (answer, at)
            later = await session.scalar(
                select(IdempotencyRecord.key).where(IdempotencyRecord.created_at >= at)
            )
            assert later == "k"

    run(database_url, scenario)


def test_values_that_look_like_sql_are_stored_as_given(database_url):
    """Every value is quoted by the driver, whatever it holds: quotes, backslashes, marks, a
    statement separator, a comment; and a value PostgreSQL cannot hold (a NUL) is refused
    with nothing written."""
    nasty = ["it's", "back\\slash \\' end", "%s and %(x)s and ?", "a'; DROP TABLE counters; --"]
    nasty += ["$$dollar$$", "多语言 ✓", "'", ""]

    async def scenario(db: Database) -> None:
        def work(sql: PlainSQL, _: None) -> list[Any]:
            sql.insert("counters", ("key", "used"), [(k, -i) for i, k in enumerate(nasty)])
            sql.run('UPDATE counters SET used = used - ? WHERE "key" = ?', (-1, nasty[3]))
            return sql.all('SELECT "key", used FROM counters WHERE "key" IN (?, ?)', nasty[:2])

        found = await db.write_plain(work, _started)
        assert sorted(found) == sorted([(nasty[0], 0), (nasty[1], -1)])
        expected = {k: -i for i, k in enumerate(nasty)}
        expected[nasty[3]] += 1
        assert await _counters(db) == expected

        if db.is_sqlite:
            return
        with pytest.raises(DataError):
            await db.write_plain(_insert("nul \x00 inside", 1), _started)
        assert await _counters(db) == expected

    run(database_url, scenario)


def test_a_row_count_and_rows_come_back(database_url):
    async def scenario(db: Database) -> None:
        await db.write_plain(_insert("a", 1), _started)

        def work(sql: PlainSQL, started: str) -> tuple[int, int, list[Any]]:
            changed = sql.count('UPDATE counters SET used = used + 1 WHERE "key" = ?', (started,))
            missed = sql.count('UPDATE counters SET used = 0 WHERE "key" = ?', ("nothing",))
            return changed, missed, sql.all('SELECT "key", used FROM counters')

        assert await db.write_plain(work, lambda: "a") == (1, 0, [("a", 2)])

    run(database_url, scenario)


def test_sqlite_starts_again_on_a_new_connection_after_a_database_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    migrate.upgrade(url)

    async def scenario(db: Database) -> None:
        def broken(sql: PlainSQL, _: None) -> None:
            sql.run("SELECT * FROM no_such_table")

        with pytest.raises(OperationalError):
            await db.write_plain(broken, _started)
        await db.write_plain(_insert("a", 1), _started)
        assert await _counters(db) == {"a": 1}

    run(url, scenario)


def test_insert_writes_every_row_in_the_order_given(database_url):
    rows = [(f"k{n}", n) for n in (3, 1, 2)]

    async def scenario(db: Database) -> None:
        def work(sql: PlainSQL, _: None) -> list[Any]:
            sql.insert("counters", ("key", "used"), rows)
            sql.insert("counters", ("key", "used"), [])  # nothing to insert: no statement
            return sql.all('SELECT "key", used FROM counters')

        assert sorted(await db.write_plain(work, _started)) == sorted(rows)
        assert await _counters(db) == dict(rows)

    run(database_url, scenario)


def test_the_orm_still_gets_a_transaction_on_a_connection_a_plain_one_used(database_url):
    """On PostgreSQL the plain transaction runs its own BEGIN and COMMIT on a pooled
    connection: the connection goes back as the ORM expects it (a failed unit of work is
    rolled back, not committed statement by statement)."""

    async def scenario(db: Database) -> None:
        def broken(sql: PlainSQL, _: None) -> None:
            _insert("a", 1)(sql, None)
            sql.run("SELECT * FROM no_such_table")

        with pytest.raises(Exception, match="no_such_table"):
            await db.write_plain(broken, _started)
        await db.write_plain(_insert("b", 1), _started)

        async def unit_that_fails() -> None:
            async with db.write() as session:
                session.add(Counter(key="c", used=1))
                await session.flush()
                raise RuntimeError("stop")

        with pytest.raises(RuntimeError):
            await unit_that_fails()
        assert await _counters(db) == {"b": 1}

    run(database_url, scenario)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite: no lengths
def test_postgresql_refuses_a_value_too_long_for_its_column_instead_of_cutting_it(database_url):
    async def scenario(db: Database) -> None:
        def work(sql: PlainSQL, _: None) -> None:
            sql.insert("counters", ("key", "used"), [("k" * 500, 1)])

        with pytest.raises(DataError):
            await db.write_plain(work, _started)
        assert await _counters(db) == {}

    run(database_url, scenario)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite: on its thread
def test_a_plain_transaction_cancelled_half_way_leaves_nothing_and_the_next_one_works(
    database_url,
):
    async def scenario(db: Database) -> None:
        halfway = asyncio.Event()

        def slow(sql: PlainSQL, _: None) -> None:
            sql.count('INSERT INTO counters ("key", used) VALUES (?, ?)', ("a", 1))  # sent
            sql.wait(_set_then_sleep(halfway))

        task = asyncio.create_task(db.write_plain(slow, _started))
        await halfway.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await db.write_plain(_insert("b", 1), _started)
        assert await _counters(db) == {"b": 1}

    run(database_url, scenario)


async def _set_then_sleep(event: asyncio.Event) -> None:
    event.set()
    await asyncio.sleep(30)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite: one connection
def test_plain_transactions_keep_their_connections_and_drop_them_all_when_the_server_does(
    database_url,
):
    """Consecutive plain transactions run on the same connection (none is opened or checked out
    of a pool per transaction); when the server drops them (a restart, say), one transaction
    fails and the next runs on a new connection, not on another dropped one."""

    async def scenario(db: Database) -> None:
        both_in = asyncio.Barrier(2)

        def backend(sql: PlainSQL, _: None) -> int:
            row = sql.one("SELECT pg_backend_pid()")
            assert row is not None
            return int(row[0])

        def backend_together(sql: PlainSQL, _: None) -> int:
            sql.wait(both_in.wait())  # two transactions at once: two connections kept
            return backend(sql, None)

        kept = set(
            await asyncio.gather(
                db.write_plain(backend_together, _started),
                db.write_plain(backend_together, _started),
            )
        )
        assert len(kept) == 2
        assert await db.write_plain(backend, _started) in kept
        assert await db.write_plain(backend, _started) in kept
        async with db.read() as session:
            for pid in kept:  # and wait (up to 5 s) until each is gone
                gone = await session.scalar(
                    text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid}
                )
                assert gone
        with pytest.raises(OperationalError):
            await db.write_plain(backend, _started)
        assert await db.write_plain(backend, _started) not in kept

    run(database_url, scenario)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite: one at a time
def test_at_most_plain_connections_transactions_run_at_once_and_the_rest_wait(database_url):
    async def scenario(db: Database) -> None:
        inside = {"now": 0, "most": 0}
        counting = threading.Lock()  # each transaction's work runs on a driver thread
        full = asyncio.Event()

        def work(sql: PlainSQL, _: None) -> int:
            with counting:
                inside["now"] += 1
                inside["most"] = max(inside["most"], inside["now"])
                now = inside["now"]
            if now == PLAIN_CONNECTIONS:
                sql.wait(_set(full))
            sql.wait(full.wait())  # hold the connection until every slot is taken
            row = sql.one("SELECT pg_backend_pid()")
            with counting:
                inside["now"] -= 1
            assert row is not None
            return int(row[0])

        backends = await asyncio.gather(
            *(db.write_plain(work, _started) for _ in range(2 * PLAIN_CONNECTIONS))
        )
        assert inside["most"] == PLAIN_CONNECTIONS
        assert len(set(backends)) == PLAIN_CONNECTIONS  # the waiting ones reused them

    run(database_url, scenario)
