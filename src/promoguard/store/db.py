"""The database: one async SQLAlchemy code path for SQLite (embedded) and PostgreSQL.

SQLite runs in WAL mode with a busy timeout, and write transactions start with
``BEGIN IMMEDIATE`` so two processes never deadlock upgrading a read lock; reads use their own
engine and plain ``BEGIN`` so they never wait for a writer. PostgreSQL uses one engine for both.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, TypeDecorator, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

__all__ = [
    "Base",
    "Database",
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


def _sqlite_pragmas(engine: AsyncEngine, *, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event (below) decide how a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


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
            engine = create_async_engine(target, echo=echo, pool_size=10, max_overflow=10)
            self._write_engine = self._read_engine = engine
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
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

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only transaction."""
        async with self._reads() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self._write_engine.dispose()
        if self._read_engine is not self._write_engine:
            await self._read_engine.dispose()
