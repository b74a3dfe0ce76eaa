"""Replay protection: a nonce is accepted once within the clock-skew window.

Two stores behind one interface: the database (embedded; a primary-key insert that fails on a
repeat, expired rows swept as it goes) and Redis (``SET key NX EX window``) when configured. If
the store cannot answer, the request is refused (fail closed).
"""

from __future__ import annotations

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


class DatabaseNonces:
    """Nonces in the ``used_nonces`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._swept = datetime.min.replace(tzinfo=UTC)

    async def first_use(self, key_id: str, nonce: str, now: datetime, window: timedelta) -> bool:
        """Insert the nonce unless present (``ON CONFLICT DO NOTHING``)."""
        insert = postgresql.insert if not self._db.is_sqlite else sqlite.insert
        table = UsedNonce.__table__
        statement = (
            insert(table)  # type: ignore[arg-type]
            .values(key_id=key_id, nonce=nonce, expires_at=now + window)
            .on_conflict_do_nothing()
            .returning(table.c.nonce)
        )
        try:
            async with self._db.write() as session:
                if now - self._swept > window:
                    await session.execute(delete(UsedNonce).where(UsedNonce.expires_at < now))
                    self._swept = now
                inserted = (await session.execute(statement)).scalar_one_or_none()
        except SQLAlchemyError:
            log.exception("nonce store unavailable")
            raise StoreUnavailableError(
                "security_store_unavailable", "the replay-protection store is unavailable"
            ) from None
        return inserted is not None


class RedisNonces:
    """Nonces as Redis keys with an expiry, shared by every worker."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def first_use(self, key_id: str, nonce: str, now: datetime, window: timedelta) -> bool:  # noqa: ARG002
        """``SET promoguard:nonce:<key>:<nonce> 1 NX EX <window>``."""
        try:
            fresh = await self._redis.set(
                f"promoguard:nonce:{key_id}:{nonce}", 1, nx=True, ex=int(window.total_seconds())
            )
        except RedisError:
            log.exception("nonce store unavailable")
            raise StoreUnavailableError(
                "security_store_unavailable", "the replay-protection store is unavailable"
            ) from None
        return bool(fresh)
