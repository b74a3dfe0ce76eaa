"""The database: one async SQLAlchemy code path for SQLite (embedded) and PostgreSQL.

SQLite runs in WAL mode with a busy timeout, and write transactions start with
``BEGIN IMMEDIATE`` so two processes never deadlock upgrading a read lock; reads use their own
engine and plain ``BEGIN`` so they never wait for a writer. PostgreSQL uses one engine for both.

A hot path whose statements are fixed (the checkout) can run its write transaction as plain SQL
on the driver (:meth:`Database.write_plain`): on SQLite the whole transaction is then one call on
the driver's thread instead of a few hops per statement; on PostgreSQL its statements travel
together, a round trip only where a result is needed and one at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NoReturn, TypeVar

import orjson
import psycopg
from psycopg.adapt import Transformer
from sqlalchemy import DateTime, MetaData, TypeDecorator, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import await_, greenlet_spawn

log = logging.getLogger(__name__)

__all__ = [
    "Base",
    "Database",
    "PlainSQL",
    "UTCDateTime",
    "async_url",
    "sync_url",
    "upsert_insert",
    "utcnow",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Every table's base; constraint names are stable so migrations can refer to them."""

    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    """Now, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes stored as UTC on every backend (SQLite has no time zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored: give a time zone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def upsert_insert(session: AsyncSession) -> Callable[..., Any]:
    """The dialect's ``insert`` construct (with ``on_conflict_do_update`` / ``do_nothing``) for
    the database behind ``session``: the same upserts run on SQLite and PostgreSQL."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def sync_url(url: str) -> str:
    """The URL with a synchronous driver (for Alembic): ``sqlite:///x.db``, psycopg 3."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")


def async_url(url: str) -> str:
    """The URL with an asyncio driver: aiosqlite for SQLite, psycopg 3 for PostgreSQL."""
    sync = make_url(sync_url(url))
    if sync.get_backend_name() == "sqlite":
        return sync.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    return sync.render_as_string(hide_password=False)


BUSY_TIMEOUT_MS = 10_000
"""How long a writer waits for another process's write lock before "database is locked"."""
BUSY_PAUSE_SECONDS = 0.0002
"""Between two tries of a plain transaction's ``BEGIN IMMEDIATE`` (see :func:`_begin_immediate`)."""
WAL_SAFETY_PAGES = 20_000
"""Pages of WAL (about 80 MB) after which a writer checkpoints as it commits after all."""
CHECKPOINT_SECONDS = 0.5
"""How often at most the checkpointer copies the WAL back while writes are happening."""
POOL_SIZE = 10
"""PostgreSQL: the connections the engine's pool keeps."""
POOL_OVERFLOW = 10
"""PostgreSQL: the connections the engine's pool opens beyond :data:`POOL_SIZE` under load."""
PLAIN_CONNECTIONS = POOL_SIZE + POOL_OVERFLOW
"""PostgreSQL: at most this many plain write transactions of a process at once, each on a
connection :meth:`Database.write_plain` keeps for itself (the others wait for one)."""


def _sqlite_pragmas(engine: AsyncEngine, *, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event (below) decide how a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        if immediate:
            # Writers do not copy the WAL back into the database file as they commit (that
            # took up to tens of ms inside the write lock every few hundred orders): the
            # process's checkpointer does it beside them (Database._checkpoint). This is only
            # the safety net, should it fall behind.
            cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_SAFETY_PAGES}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


T = TypeVar("T")
S = TypeVar("S")
Row = tuple[Any, ...]


@lru_cache(maxsize=64)  # an order writes the same few instants many times
def _instant(value: datetime, sqlite: bool) -> str:
    if sqlite:
        # Exactly what UTCDateTime stores on SQLite (SQLAlchemy's text format, in UTC), so
        # these rows compare and read back like the ORM's.
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value.astimezone(UTC).isoformat(" ")


def _begin_immediate(cursor: Any) -> None:
    """``BEGIN IMMEDIATE``, tried again every :data:`BUSY_PAUSE_SECONDS` while another process
    holds the write lock, up to the busy timeout. SQLite's own busy handler sleeps longer and
    longer between tries (25 to 100 ms after a few), however soon the lock is free again; a
    plain transaction holds it well under a millisecond."""
    cursor.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                cursor.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                busy = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(BUSY_PAUSE_SECONDS)
    finally:
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


