"""The operator dashboard (``/ui``) and the customer claim page (``/claim``): server-rendered
HTML over the same service functions the API calls (see ``docs/dashboard.md``)."""

from __future__ import annotations

from fastapi import APIRouter

from promoguard.ui import auth, campaigns, claims, customer, health, operations

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
"""Every page of the dashboard and of the customer claim page (not in the OpenAPI document)."""
for _pages in (auth, campaigns, health, operations, claims, customer):
    router.include_router(_pages.router)
