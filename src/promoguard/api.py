"""Shared pieces of the HTTP layer: problem+json, the services on ``app.state``, the actor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from pydantic import BaseModel, Field

from promoguard.campaigns.live import LiveRules
from promoguard.orders.service import Checkout
from promoguard.settings import Settings
from promoguard.store.db import Database

__all__ = ["PROBLEMS", "Actor", "FieldError", "Problem", "Services", "Svc", "now"]


class FieldError(BaseModel):
    """One field at fault."""

    path: str
    reason: str


class Problem(BaseModel):
    """An RFC 9457 problem: ``code`` is stable and machine-readable; ``detail`` is for people."""

    type: str = Field(description="a URI naming the problem type")
    title: str
    status: int
    code: str = Field(description="stable machine-readable error code (see the README)")
    detail: str
    errors: list[FieldError] = Field(default_factory=list)


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "model": Problem,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: _problem("The request breaks the protocol (a required header is missing)"),
    404: _problem("Not found"),
    409: _problem("Conflicts with the current state"),
    422: _problem("Invalid input: see `errors` for the field paths"),
}


@dataclass(slots=True)
class Services:
    """Everything a request handler needs, built once per process by the app factory."""

    settings: Settings
    db: Database
    live: LiveRules
    checkout: Checkout


async def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


Svc = Annotated[Services, Depends(_services)]


async def _actor(x_actor: Annotated[str | None, Header(max_length=128)] = None) -> str:
    # Who is acting, for the audit log. API keys and roles (the security issue) replace this.
    return x_actor or "anonymous"


Actor = Annotated[str, Depends(_actor)]


def now() -> datetime:
    """The request's clock."""
    return datetime.now(UTC)
