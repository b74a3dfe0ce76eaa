"""The shop's catalogue as stored: one document, replaced whole, read by lint and simulation."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard import audit
from promoguard.campaigns.models import CatalogueRecord
from promoguard.errors import InvalidError
from promoguard.promotions.catalogue import Catalogue
from promoguard.store.db import utcnow

__all__ = ["get_catalogue", "parse_catalogue", "put_catalogue"]


def parse_catalogue(document: Any) -> Catalogue:
    """A catalogue from JSON data, or ``invalid_catalogue`` with each field at fault."""
    try:
        return Catalogue.model_validate(document)
    except ValidationError as exc:
        errors = [
            (".".join(str(p) for p in err["loc"]) or "catalogue", str(err["msg"]))
            for err in exc.errors(include_url=False)
        ]
        raise InvalidError(
            "invalid_catalogue",
            f"the catalogue is invalid: {len(errors)} problem(s)",
            errors=errors,
        ) from None


async def get_catalogue(session: AsyncSession) -> Catalogue | None:
    """The stored catalogue, or None when the shop has not loaded one."""
    row = await session.get(CatalogueRecord, 1)
    return None if row is None else Catalogue.model_validate(row.document)


async def put_catalogue(session: AsyncSession, *, catalogue: Catalogue, actor: str) -> int:
    """Replace the stored catalogue; returns how many items it has."""
    document = catalogue.model_dump(mode="json")
    row = await session.get(CatalogueRecord, 1)
    if row is None:
        row = CatalogueRecord(id=1, document=document, items=len(catalogue.items), updated_by=actor)
        session.add(row)
    else:
        row.document = document
        row.items = len(catalogue.items)
        row.updated_by = actor
    row.updated_at = utcnow()
    audit.record(
        session,
        actor=actor,
        action="catalogue.replaced",
        subject_type="catalogue",
        subject_id="1",
        detail={"items": len(catalogue.items), "member_tiers": sorted(catalogue.member_tiers)},
    )
    return len(catalogue.items)
