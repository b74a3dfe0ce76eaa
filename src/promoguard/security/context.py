"""Who is making the current request; every audit entry written during it carries this."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["Principal", "current"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    key_id: str
    role: str
    department: str | None
    ip: str
    request_id: str
    signed: bool
    owner: str = ""


current: ContextVar[Principal | None] = ContextVar("promoguard_principal", default=None)
