"""Shared pieces of the HTTP layer: problem+json, the services on ``app.state``, the gate every
route declares (:func:`allow`) and the acting key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import BaseModel, Field

from promoguard.campaigns.live import LiveRules
from promoguard.monitoring.telemetry import Telemetry
from promoguard.monitoring.watch import Watch
from promoguard.orders.service import Checkout
from promoguard.security.context import Principal, current
from promoguard.security.guard import Guard
from promoguard.security.keys import Role
from promoguard.settings import Settings
from promoguard.store.db import Database

__all__ = [
    "PROBLEMS",
    "Actor",
    "FieldError",
    "Problem",
    "Services",
    "Svc",
    "allow",
    "not_bool",
    "now",
]


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
    401: _problem("No valid credentials: no key, a bad signature, a stale or replayed request"),
    403: _problem("The key may not do this: wrong role or disallowed IP"),
    429: _problem("Over a rate limit: see Retry-After and the RateLimit headers"),
    503: _problem("A security store (nonces, rate limits) is unavailable: refused, try again"),
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
    guard: Guard
    telemetry: Telemetry
    watch: Watch | None = None


async def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


Svc = Annotated[Services, Depends(_services)]


def allow(*roles: Role, route: str) -> Any:
    """The dependency a route declares to admit keys of ``roles`` (admin keys always pass).

    It authenticates, checks the IP allow-list, the role, the signature and the rate limits
    (see :mod:`promoguard.security.guard`) before the route runs.
    """
    admitted = frozenset(roles)

    # The services are read straight from the app: one dependency fewer for FastAPI to solve on
    # every request (the route's own ``Svc`` is the same object).
    async def gate(request: Request) -> Principal:
        services: Services = request.app.state.services
        return await services.guard.check(request, roles=admitted, route=route)

    gate.admitted_roles = admitted  # type: ignore[attr-defined]  # read by the route audit test
    gate.route_name = route  # type: ignore[attr-defined]
    return Depends(gate)


async def _actor() -> str:
    # The gate (a route-level dependency, solved before this one) has set who is calling.
    principal = current.get()
    return "anonymous" if principal is None else principal.key_id


Actor = Annotated[str, Depends(_actor)]


def not_bool(value: Any) -> Any:
    """A ``BeforeValidator`` for whole-number inputs: JSON true/false would pass as 1/0."""
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not true or false")
    return value


def now() -> datetime:
    """The request's clock."""
    return datetime.now(UTC)
