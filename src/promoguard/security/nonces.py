"""Replay protection: a nonce is accepted once within the clock-skew window.

Three stores behind one interface; every worker process that shares a store refuses a request
replayed to another of them. ``PROMOGUARD_NONCE_STORE`` chooses (:func:`nonce_store`):

- :class:`RedisNonces` (``redis``; ``auto`` when ``PROMOGUARD_REDIS_URL`` is set): ``SET key NX
  EX window``, one script call per batch; shared by every host;
- :class:`SqliteNonces` (``file``; ``auto`` without Redis): a small SQLite file of its own,
  which every worker on the host opens. Embedded, it sits beside the database (``promoguard.db``
  -> ``promoguard.nonces.db``); on PostgreSQL it is ``promoguard.nonces.db`` in the working
  directory; ``PROMOGUARD_NONCE_FILE`` names another. A nonce is one upsert on a primary key,
  written synchronously on the event loop: a few microseconds, no round trip through the
  database driver's thread, and no batching needed. On PostgreSQL it is the default although it
  is per host: a round trip per batch to PostgreSQL costs signed quotes 30-35 % of their
  throughput, and a deployment on several hosts needs Redis anyway for its rate limits (without
  Redis they are per process);
- :class:`DatabaseNonces` (``database``): the ``used_nonces`` table, one ``INSERT ... SELECT
  unnest(...) ON CONFLICT`` per batch of concurrent requests on a connection of its own, so a
  signed read is not a transaction of its own. For several hosts sharing one PostgreSQL without
  Redis.

A nonce whose window has passed may be used again (its row is renewed). If the store cannot
answer, the request is refused (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import psycopg
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from promoguard.errors import UnavailableError
from promoguard.security.models import UsedNonce
from promoguard.settings import REDIS_NONCES_WITHOUT_REDIS, Settings
from promoguard.store.db import Database

__all__ = [
    "DEFAULT_NONCE_FILE",
    "DatabaseNonces",
    "NonceStore",
    "RedisNonces",
    "SqliteNonces",
    "StoreUnavailableError",
    "nonce_file",
    "nonce_store",
]

log = logging.getLogger(__name__)


class StoreUnavailableError(UnavailableError):
    """A security store (nonces, rate limits) did not answer: the request is refused."""


def _unavailable() -> StoreUnavailableError:
    return StoreUnavailableError(
        "security_store_unavailable", "the replay-protection store is unavailable"
    )


class NonceStore(Protocol):
    """Remembers nonces for ``window`` and tells whether one is new."""

    async def first_use(self, key_id: str, nonce: str, now: datetime, window: timedelta) -> bool:
        """Record the nonce; True if it was not seen in the window."""
        ...

    async def aclose(self) -> None:
        """Let go of the store's connection (the app is stopping)."""
        ...


# -- embedded: a SQLite file of its own ------------------------------------------------------

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS nonces (key_id TEXT NOT NULL, nonce TEXT NOT NULL, "
    "expires_at INTEGER NOT NULL, PRIMARY KEY (key_id, nonce))",
    "CREATE INDEX IF NOT EXISTS ix_nonces_expires_at ON nonces (expires_at)",
)
_ROWS_PER_STATEMENT = 500
"""At most this many nonces in one statement (three parameters each)."""


@functools.cache
def _record_statement(rows: int) -> str:
    """Record ``rows`` nonces: a new one is inserted; a known one counts again only once its
    window has passed. The nonces recorded are returned."""
    values = ", ".join(["(?, ?, ?)"] * rows)
    return (
        f"INSERT INTO nonces (key_id, nonce, expires_at) VALUES {values} "
        "ON CONFLICT (key_id, nonce) DO UPDATE SET expires_at = excluded.expires_at "
        "WHERE nonces.expires_at <= ? RETURNING key_id, nonce"
    )


_SWEEP = (
    "DELETE FROM nonces WHERE rowid IN "
    "(SELECT rowid FROM nonces WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)"
)
# Nonces the database table held before this store existed (an upgrade while requests flow).
_ADOPT = (
    "INSERT OR IGNORE INTO nonces (key_id, nonce, expires_at) "
    "SELECT key_id, nonce, CAST(strftime('%s', expires_at) AS INTEGER) FROM old.used_nonces "
    "WHERE CAST(strftime('%s', expires_at) AS INTEGER) > ?"
)
SWEEP_EVERY = 64
"""Expired rows are deleted, at most twice this many at a time, every this many nonces: the file
stays the size of one window, and no single request pays for a large delete."""
BUSY_SECONDS = 5.0
"""How long a write waits for another worker's write before the request is refused (503)."""
_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _busy(exc: Exception) -> bool:
    """Whether SQLite said another connection holds the lock."""
    return isinstance(exc, sqlite3.OperationalError) and exc.sqlite_errorcode & 0xFF in _BUSY


