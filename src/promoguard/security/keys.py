"""API keys and roles.

A key is ``<id>`` plus a secret shown once at creation. The secret is never stored: it is derived
from the server's secret key (``HMAC(PROMOGUARD_SECRET_KEY, key id)``), so the server can check
signatures without keeping a copy, and the table holds only its SHA-256 (for bearer use). Rotating
``PROMOGUARD_SECRET_KEY`` therefore retires every key at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard import audit
from promoguard.errors import InvalidError, NotFoundError
from promoguard.security.models import ApiKey
from promoguard.store.db import utcnow

__all__ = ["DEPARTMENTS", "Role", "create_key", "derive_secret", "list_keys", "revoke_key"]


class Role(StrEnum):
    """What a key may do; every route declares the roles it admits."""

    STOREFRONT = "storefront"
    """Quotes, orders, coupon claims, customers' own claims."""
    OPERATOR = "operator"
    """Campaign drafts and versions, pause, rollback."""
    APPROVER = "approver"
    """Approves versions for a department."""
    AUDITOR = "auditor"
    """Reads everything, changes nothing."""
    ADMIN = "admin"
    """Everything."""


DEPARTMENTS = ("marketing", "engineering", "product")


def derive_secret(master: str, key_id: str) -> str:
    """The secret of key ``key_id`` under the server's secret key."""
    digest = hmac.new(master.encode(), f"api-key:{key_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _check_networks(allowed_ips: list[str]) -> list[str]:
    networks = []
    for n, text in enumerate(allowed_ips):
        try:
            networks.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise InvalidError(
                "invalid_network",
                f"{text!r} is not an IP address or CIDR range",
                errors=[(f"allowed_ips[{n}]", "not an IP address or CIDR range")],
            ) from None
    return networks


async def create_key(
    session: AsyncSession,
    *,
    master: str,
    role: Role,
    created_by: str,
    department: str | None = None,
    label: str = "",
    allowed_ips: list[str] | None = None,
    owner: str = "",
) -> tuple[ApiKey, str]:
    """Create a key; returns it and its secret (shown once, never stored)."""
    if role == Role.APPROVER and department not in DEPARTMENTS:
        raise InvalidError(
            "department_required",
            f"an approver key needs a department: one of {', '.join(DEPARTMENTS)}",
            errors=[("department", "required for approvers")],
        )
    if role != Role.APPROVER and department is not None:
        raise InvalidError(
            "department_not_applicable",
            "only approver keys have a department",
            errors=[("department", "only for approvers")],
        )
    key_id = f"pk_{secrets.token_hex(8)}"
    secret = derive_secret(master, key_id)
    key = ApiKey(
        id=key_id,
        role=role,
        department=department,
        label=label,
        owner=owner,
        secret_sha256=hashlib.sha256(secret.encode()).hexdigest(),
        allowed_ips=_check_networks(allowed_ips or []),
        created_by=created_by,
        created_at=utcnow(),
    )
    session.add(key)
    audit.record(
        session,
        actor=created_by,
        action="key.created",
        subject_type="api_key",
        subject_id=key_id,
        detail={
            "role": role,
            "department": department,
            "owner": owner,
            "allowed_ips": key.allowed_ips,
        },
    )
    await session.flush()
    return key, secret


async def revoke_key(session: AsyncSession, *, key_id: str, actor: str) -> ApiKey:
    """Revoke a key for good."""
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise NotFoundError("key_not_found", f"no API key {key_id!r}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        audit.record(
            session, actor=actor, action="key.revoked", subject_type="api_key", subject_id=key_id
        )
    return key


async def list_keys(session: AsyncSession) -> list[ApiKey]:
    """Every key, newest first."""
    rows = await session.scalars(select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id))
    return list(rows.all())
