"""Security tables: API keys (secrets never stored) and used nonces (embedded replay store)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from promoguard.store.db import Base, UTCDateTime, utcnow

__all__ = ["ApiKey", "UsedNonce"]


class ApiKey(Base):
    """An API key: its role, where it may call from, and a hash of its secret."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    department: Mapped[str | None] = mapped_column(String(32), default=None)
    label: Mapped[str] = mapped_column(String(200), default="")
    owner: Mapped[str] = mapped_column(String(128), default="")
    """The person holding the key; review refuses an approval by the version's author's owner."""
    secret_sha256: Mapped[str] = mapped_column(String(64))
    allowed_ips: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class UsedNonce(Base):
    """A nonce seen within the clock-skew window (embedded store; Redis uses SET NX EX)."""

    __tablename__ = "used_nonces"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
