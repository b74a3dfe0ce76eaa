"""What the service tells the detectors: one small immutable record per order, claim and request.

Signals are built on the request paths and only appended to a buffer there; the detectors read
them later (see :mod:`promoguard.monitoring.detectors`). Times are unix seconds as floats, money
is integer minor units, and identity signals arrive already hashed (``"<kind>:<hash>"``, e.g.
``"device:9f2c…"``), so monitoring never holds a phone number or an address in the clear.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClaimSignal", "OrderSignal", "RequestSignal", "Signal", "identity_kind"]


@dataclass(frozen=True, slots=True)
class OrderSignal:
    """One committed order: its totals, the customer's tier and identity, and each discount."""

    at: float
    order_id: str
    customer_id: str
    list_total: int
    """Sum of the lines at list price, minor units."""
    discount_total: int
    """Every discount on the order, minor units."""
    member_tier: str | None
    """The tier the order was priced for (None: no tier)."""
    identity: tuple[str, ...]
    """Hashed identity signals, ``"<kind>:<hash>"`` (``phone``, ``device``, ``payment``, …)."""
    discounts: tuple[tuple[str, int, int], ...]
    """``(campaign_id, version, amount)`` for each campaign version that discounted the order."""


@dataclass(frozen=True, slots=True)
class ClaimSignal:
    """One coupon claim: ``ok`` when a coupon was issued, else the refusal's error ``code``."""

    at: float
    campaign_id: str
    customer_id: str
    ok: bool
    code: str | None
    identity: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RequestSignal:
    """One HTTP request answered: the route's name, the status and how long it took."""

    at: float
    route: str
    status: int
    seconds: float


Signal = OrderSignal | ClaimSignal | RequestSignal


def identity_kind(signal: str) -> str:
    """The kind of a hashed identity signal: ``"device"`` for ``"device:9f2c…"``."""
    kind, _, _ = signal.partition(":")
    return kind
