"""The embedded nonce store: a SQLite file every worker process on the machine shares."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from promoguard.security import nonces
from promoguard.security.nonces import SqliteNonces, StoreUnavailableError, nonce_file
from promoguard.store import migrate
from promoguard.store.db import Database

WINDOW = timedelta(minutes=10)
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def uses(store: SqliteNonces, pairs: list[tuple[str, str]], now: datetime = NOW) -> list[bool]:
    async def run() -> list[bool]:
        return list(await asyncio.gather(*(store.first_use(k, n, now, WINDOW) for k, n in pairs)))

    return asyncio.run(run())


def test_each_nonce_is_accepted_once_even_when_it_arrives_many_times_at_once(tmp_path):
    store = SqliteNonces(tmp_path / "shop.nonces.db")

    same = uses(store, [("pk_a", "nonce-same-1")] * 20)
    distinct = uses(store, [("pk_a", f"nonce-{n:04d}") for n in range(50)])
    again = uses(store, [("pk_a", f"nonce-{n:04d}") for n in range(5)])
    other_key = uses(store, [("pk_b", "nonce-0000")])

    assert same.count(True) == 1
    assert all(distinct)
    assert not any(again)
    assert other_key == [True]  # nonces are per key


def test_a_nonce_used_on_one_worker_is_refused_on_another(tmp_path):
    one, two = SqliteNonces(tmp_path / "n.db"), SqliteNonces(tmp_path / "n.db")

    assert uses(one, [("pk_a", "nonce-0001")]) == [True]
    assert uses(two, [("pk_a", "nonce-0001")]) == [False]
    assert uses(two, [("pk_a", "nonce-0002")]) == [True]
    assert uses(one, [("pk_a", "nonce-0002")]) == [False]


def _worker(path: str, count: int, start: Any, out: Any) -> None:
    nonces.SWEEP_EVERY = 8  # sweeps (which may find the file busy) between the nonces too
    store = SqliteNonces(Path(path))
    pairs = [("pk_a", f"n-{n:05d}") for n in range(count)]
    half = count * 4 // 5

    async def in_small_batches() -> list[bool]:
        found: list[bool] = []
        for n in range(half, count, 7):
            found += await asyncio.gather(
                *(store.first_use(k, nonce, NOW, WINDOW) for k, nonce in pairs[n : n + 7])
            )
        return found

    start.wait()  # every process ready: they race
    fresh = uses(store, pairs[:half])  # one batch, of several statements
    fresh += asyncio.run(in_small_batches())
    out.put([n for n, won in enumerate(fresh) if won])


def test_worker_processes_racing_on_the_same_nonces_accept_each_exactly_once(tmp_path):
    count, workers = 7500, 3
    context = multiprocessing.get_context("spawn")
    start, out = context.Barrier(workers), context.Queue()
    processes = [
        context.Process(target=_worker, args=(str(tmp_path / "n.db"), count, start, out))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    won = [n for _ in processes for n in out.get(timeout=120)]
    for process in processes:
        process.join(timeout=60)

    assert sorted(won) == list(range(count))  # every nonce accepted, and only once


class _BusyOnce(sqlite3.Connection):
    """A connection whose second nonce statement finds the file locked, once."""

    statements = 0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
        if sql.startswith("INSERT INTO nonces"):
            _BusyOnce.statements += 1
            if _BusyOnce.statements == 2:
                busy = sqlite3.OperationalError("database is locked")
                busy.sqlite_errorcode = sqlite3.SQLITE_BUSY
                raise busy
        return super().execute(sql, *args)


def test_a_batch_that_finds_the_file_busy_part_way_is_recorded_whole_on_its_retry(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(nonces, "_ROWS_PER_STATEMENT", 2)  # five nonces: three statements
    connect = sqlite3.connect
    monkeypatch.setattr(
        nonces.sqlite3, "connect", lambda *a, **k: connect(*a, **k, factory=_BusyOnce)
    )
    store = SqliteNonces(tmp_path / "n.db")

    first = uses(store, [("pk_a", f"nonce-{n:04d}") for n in range(5)])

    assert _BusyOnce.statements > 3  # it did meet the lock, and tried again
    assert first == [True] * 5  # not its own first statement's nonces taken for replays


def test_a_nonce_counts_again_once_its_window_has_passed(tmp_path):
    store = SqliteNonces(tmp_path / "n.db")

    assert uses(store, [("pk_a", "nonce-0001")]) == [True]
    assert uses(store, [("pk_a", "nonce-0001")], NOW + WINDOW - timedelta(seconds=1)) == [False]
    assert uses(store, [("pk_a", "nonce-0001")], NOW + WINDOW) == [True]
    assert uses(store, [("pk_a", "nonce-0001")], NOW + WINDOW) == [False]


def test_expired_nonces_are_swept_as_new_ones_arrive(tmp_path, monkeypatch):
    monkeypatch.setattr(nonces, "SWEEP_EVERY", 4)
    store = SqliteNonces(tmp_path / "n.db")
    uses(store, [("pk_a", f"old-{n}") for n in range(8)])
    later = NOW + 2 * WINDOW

    uses(store, [("pk_a", f"new-{n}") for n in range(8)], later)

    with sqlite3.connect(tmp_path / "n.db") as conn:
        left = {n for (n,) in conn.execute("SELECT nonce FROM nonces")}
    assert left == {f"new-{n}" for n in range(8)}


def test_a_store_that_cannot_write_refuses_the_request(tmp_path):
    store = SqliteNonces(tmp_path / "missing-directory" / "n.db")

    with pytest.raises(StoreUnavailableError) as refused:
        uses(store, [("pk_a", "nonce-0001")])

    assert (refused.value.status, refused.value.code) == (503, "security_store_unavailable")


def test_a_file_held_locked_too_long_by_another_process_refuses_the_request(tmp_path, monkeypatch):
    monkeypatch.setattr(nonces, "BUSY_SECONDS", 0.05)
    store = SqliteNonces(tmp_path / "n.db")
    assert uses(store, [("pk_a", "nonce-0001")]) == [True]
    other = sqlite3.connect(tmp_path / "n.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer that does not let go
    try:
        with pytest.raises(StoreUnavailableError):
            uses(store, [("pk_a", "nonce-0002")])
    finally:
        other.execute("ROLLBACK")
        other.close()

    assert uses(store, [("pk_a", "nonce-0002")]) == [True]  # not recorded while refused


def test_a_short_wait_for_another_writer_is_not_a_refusal(tmp_path):
    store = SqliteNonces(tmp_path / "n.db")
    assert uses(store, [("pk_a", "nonce-0001")]) == [True]
    other = sqlite3.connect(tmp_path / "n.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")

    async def scenario() -> bool:
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, other.execute, "COMMIT")
        return await store.first_use("pk_a", "nonce-0002", NOW, WINDOW)

    try:
        assert asyncio.run(scenario()) is True
    finally:
        other.close()


def _shop_with_table_nonces(tmp_path: Path, *rows: tuple[str, datetime]) -> str:
    """A migrated embedded database ``shop.db`` whose ``used_nonces`` table holds ``(nonce,
    expires at)`` rows of key ``pk_a`` (what it held before the nonce file existed)."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    migrate.upgrade(url)
    with sqlite3.connect(tmp_path / "shop.db") as conn:
        conn.executemany(
            "INSERT INTO used_nonces VALUES ('pk_a', ?, ?)",
            [(nonce, at.replace(tzinfo=None).isoformat(" ")) for nonce, at in rows],
        )
    return url


