"""``/v1/audit``: the append-only audit log, for auditors."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from promoguard.api import PROBLEMS, Svc, allow
from promoguard.audit import AuditEntry
from promoguard.errors import InvalidError
from promoguard.security.keys import Role

router = APIRouter(tags=["audit"], responses=PROBLEMS)


class AuditOut(BaseModel):
    """One audit entry."""

    id: int
    at: datetime
    actor: str
    action: str
    subject_type: str
    subject_id: str
    detail: dict[str, Any]
    key_id: str | None
    role: str | None
    ip: str | None
    request_id: str | None


@router.get(
    "/v1/audit",
    summary="Query the audit log (newest first)",
    dependencies=[allow(Role.AUDITOR, route="audit_read")],
)
async def read_audit(  # noqa: PLR0917 (FastAPI query parameters)
    svc: Svc,
    action: Annotated[str | None, Query(max_length=64)] = None,
    subject_id: Annotated[str | None, Query(max_length=128)] = None,
    key_id: Annotated[str | None, Query(max_length=32)] = None,
    since: Annotated[
        str | None,
        Query(
            pattern=r"^[1-9]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d"
            r"(:[0-5]\d(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$",
            description="ISO 8601 date-time with its UTC offset",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[AuditOut]:
    query = select(AuditEntry)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if subject_id is not None:
        query = query.where(AuditEntry.subject_id == subject_id)
    if key_id is not None:
        query = query.where(AuditEntry.key_id == key_id)
    if since is not None:
        try:
            start = datetime.fromisoformat(since)
        except ValueError as exc:
            raise InvalidError(
                "invalid_request",
                f"since is not a date-time: {exc}",
                errors=[("query.since", str(exc))],
            ) from None
        query = query.where(AuditEntry.at >= start)
    async with svc.db.read() as session:
        rows = await session.scalars(
            query.order_by(AuditEntry.id.desc()).limit(limit).offset(offset)
        )
        return [AuditOut.model_validate(r, from_attributes=True) for r in rows.all()]