@lru_cache(maxsize=256)
def _template(sql: str) -> tuple[bytes, ...]:
    """A plain statement as the text around its ``?`` marks (it holds no literal question
    mark: see :class:`PlainSQL`)."""
    return tuple(part.encode() for part in sql.split("?"))


class _HeldStatements:
    """psycopg on PostgreSQL, for :meth:`Database.write_plain`: each statement is bound on the
    client, every value quoted by the driver (:meth:`psycopg.abc.Transformer.as_literal`, what
    :meth:`psycopg.AsyncClientCursor.mogrify` does for each value), and held until a result is
    needed; then every statement held goes to the server in one message (the simple query
    protocol runs them in order), one round trip. The transaction's ``BEGIN`` goes with the
    first message and its ``COMMIT`` with the last, so an order whose statements need no answer
    on the way costs two round trips: the first read, and the rest.

    A pipeline of prepared statements costs the driver a send, a poll and some Python for each
    statement: measured with psycopg 3.3, about three times the client CPU of this for a
    transaction of 27 inserts, and no less database CPU. The values are put between the
    statement's pieces here rather than by ``mogrify``, which parses the statement on each call
    (from a cache for a short one): half the client CPU for a row of 13 values.
    """

    __slots__ = ("_cursor", "_held", "_literal")

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        self._literal: Callable[[Any], bytes] = Transformer.from_context(cursor).as_literal
        self._held: list[bytes] = [b"BEGIN"]

    def _bind(self, sql: str, params: Sequence[Any]) -> bytes:
        parts = _template(sql)
        if len(params) != len(parts) - 1:
            raise psycopg.ProgrammingError(
                f"the statement has {len(parts) - 1} marks, {len(params)} values were given"
            )
        literal = self._literal
        bound = [parts[0]]
        for value, part in zip(params, parts[1:], strict=True):
            bound.append(b"NULL" if value is None else literal(value))
            bound.append(part)
        return b"".join(bound)

    def execute(self, sql: str, params: Sequence[Any]) -> None:
        self._held.append(self._bind(sql, params))

    def values(self, head: str, row: str, rows: list[Sequence[Any]]) -> None:
        """``head`` followed by ``row`` for each of ``rows``: one multi-row statement."""
        bind = self._bind
        self._held.append(head.encode() + b", ".join([bind(row, values) for values in rows]))

    def _send(self) -> None:
        """Run every statement held; the cursor is left on the last one's result."""
        if not self._held:
            return
        text, self._held = b";\n".join(self._held), []
        await_(self._cursor.execute(text))
        while self._cursor.nextset():
            pass

    def fetchall(self) -> list[Any]:
        self._send()
        rows: list[Any] = await_(self._cursor.fetchall())
        return rows

    @property
    def rowcount(self) -> int:
        self._send()
        count: int = self._cursor.rowcount
        return count

    def commit(self) -> None:
        self._held.append(b"COMMIT")
        self._send()


async def _restored(driver: Any, error: type[Exception]) -> bool:
    """Whether a connection :meth:`Database.write_plain` used can serve the next plain
    transaction: no transaction open (one that failed, or was cancelled on the way, is rolled
    back). False if it cannot be (broken, or still busy with a cancelled message)."""
    try:
        if driver.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            await driver.execute("ROLLBACK")
    except error:
        return False
    return not (driver.broken or driver.closed)