DEFAULT_NONCE_FILE = "promoguard.nonces.db"
"""The nonce file on PostgreSQL when ``PROMOGUARD_NONCE_FILE`` is unset, in the working
directory (which every worker of a server shares)."""


def nonce_file(db: Database) -> Path | None:
    """The nonce file beside an embedded database file (None: not a file on disk)."""
    if not db.is_sqlite:
        return None
    name = make_url(db.url).database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    path = Path(name)
    return path.with_name(f"{path.stem}.nonces{path.suffix or '.db'}")


def _connect(target: str) -> sqlite3.Connection:
    # Autocommit (each statement its own transaction unless BEGIN), no busy wait, URIs on (for
    # the read-only ATTACH of the database); only the event loop's thread uses it.
    return sqlite3.connect(
        target, timeout=0, isolation_level=None, check_same_thread=False, uri=True
    )


_Waiting = tuple[str, str, int, int, "asyncio.Future[bool]"]
"""(key id, nonce, now and expiry in Unix seconds, the waiting request's answer)."""


class SqliteNonces:
    """Nonces in a SQLite file of their own (WAL), shared by every worker process on the machine.

    The nonces of the requests that reach this check in one turn of the event loop are written
    together, synchronously on the loop: one upsert statement on a primary key, some tens of
    microseconds, far less than a hop to a driver thread and back (which, under load, also waits
    for the GIL). SQLite lets one writer at a time in; a worker that finds the file locked by
    another does not block its loop in SQLite's busy handler but lets it run and tries again, for
    up to :data:`BUSY_SECONDS`. The file is written with ``synchronous=OFF``: it survives a
    crashed or killed worker (WAL), and only an operating-system crash or power loss can lose
    the last nonces (it is then recreated empty).
    """

    def __init__(self, path: Path | None, *, adopt_from: Path | None = None) -> None:
        self.path = path
        self._adopt_from = adopt_from
        self._conn: sqlite3.Connection | None = None
        self._written = 0
        self._pending: list[_Waiting] = []
        self._flushing = False

    @classmethod
    def on_host(cls, db: Database, path: str | Path | None = None) -> SqliteNonces:
        """The nonce file every worker process on this host shares.

        Args:
            db: the service's database. An embedded database file's ``used_nonces`` rows (the
                nonces it held before this store existed) are taken over.
            path: the file (``PROMOGUARD_NONCE_FILE``). Unset: beside an embedded database file
                (:func:`nonce_file`), in memory for an in-memory one, and
                :data:`DEFAULT_NONCE_FILE` in the working directory on PostgreSQL.

        Returns:
            The store, its path made absolute now: every worker resolves it against the
            directory they share, and a later change of directory cannot split them.
        """
        beside = nonce_file(db)
        legacy = make_url(db.url).database if beside is not None else None
        if path is None:
            path = beside if db.is_sqlite else Path(DEFAULT_NONCE_FILE)
        return cls(
            None if path is None else Path(path).absolute(),
            adopt_from=Path(legacy) if legacy else None,
        )

    def _open(self, now: int) -> sqlite3.Connection:
        target = ":memory:" if self.path is None else str(self.path)
        conn = _connect(target)
        try:
            self._prepare(conn, now)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if self.path is None or exc.sqlite_errorcode not in (
                sqlite3.SQLITE_CORRUPT,
                sqlite3.SQLITE_NOTADB,
            ):
                raise
            # Only an OS crash under synchronous=OFF gets here: start again from empty.
            log.error("nonce file %s is unreadable (%s); starting a new one", self.path, exc)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            conn = _connect(target)
            self._prepare(conn, now)
        return conn

    def _prepare(self, conn: sqlite3.Connection, now: int) -> None:
        # Opening may meet another worker doing the same: wait for it here, once.
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_SECONDS * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = OFF")
        for statement in _SCHEMA:
            conn.execute(statement)
        if self._adopt_from is not None and self._adopt_from.exists():
            self._adopt(conn, now, self._adopt_from)
        conn.execute("PRAGMA busy_timeout = 0")

    @staticmethod
    def _adopt(conn: sqlite3.Connection, now: int, source: Path) -> None:
        uri = f"{source.absolute().as_uri()}?mode=ro"
        conn.execute("ATTACH DATABASE ? AS old", (uri,))
        try:
            found = conn.execute(
                "SELECT 1 FROM old.sqlite_master WHERE type = 'table' AND name = 'used_nonces'"
            ).fetchone()
            if found:
                conn.execute(_ADOPT, (now,))
        finally:
            conn.execute("DETACH DATABASE old")

    async def first_use(self, key_id: str, nonce: str, now: datetime, window: timedelta) -> bool:
        """Record the nonce with the others of this turn of the event loop; True if it was not
        seen in the window."""
        at = int(now.timestamp())
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((key_id, nonce, at, at + int(window.total_seconds()), answer))
        if not self._flushing:
            self._flushing = True
            answer.get_loop().call_soon(self._flush, 0.0)
        return await answer

    def _flush(self, waited: float) -> None:
        """Write every nonce waiting, in one statement; answer each request."""
        batch, self._pending = self._pending, []
        self._flushing = False
        try:
            fresh = self._write(batch)
        except Exception as exc:  # whatever it is, no request may wait for ever
            if _busy(exc) and waited < BUSY_SECONDS:
                # Another worker is writing (for microseconds): this loop runs on meanwhile.
                self._pending = batch + self._pending
                self._flushing = True
                pause = 0.0002 if waited < 0.01 else 0.002
                asyncio.get_running_loop().call_later(pause, self._flush, waited + pause)
                return
            log.error("nonce store unavailable", exc_info=exc)
            self.close()  # opened afresh next time
            for *_, answer in batch:
                if not answer.done():
                    answer.set_exception(_unavailable())
            return
        for key_id, nonce, _, _, answer in batch:
            if not answer.done():  # the request may have been cancelled meanwhile
                answer.set_result((key_id, nonce) in fresh)
            fresh.discard((key_id, nonce))  # the same nonce again in this batch: a replay

    def _write(self, batch: list[_Waiting]) -> set[tuple[str, str]]:
        now = max(at for _, _, at, _, _ in batch)
        conn = self._conn
        if conn is None:
            conn = self._conn = self._open(now)
        rows = {(key_id, nonce): expires for key_id, nonce, _, expires, _ in batch}
        items = list(rows.items())
        chunks = [
            items[start : start + _ROWS_PER_STATEMENT]
            for start in range(0, len(items), _ROWS_PER_STATEMENT)
        ]
        # One statement commits on its own; several are one transaction, so that a batch is
        # recorded whole or not at all (a retried batch must not meet its own nonces).
        several = len(chunks) > 1
        if several:
            conn.execute("BEGIN IMMEDIATE")
        try:
            fresh: set[tuple[str, str]] = set()
            for chunk in chunks:
                values: list[str | int] = []
                for (key_id, nonce), expires in chunk:
                    values += (key_id, nonce, expires)
                values.append(now)
                fresh.update(conn.execute(_record_statement(len(chunk)), values).fetchall())
            if several:
                conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._written += len(rows)
        if self._written >= SWEEP_EVERY:
            self._written = 0
            with contextlib.suppress(sqlite3.Error):  # busy: the next sweep deletes them
                conn.execute(_SWEEP, (now, 2 * SWEEP_EVERY))
        return fresh

    def close(self) -> None:
        """Close the file (a later nonce opens it again)."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    async def aclose(self) -> None:
        """Close the file."""
        self.close()


# -- batched stores: PostgreSQL and Redis -----------------------------------------------------

Pending = tuple[str, str, datetime, "asyncio.Future[bool]"]
"""(key id, nonce, expires at, the waiting request's answer)."""


class _Batched:
    """Nonces of requests that arrive together are written together.

    One round trip per request would make every signed read a write. Instead, while a batch is
    being written the next one gathers, so the cost per nonce falls as load rises. Up to
    :attr:`writers` batches are in flight at once, so requests do not all wait for one round
    trip. A nonce twice in one batch goes to the first request; the others are replays (and
    across batches in flight together, the store's own uniqueness decides).
    """

    store_errors: tuple[type[Exception], ...] = ()
    writers = 1

    def __init__(self) -> None:
        self._pending: list[Pending] = []
        self._writers: set[asyncio.Task[None]] = set()

    async def first_use(self, key_id: str, nonce: str, now: datetime, window: timedelta) -> bool:
        """Queue the nonce for the next batch; True if it was not seen in the window."""
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((key_id, nonce, now + window, answer))
        if len(self._writers) < self.writers:
            writer = asyncio.create_task(self._write_batches(window))
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        return await answer

    async def _write_batches(self, window: timedelta) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                # The batch's clock: its latest request's (a writer may run for a long time).
                now = max(expires for _, _, expires, _ in batch) - window
                fresh = await self._write(batch, now, window)
            except self.store_errors:
                log.exception("nonce store unavailable")
                for *_, answer in batch:
                    if not answer.done():  # the request may have been cancelled meanwhile
                        answer.set_exception(_unavailable())
                continue
            for key_id, nonce, _, answer in batch:
                if not answer.done():
                    answer.set_result((key_id, nonce) in fresh)
                fresh.discard((key_id, nonce))

    async def _write(
        self, batch: list[Pending], now: datetime, window: timedelta
    ) -> set[tuple[str, str]]:
        """Record the batch's nonces; return those that were new."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Nothing of its own to close."""


# The batch's key ids and nonces travel as two texts joined by a separator neither can hold:
# one text parameter costs the driver a fraction of what an array does.
_PG_RECORD = (
    "INSERT INTO used_nonces (key_id, nonce, expires_at) "
    "SELECT k, n, to_timestamp(%(expires)s::float8) "
    "FROM unnest(string_to_array(%(keys)s::text, %(sep)s), string_to_array(%(nonces)s::text, "
    "%(sep)s)) AS batch (k, n) "
    "ON CONFLICT (key_id, nonce) DO UPDATE SET expires_at = excluded.expires_at "
    "WHERE used_nonces.expires_at <= to_timestamp(%(now)s::float8) "
    "RETURNING key_id, nonce"
)
_SEP = "\x1f"


def _libpq_url(db: Database) -> str:
    """The database's URL as libpq reads it (its query, e.g. ``options``, kept)."""
    return make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)


