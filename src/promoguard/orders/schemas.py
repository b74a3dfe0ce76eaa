"""What the order and quote endpoints accept and answer (pydantic models, OpenAPI from types)."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from promoguard.promotions.model import Cart, FrozenInput
from promoguard.promotions.rules import Label

__all__ = [
    "CustomerFacts",
    "GroupJoin",
    "GroupOpen",
    "OrderEventIn",
    "OrderIn",
    "QuoteRequest",
    "RefundLine",
]


class CustomerFacts(FrozenInput):
    """Who the customer is. First-order eligibility and group membership are never asserted:
    promoguard decides them from its identity ledger and its groups. The member tier is asked of
    the member-tier service when one is configured, else the shop's ``member_tier`` is used.
    Coupons come from the customer's wallet."""

    id: Label
    member_tier: Label | None = None
    phone: str | None = Field(
        default=None,
        min_length=3,
        max_length=32,
        description="any common format; without + it is read in the configured region",
    )
    device_id: str | None = Field(default=None, min_length=4, max_length=128)
    payment_fingerprint: str | None = Field(
        default=None,
        min_length=4,
        max_length=128,
        description="the payment provider's card or account fingerprint",
    )
    address: str | None = Field(default=None, min_length=4, max_length=500)


class QuoteRequest(FrozenInput):
    """Price this cart for this customer, using these coupons from their wallet."""

    customer: CustomerFacts
    cart: Cart
    coupons: list[Label] = Field(
        default_factory=list, max_length=20, description="coupon template ids from the wallet"
    )


class OrderIn(FrozenInput):
    """Commit a quote into an order."""

    quote_token: str = Field(min_length=10, max_length=200_000)


class RefundLine(FrozenInput):
    """Refund ``quantity`` units of the line with this SKU."""

    sku: Label
    quantity: int = Field(ge=1, le=10_000)


class OrderEventIn(FrozenInput):
    """Something that happened to an order in the shop."""

    type: Literal["paid", "shipped", "cancelled", "refunded"]
    lines: list[RefundLine] | None = Field(
        default=None, description="refunded only: which units; omitted = everything left"
    )
    reason: str = Field(default="", max_length=500)
    # Aware only: a naive time cannot be stored (the store refuses to guess a zone), so it is a 422.
    at: AwareDatetime | None = Field(
        default=None, description="when it happened, with its UTC offset; default now"
    )


class GroupOpen(FrozenInput):
    """Open a group of a live group-buy rule, the customer taking its first place."""

    rule_id: Label
    customer: CustomerFacts


class GroupJoin(FrozenInput):
    """Take a place in an open group."""

    customer: CustomerFacts