class PlainSQL:
    """Plain SQL on one write transaction's own driver connection, for a hot path of fixed
    statements where SQLAlchemy's work per statement costs more than the database's.

    Statements are written with ``?`` marks and hold no literal question mark (on PostgreSQL
    the values are put in at the marks, :class:`_HeldStatements`); :meth:`instant` and
    :meth:`json` give values in the form the mapped column types store them, so the ORM
    reads these rows as its own. A driver error is raised as SQLAlchemy's exception of the same
    kind (``IntegrityError``, ``DataError``, ...), as a statement through the ORM would be. On
    PostgreSQL the statements are held and sent together (:class:`_HeldStatements`): an error may
    surface at a later statement, or at the end of the transaction, which rolls back all the
    same.
    """

    __slots__ = ("_cursor", "_error", "_sqlite", "_wait")

    def __init__(
        self,
        cursor: Any,
        *,
        sqlite: bool,
        error: type[Exception],
        wait: Callable[[Awaitable[Any]], Any],
    ) -> None:
        self._cursor = cursor
        self._sqlite = sqlite
        self._error = error
        self._wait = wait

    def _raise(self, sql: str, params: Any, exc: Exception) -> NoReturn:
        raise DBAPIError.instance(sql, params, exc, self._error) from exc

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Execute one statement."""
        try:
            self._cursor.execute(sql, params)
        except self._error as exc:
            self._raise(sql, params, exc)

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute one statement; the rows it changed."""
        self.run(sql, params)
        try:
            rowcount: int = self._cursor.rowcount
        except self._error as exc:
            self._raise(sql, params, exc)
        return rowcount

    def insert(
        self,
        table: str,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        values: str | None = None,
    ) -> None:
        """Insert rows into a table, in the order given: each row fills ``values`` (by default
        ``(?, ?, ...)``, a mark for each of ``columns``; a row may also compute a column, with a
        subquery, say). On SQLite one ``INSERT`` run for each row (the driver's loop, in C); on
        PostgreSQL one ``INSERT ... VALUES (...), (...)`` for all of them."""
        rows = list(rows)
        if not rows:
            return
        values = values or f"({self.marks(len(columns))})"
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        try:
            if self._sqlite:
                self._cursor.executemany(head + values, rows)
            else:
                self._cursor.values(head, values, rows)
        except self._error as exc:
            self._raise(head + values, rows, exc)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Every row a query returns."""
        self.run(sql, params)
        try:
            return [tuple(row) for row in self._cursor.fetchall()]
        except self._error as exc:
            self._raise(sql, params, exc)

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row a query returns, or None."""
        rows = self.all(sql, params)
        return rows[0] if rows else None

    @staticmethod
    def marks(count: int) -> str:
        """``?, ?, ?`` for an IN list of ``count`` values."""
        return ", ".join(["?"] * count)

    def instant(self, value: datetime) -> str:
        """An aware datetime as a :class:`UTCDateTime` column takes it: text in UTC (SQLite
        stores it so; PostgreSQL reads it as the column's ``timestamptz``, and quoting a text
        costs the driver a third of what quoting a datetime does)."""
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored: give a time zone")
        return _instant(value, self._sqlite)

    @staticmethod
    def json(value: Any) -> str:
        """A value for a JSON column."""
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()

    @staticmethod
    def from_json(value: Any) -> Any:
        """A JSON column's value as read (SQLite gives text, psycopg the decoded value)."""
        return orjson.loads(value) if isinstance(value, str | bytes) else value

    def wait(self, awaitable: Awaitable[T]) -> T:
        """Run a coroutine on the event loop (Redis, say) and wait for its result."""
        result: T = self._wait(awaitable)
        return result


async def _close_quietly(raw: PoolProxiedConnection) -> None:
    """Close a connection out of the pool; one already broken may fail to: it is gone anyway."""
    with contextlib.suppress(Exception):
        await greenlet_spawn(raw.close)


def _run_on_loop(loop: asyncio.AbstractEventLoop) -> Callable[[Awaitable[Any]], Any]:
    def wait(awaitable: Awaitable[Any]) -> Any:
        async def run() -> Any:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(run(), loop).result()

    return wait


