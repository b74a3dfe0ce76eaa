"""Replay protection: a nonce is accepted once within the clock-skew window.

Two stores behind one interface: the database (embedded; a primary-key insert that fails on a
repeat, expired rows swept as it goes) and Redis (``SET key NX EX window``) when configured. If
the store cannot answer, the request is refused (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from promoguard.errors import PromoguardError
from promoguard.security.models import UsedNonce
from promoguard.store.db import Database

__all__ = ["DatabaseNonces", "NonceStore", "RedisNonces", "StoreUnavailableError"]

log = logging.getLogger(__name__)


class StoreUnavailableError(PromoguardError):
    """A security store (nonces, rate limits) did not answer: the request is refused."""

    status = 503


class NonceStore(Protocol):
    """Remembers nonces for ``window`` and tells whether one is new."""

    async def first_use(self, key_id: str, nonce: str, now: datetime, window: timedelta) -> bool:
        """Record the nonce; True if it was not seen in the window."""
        ...


Pending = tuple[str, str, datetime, "asyncio.Future[bool]"]
"""(key id, nonce, expires at, the waiting request's answer)."""


class _Batched:
    """Nonces of requests that arrive together are written together.

    One write per request would make every signed read a write. Instead, while one batch is
    being written the next one gathers, so the cost per nonce falls as load rises. A nonce twice
    in one batch goes to the first request; the others are replays.
    """

    store_errors: tuple[type[Exception], ...] = ()

    def __init__(self) -> None:
        self._pending: list[Pending] = []
        self._writer: asyncio.Task[None] | None = None

    async def first_use(self, key_id: str, nonce: str, now: datetime, window: timedelta) -> bool:
        """Queue the nonce for the next batch; True if it was not seen in the window."""
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((key_id, nonce, now + window, answer))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_batches(now, window))
        return await answer

    async def _write_batches(self, now: datetime, window: timedelta) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                fresh = await self._write(batch, now, window)
            except self.store_errors:
                log.exception("nonce store unavailable")
                for *_, answer in batch:
                    if not answer.done():  # the request may have been cancelled meanwhile
                        answer.set_exception(
                            StoreUnavailableError(
                                "security_store_unavailable",
                                "the replay-protection store is unavailable",
                            )
                        )
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


class DatabaseNonces(_Batched):
    """Nonces in the ``used_nonces`` table: one ``INSERT ... ON CONFLICT DO NOTHING RETURNING``
    per batch, expired rows swept as it goes."""

    store_errors = (SQLAlchemyError,)

    def __init__(self, db: Database) -> None:
        super().__init__()
        self._db = db
        self._swept = datetime.min.replace(tzinfo=UTC)

    async def _write(
        self, batch: list[Pending], now: datetime, window: timedelta
    ) -> set[tuple[str, str]]:
        insert = postgresql.insert if not self._db.is_sqlite else sqlite.insert
        table = UsedNonce.__table__
        rows = {(key_id, nonce): expires for key_id, nonce, expires, _ in batch}
        statement = (
            insert(table)  # type: ignore[arg-type]
            .values([{"key_id": k, "nonce": n, "expires_at": e} for (k, n), e in rows.items()])
            .on_conflict_do_nothing()
            .returning(table.c.key_id, table.c.nonce)
        )
        async with self._db.write() as session:
            if now - self._swept > window:
                await session.execute(delete(UsedNonce).where(UsedNonce.expires_at < now))
                self._swept = now
            result = await session.execute(statement)
            return {(k, n) for k, n in result.all()}


class RedisNonces(_Batched):
    """Nonces as Redis keys with an expiry, shared by every worker: one pipeline of
    ``SET <prefix>nonce:<key>:<nonce> 1 NX EX <window>`` per batch (``promoguard:`` by
    default: ``PROMOGUARD_REDIS_PREFIX``)."""

    store_errors = (RedisError,)

    def __init__(self, redis: Redis, prefix: str = "promoguard:") -> None:
        super().__init__()
        self._redis = redis
        self._prefix = f"{prefix}nonce:"

    async def _write(
        self,
        batch: list[Pending],
        now: datetime,  # noqa: ARG002 (Redis expires keys itself)
        window: timedelta,
    ) -> set[tuple[str, str]]:
        seconds = int(window.total_seconds())
        keys = list(dict.fromkeys((key_id, nonce) for key_id, nonce, _, _ in batch))
        async with self._redis.pipeline(transaction=False) as pipe:
            for key_id, nonce in keys:
                pipe.set(f"{self._prefix}{key_id}:{nonce}", 1, nx=True, ex=seconds)
            answers = await pipe.execute()
        return {key for key, fresh in zip(keys, answers, strict=True) if fresh}
