"""The append-only audit log: who did what to which thing, when.

Rows are only ever inserted. The ORM refuses updates and deletes of :class:`AuditEntry`, and the
migration adds database triggers that refuse them on both SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String, event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from promoguard.security.context import current
from promoguard.store.db import Base, UTCDateTime, utcnow

__all__ = ["AuditEntry", "record"]


class AuditEntry(Base):
    """One thing that happened."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(128), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    key_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    role: Mapped[str | None] = mapped_column(String(16), default=None)
    ip: Mapped[str | None] = mapped_column(String(45), default=None)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)


@event.listens_for(AuditEntry, "before_update")
@event.listens_for(AuditEntry, "before_delete")
def _append_only(*_: Any) -> None:
    raise RuntimeError("the audit log is append-only")


def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add an audit entry to the session's transaction (it lands with the change it records).

    During an API request the entry also carries the caller's key id, role, IP and request id.
    """
    caller = current.get()
    session.add(
        AuditEntry(
            actor=actor,
            action=action,
            subject_type=subject_type,
            subject_id=subject_id,
            detail=detail or {},
            at=utcnow(),
            key_id=None if caller is None else caller.key_id,
            role=None if caller is None else caller.role,
            ip=None if caller is None else caller.ip,
            request_id=None if caller is None else caller.request_id,
        )
    )