class Database:
    """Engines and sessions for one database URL; :meth:`write` and :meth:`read` open units of
    work (a transaction committed on success, rolled back on any error)."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = sync_url(url)
        self.dialect = make_url(self.url).get_backend_name()
        target = async_url(url)
        if self.dialect == "sqlite":
            self._write_engine = create_async_engine(target, echo=echo)
            self._read_engine = create_async_engine(target, echo=echo)
            _sqlite_pragmas(self._write_engine, immediate=True)
            _sqlite_pragmas(self._read_engine, immediate=False)
        else:
            engine = create_async_engine(
                target, echo=echo, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW
            )
            self._write_engine = self._read_engine = engine
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self._plain: tuple[PoolProxiedConnection, Any] | None = None
        """SQLite: the connection :meth:`write_plain` keeps for itself (used under the write
        lock only), so a plain transaction costs no pool checkout and no reset on return."""
        self._plain_idle: list[tuple[PoolProxiedConnection, Any]] = []
        """PostgreSQL: the connections :meth:`write_plain` keeps for itself, not in use (in
        autocommit: the statements carry their own ``BEGIN`` and ``COMMIT``)."""
        self._plain_slots = asyncio.Semaphore(PLAIN_CONNECTIONS)
        self._checkpointer: asyncio.Task[None] | None = None
        self._checkpointed = 0.0
        self._writes = async_sessionmaker(self._write_engine, expire_on_commit=False)
        self._reads = async_sessionmaker(self._read_engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        """Whether this is the embedded SQLite database."""
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A write transaction: all of it is committed, or none of it.

        On SQLite the writes of one process queue on a lock before ``BEGIN IMMEDIATE``: SQLite
        has one writer at a time anyway, and letting every pooled connection spin in the busy
        handler starves some of them past the busy timeout ("database is locked") under load.
        Only the processes then contend for the file lock.
        """
        if self._write_lock is None:
            async with self._writes() as session, session.begin():
                yield session
            return
        async with self._write_lock, self._writes() as session, session.begin():
            yield session
        self._checkpoint_soon()

    async def write_plain(self, work: Callable[[PlainSQL, S], T], start: Callable[[], S]) -> T:
        """One write transaction of plain SQL: ``work(sql, start())``, all of it committed or,
        if it raises, none of it. ``start`` runs on the event loop once this process's turn to
        write has come, just before the transaction.

        On SQLite the whole transaction — ``BEGIN IMMEDIATE``, ``work`` and ``COMMIT`` — is one
        call on the driver's thread, queued behind the process's other writes as :meth:`write`
        is: one hop between the threads instead of a few per statement, and the database's
        write lock is held only while it runs. On PostgreSQL ``work`` runs in a greenlet on the
        event loop, on a connection of its own (no pool checkout), its statements held and sent
        together (:class:`_HeldStatements`): the server is waited for only when a result is
        needed and at the end.
        """
        if self._write_lock is None:
            return await self._write_batched(work, start)
        return await self._write_in_thread(self._write_lock, work, start)

    async def _write_batched(self, work: Callable[[PlainSQL, S], T], start: Callable[[], S]) -> T:
        error: type[Exception] = self._write_engine.dialect.loaded_dbapi.Error
        async with self._plain_slots:
            raw, driver = await self._plain_connection()  # driver: psycopg's AsyncConnection
            try:
                held = _HeldStatements(psycopg.AsyncClientCursor(driver))
                sql = PlainSQL(held, sqlite=False, error=error, wait=await_)
                started = start()

                def transaction() -> T:
                    result = work(sql, started)
                    held.commit()
                    return result

                try:
                    done: T = await greenlet_spawn(transaction)
                except error as exc:  # raised by the last message (its COMMIT, say)
                    raise DBAPIError.instance(None, None, exc, error) from exc
            finally:
                await self._give_back(raw, driver, error)
            return done

    async def _give_back(
        self, raw: PoolProxiedConnection, driver: Any, error: type[Exception]
    ) -> None:
        """Keep a plain transaction's connection for the next one, or close it if it cannot
        serve again (the next transaction opens a new one). A connection the server dropped
        says it may have restarted: the idle ones are closed too, as SQLAlchemy's pool does,
        rather than each failing a transaction to find out."""
        try:
            reusable = await _restored(driver, error)
        except BaseException:
            await _close_quietly(raw)
            raise
        if reusable:
            self._plain_idle.append((raw, driver))
            return
        await _close_quietly(raw)
        if driver.broken:
            while self._plain_idle:
                await _close_quietly(self._plain_idle.pop()[0])

    async def _plain_connection(self) -> tuple[PoolProxiedConnection, Any]:
        """A connection of :meth:`write_plain`'s own (PostgreSQL): an idle one, else a new one
        the engine opens (its dialect's setup, then out of the pool for good, so a transaction
        costs no checkout and no reset), in autocommit: the statements carry their own
        ``BEGIN`` and ``COMMIT`` (see :class:`_HeldStatements`), and the driver must not open a
        transaction of its own (a round trip) before the first of them."""
        while self._plain_idle:
            raw, driver = self._plain_idle.pop()
            if not (driver.broken or driver.closed):
                return raw, driver
            await _close_quietly(raw)
        raw = await self._write_engine.raw_connection()
        driver = raw.driver_connection
        raw.detach()
        try:
            assert driver is not None
            await driver.set_autocommit(True)
            # Every statement it runs is text of its own: none is worth preparing, and counting
            # them would only churn the driver's cache of statements seen.
            driver.prepare_threshold = None
        except BaseException:
            await _close_quietly(raw)
            raise
        return raw, driver

    async def _write_in_thread(
        self, lock: asyncio.Lock, work: Callable[[PlainSQL, S], T], start: Callable[[], S]
    ) -> T:
        async with lock:
            if self._plain is None:
                # Out of the pool (the pool's connect event has set the pragmas), for good.
                raw = await self._write_engine.raw_connection()
                self._plain = raw, raw.driver_connection  # aiosqlite's: its thread runs sqlite3
                raw.detach()
            driver = self._plain[1]
            started = start()
            wait = _run_on_loop(asyncio.get_running_loop())
            error: type[Exception] = self._write_engine.dialect.loaded_dbapi.Error

            def transaction() -> T:
                # Runs on aiosqlite's thread, the only one its sqlite3 connection may be used on.
                connection = driver._conn  # the sqlite3 connection (aiosqlite: no public way)
                cursor = connection.cursor()
                try:
                    _begin_immediate(cursor)
                    try:
                        result = work(
                            PlainSQL(cursor, sqlite=True, error=error, wait=wait), started
                        )
                        cursor.execute("COMMIT")
                    except BaseException:
                        connection.rollback()
                        raise
                except error as exc:
                    raise DBAPIError.instance(None, None, exc, error) from exc
                finally:
                    cursor.close()
                return result

            # One call on the connection's own thread (aiosqlite's queue; no public way in).
            try:
                done: T = await driver._execute(transaction)
            except (OperationalError, ValueError):
                # The database or the connection failed (aiosqlite says ValueError when it is
                # closed): the next plain transaction starts on a new connection.
                await self._close_plain()
                raise
        self._checkpoint_soon()
        return done

    async def _close_plain(self) -> None:
        if self._plain is not None:
            (plain, _), self._plain = self._plain, None
            await _close_quietly(plain)
        while self._plain_idle:
            await _close_quietly(self._plain_idle.pop()[0])

    def _checkpoint_soon(self) -> None:
        """After a write (SQLite): have the WAL copied back into the database file beside the
        writers, at most every :data:`CHECKPOINT_SECONDS`."""
        loop = asyncio.get_running_loop()
        running = self._checkpointer
        if running is not None and not running.done() and running.get_loop() is loop:
            return
        if loop.time() - self._checkpointed < CHECKPOINT_SECONDS:
            return
        self._checkpointed = loop.time()
        self._checkpointer = loop.create_task(self._checkpoint())

    async def _checkpoint(self) -> None:
        # PASSIVE: waits for no reader or writer, copies what it can. On a reader's connection
        # (its own thread, outside any transaction), so the write lock is not held meanwhile.
        try:
            async with self._read_engine.connect() as conn:
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                await driver.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:
            log.debug("WAL checkpoint failed", exc_info=True)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only transaction."""
        async with self._reads() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        """Close every pooled connection."""
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None and checkpointer.get_loop() is asyncio.get_running_loop():
            await asyncio.wait([checkpointer])
        await self._close_plain()
        await self._write_engine.dispose()
        if self._read_engine is not self._write_engine:
            await self._read_engine.dispose()
