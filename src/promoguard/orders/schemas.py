"""What the order and quote endpoints accept and answer (pydantic models, OpenAPI from types)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from promoguard.promotions.model import Cart

__all__ = [
    "CustomerFacts",
    "OrderEventIn",
    "OrderIn",
    "QuoteRequest",
    "RefundLine",
]

Label = Annotated[str, Field(min_length=1, max_length=128)]


class _In(BaseModel):
    # Strip like the engine's models do, so "  " is refused here (422) and not by the engine's
    # Customer later, which was a 500.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class CustomerFacts(_In):
    """Facts about the customer. Until the identity ledger (a later issue) decides first-order
    eligibility itself, the shop asserts it here; coupons are never asserted, they come from the
    customer's wallet."""

    id: Label
    member_tier: Label | None = None
    first_order: bool = Field(default=False, strict=True)
    groups: list[Label] = Field(default_factory=list, max_length=50)


class QuoteRequest(_In):
    """Price this cart for this customer, using these coupons from their wallet."""

    customer: CustomerFacts
    cart: Cart
    coupons: list[Label] = Field(
        default_factory=list, max_length=20, description="coupon template ids from the wallet"
    )


class OrderIn(_In):
    """Commit a quote into an order."""

    quote_token: str = Field(min_length=10, max_length=200_000)


class RefundLine(_In):
    """Refund ``quantity`` units of the line with this SKU."""

    sku: Label
    quantity: int = Field(ge=1, le=10_000)


class OrderEventIn(_In):
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
