"""Database.write_plain: one write transaction of plain SQL on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError

from promoguard.orders.models import Counter, IdempotencyRecord
from promoguard.store import migrate
from promoguard.store.db import Database, PlainSQL

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