class DatabaseNonces(_Batched):
    """Nonces in the ``used_nonces`` table, expired rows swept as it goes.

    On PostgreSQL each batch is one statement (``INSERT ... SELECT unnest(...) ON CONFLICT``,
    prepared by the driver, the batch's keys and nonces in two text parameters) on a connection
    of the store's own, in autocommit: one round trip, no transaction around it. On SQLite
    (when ``PROMOGUARD_NONCE_STORE=database`` says so, and in tests) it is one ``INSERT ... ON
    CONFLICT DO UPDATE ... RETURNING`` per batch in a write transaction.

    ``PROMOGUARD_NONCE_STORE=database`` chooses it, for several hosts that share one PostgreSQL
    without Redis. It is not the default there: the round trip per batch, with the one or two
    nonces a batch holds at realistic load, costs signed quotes 30-35 % of their throughput.
    """

    store_errors = (SQLAlchemyError, psycopg.Error, OSError)
    writers = 2

    def __init__(self, db: Database) -> None:
        super().__init__()
        self._db = db
        self._swept = datetime.min.replace(tzinfo=UTC)
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        """Connections of the store's own not in use (one per batch in flight)."""
        self._sweeper: asyncio.Task[None] | None = None

    async def _write(
        self, batch: list[Pending], now: datetime, window: timedelta
    ) -> set[tuple[str, str]]:
        rows = {(key_id, nonce): expires for key_id, nonce, expires, _ in batch}
        if self._db.is_sqlite:
            return await self._write_sqlite(rows, now, window)
        if now - self._swept > window and (self._sweeper is None or self._sweeper.done()):
            self._swept = now
            self._sweeper = asyncio.create_task(self._sweep(now))
        conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed:
            conn = await psycopg.AsyncConnection.connect(_libpq_url(self._db), autocommit=True)
        if any(_SEP in key_id or _SEP in nonce for key_id, nonce in rows):
            raise ValueError("a key id or nonce holds the batch separator")
        # Every nonce of the batch is kept at least its window (the latest expiry of them).
        params = {
            "keys": _SEP.join(k for k, _ in rows),
            "nonces": _SEP.join(n for _, n in rows),
            "sep": _SEP,
            "expires": max(rows.values()).timestamp(),
            "now": now.timestamp(),
        }
        try:
            cursor = await conn.execute(_PG_RECORD, params)
            fresh = {(k, n) for k, n in await cursor.fetchall()}
        except BaseException:
            await conn.close()  # a new connection next batch
            raise
        self._idle.append(conn)
        return fresh

    async def _sweep(self, now: datetime) -> None:
        """Delete expired rows, off the nonce connection so batches do not wait for it."""
        try:
            async with self._db.write() as session:
                await session.execute(delete(UsedNonce).where(UsedNonce.expires_at < now))
        except SQLAlchemyError:
            log.warning("could not sweep expired nonces", exc_info=True)

    async def _write_sqlite(
        self, rows: dict[tuple[str, str], datetime], now: datetime, window: timedelta
    ) -> set[tuple[str, str]]:
        table = UsedNonce.__table__
        insert = sqlite.insert(table).values(  # type: ignore[arg-type]
            [{"key_id": k, "nonce": n, "expires_at": e} for (k, n), e in rows.items()]
        )
        statement = insert.on_conflict_do_update(
            index_elements=[table.c.key_id, table.c.nonce],
            set_={"expires_at": insert.excluded.expires_at},
            where=table.c.expires_at <= now,
        ).returning(table.c.key_id, table.c.nonce)
        async with self._db.write() as session:
            if now - self._swept > window:
                await session.execute(delete(UsedNonce).where(UsedNonce.expires_at < now))
                self._swept = now
            result = await session.execute(statement)
            return {(k, n) for k, n in result.all()}

    async def aclose(self) -> None:
        """Close the store's own connections."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        while self._idle:
            await self._idle.pop().close()


# The first SET of each key that is new wins; the answer lists the positions of those.
_REDIS_RECORD = """
local fresh = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, '1', 'NX', 'EX', ARGV[1]) then fresh[#fresh + 1] = i end
end
return fresh
"""


class RedisNonces(_Batched):
    """Nonces as Redis keys with an expiry, shared by every worker: ``SET
    <prefix>nonce:<key>:<nonce> 1 NX EX <window>`` for each nonce of a batch, in one script call
    (``promoguard:`` by default: ``PROMOGUARD_REDIS_PREFIX``)."""

    store_errors = (RedisError,)
    writers = 2

    def __init__(self, redis: Redis, prefix: str = "promoguard:") -> None:
        super().__init__()
        self._redis = redis
        self._prefix = f"{prefix}nonce:"
        self._record = redis.register_script(_REDIS_RECORD)

    async def _write(
        self,
        batch: list[Pending],
        now: datetime,  # noqa: ARG002 (Redis expires keys itself)
        window: timedelta,
    ) -> set[tuple[str, str]]:
        keys = list(dict.fromkeys((key_id, nonce) for key_id, nonce, _, _ in batch))
        fresh = await self._record(
            keys=[f"{self._prefix}{key_id}:{nonce}" for key_id, nonce in keys],
            args=[int(window.total_seconds())],
        )
        return {keys[int(i) - 1] for i in fresh}


def nonce_store(settings: Settings, db: Database, redis: Redis | None) -> NonceStore:
    """The store ``PROMOGUARD_NONCE_STORE`` chooses (``auto``: Redis when configured, else the
    nonce file); on PostgreSQL a nonce file is per host, which is said once, as a warning.

    Args:
        settings: the service's settings (``nonce_store``, ``nonce_file``, ``redis_prefix``).
        db: the service's database.
        redis: the service's Redis client, None when ``PROMOGUARD_REDIS_URL`` is unset.

    Returns:
        The store; its connections open with the first nonce.
    """
    choice = settings.nonce_store
    if choice == "auto":
        choice = "file" if redis is None else "redis"
    if choice == "redis":
        if redis is None:  # the settings refuse this; a copy made without validation may not
            raise ValueError(REDIS_NONCES_WITHOUT_REDIS)
        return RedisNonces(redis, settings.redis_prefix)
    if choice == "database":
        return DatabaseNonces(db)
    store = SqliteNonces.on_host(db, settings.nonce_file)
    if not db.is_sqlite:
        log.warning(
            "nonces of signed requests are kept per host, in %s%s: on several hosts set "
            "PROMOGUARD_REDIS_URL or PROMOGUARD_NONCE_STORE=database, or a request replayed "
            "to another host is accepted",
            store.path,
            " (like the rate limits without Redis)" if redis is None else "",
        )
    return store