def test_the_file_sits_beside_the_embedded_database_and_takes_over_its_table(tmp_path):
    expires = datetime.now(UTC) + timedelta(minutes=5)
    url = _shop_with_table_nonces(
        tmp_path, ("from-the-table", expires), ("stale", expires - timedelta(hours=1))
    )
    db = Database(url)
    store = SqliteNonces.on_host(db)
    now = datetime.now(UTC)

    async def scenario() -> list[bool]:
        try:
            return [
                await store.first_use("pk_a", nonce, now, WINDOW)
                for nonce in ("from-the-table", "stale", "new")
            ]
        finally:
            await db.dispose()
            await store.aclose()

    assert asyncio.run(scenario()) == [False, True, True]
    assert store.path == tmp_path / "shop.nonces.db"
    assert store.path.exists()


def test_a_configured_file_still_takes_over_the_embedded_database_table(tmp_path):
    expires = datetime.now(UTC) + timedelta(minutes=5)
    url = _shop_with_table_nonces(tmp_path, ("from-the-table", expires))
    store = SqliteNonces.on_host(Database(url), tmp_path / "elsewhere.db")

    assert uses(store, [("pk_a", "from-the-table")], datetime.now(UTC)) == [False]
    assert store.path == tmp_path / "elsewhere.db"
    assert not (tmp_path / "shop.nonces.db").exists()


def test_the_file_path_is_made_absolute_once_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = SqliteNonces.on_host(Database("sqlite:///shop.db"))
    configured = SqliteNonces.on_host(Database("sqlite:///shop.db"), "n/here.db")
    in_memory = SqliteNonces.on_host(Database("sqlite://"))
    monkeypatch.chdir(tmp_path.parent)  # a worker that moves later still uses the same files

    assert relative.path == tmp_path / "shop.nonces.db"
    assert configured.path == tmp_path / "n" / "here.db"
    assert in_memory.path is None  # an in-memory database's nonces stay in memory


def test_only_a_database_file_has_a_nonce_file(tmp_path):
    assert nonce_file(Database(f"sqlite:///{tmp_path / 'shop.db'}")) == tmp_path / "shop.nonces.db"
    assert nonce_file(Database(f"sqlite:///{tmp_path / 'shop'}")) == tmp_path / "shop.nonces.db"
    assert nonce_file(Database("sqlite://")) is None
    assert nonce_file(Database("postgresql+psycopg://u@localhost/db")) is None
