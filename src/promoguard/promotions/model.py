"""What the engine reads (a cart, a customer's facts) and what it answers (a quote).

Inputs are frozen pydantic models, so a cart from JSON or HTTP is checked once at the boundary and
then read by the engine at plain-attribute speed. Outputs are typed named tuples: immutable like
frozen dataclasses but about twice as quick to build, which matters because the engine builds a
few dozen per quote (``bench/pricing.py`` measured frozen dataclasses at a fifth of a quote's
time). :meth:`Quote.as_dict` gives the JSON shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, NamedTuple, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from promoguard.money import format_minor
from promoguard.promotions.rules import Label, Layer

__all__ = [
    "Cart",
    "CartLine",
    "Customer",
    "Explanation",
    "FrozenInput",
    "GuardTrip",
    "LineDiscount",
    "OrderDiscount",
    "Quote",
    "QuoteLine",
]


class FrozenInput(BaseModel):
    """Base of every input model: unknown fields refused, immutable, strings stripped (so a
    blank name is refused at the boundary, not deeper in)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class CartLine(FrozenInput):
    """One SKU at its list unit price; ``floor_price`` is the lowest unit price the shop allows."""

    sku: Label
    category: Label
    tags: frozenset[Label] = frozenset()
    # Strict: money and counts are JSON integers, never true/false or "12" coerced into one.
    unit_price: int = Field(
        ge=0, le=10**12, strict=True, description="list unit price in minor units"
    )
    quantity: int = Field(ge=1, le=10_000, strict=True)
    floor_price: int | None = Field(default=None, ge=0, le=10**12, strict=True)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags_once_each(cls, value: Any) -> Any:
        strings = isinstance(value, list | tuple) and all(isinstance(t, str) for t in value)
        if strings and len(set(value)) != len(value):
            raise ValueError("each tag once: the list has duplicates")
        return value  # anything else is for the field's own validation to refuse


class Cart(FrozenInput):
    """The lines to price, in one currency; a SKU appears on one line only."""

    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    lines: tuple[CartLine, ...] = Field(min_length=1, max_length=500)

    @model_validator(mode="after")
    def _one_line_per_sku(self) -> Self:
        seen: set[str] = set()
        for line in self.lines:
            if line.sku in seen:
                raise ValueError(f"sku {line.sku} is on two lines: merge them into one quantity")
            seen.add(line.sku)
        return self


class Customer(FrozenInput):
    """Facts about the customer, decided by trusted services; the engine never infers them."""

    id: Label
    member_tier: Label | None = None
    first_order: bool = Field(default=False, description="no earlier paid order for the identity")
    groups: frozenset[Label] = Field(
        default=frozenset(), description="group_buy rule ids the customer holds a group place for"
    )
    coupons: frozenset[Label] = Field(
        default=frozenset(), description="coupon rule ids the customer holds and may use here"
    )
    flash_sale_used: Mapping[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description="units already bought per flash_sale rule id"
    )
    unavailable: Mapping[str, str] = Field(
        default_factory=dict,
        description="rule id -> why it cannot be had now (its stock, budget or a limit is used "
        "up); the engine leaves those rules out",
    )


class LineDiscount(NamedTuple):
    """The share of one rule's discount that one line carries."""

    rule_id: str
    rule_version: int
    kind: str
    amount: int


class QuoteLine(NamedTuple):
    """A priced line: list amount, final amount and every discount allocated to it."""

    sku: str
    quantity: int
    unit_price: int
    list_amount: int
    final_amount: int
    discounts: tuple[LineDiscount, ...]

    @property
    def discount(self) -> int:
        """Everything taken off this line."""
        return self.list_amount - self.final_amount


class OrderDiscount(NamedTuple):
    """One rule's whole discount on the order and how it was split over the lines."""

    rule_id: str
    rule_version: int
    kind: str
    layer: Layer
    amount: int
    allocations: tuple[int, ...]
    """Per cart line, in cart order; sums exactly to ``amount``."""


class GuardTrip(NamedTuple):
    """The guard cut a discount: which rule, which limit, what was asked and what was given."""

    rule_id: str | None
    limit: str
    """``line_floor``, ``rule_max_ratio`` or ``order_max_ratio``."""
    requested: int
    granted: int
    detail: str


class Explanation(NamedTuple):
    """Why a rule in scope did or did not apply, in words a shop would use."""

    rule_id: str
    rule_version: int
    applied: bool
    message: str


class Quote(NamedTuple):
    """A priced cart. ``total == list_total - discount_total`` and is never negative."""

    currency: str
    lines: tuple[QuoteLine, ...]
    list_total: int
    discount_total: int
    total: int
    discounts: tuple[OrderDiscount, ...]
    trips: tuple[GuardTrip, ...]
    explanation: tuple[Explanation, ...] = ()

    def fmt(self, amount: int) -> str:
        """Format an amount of this quote's currency: ``180.00``."""
        return format_minor(amount, self.currency)

    def as_dict(self) -> dict[str, Any]:
        """The quote as plain JSON-ready data: objects for every record, layers by name."""
        return {
            "currency": self.currency,
            "lines": [
                {
                    "sku": line.sku,
                    "quantity": line.quantity,
                    "unit_price": line.unit_price,
                    "list_amount": line.list_amount,
                    "final_amount": line.final_amount,
                    "discounts": [d._asdict() for d in line.discounts],
                    "discount": line.list_amount - line.final_amount,
                }
                for line in self.lines
            ],
            "list_total": self.list_total,
            "discount_total": self.discount_total,
            "total": self.total,
            "discounts": [
                {
                    "rule_id": d.rule_id,
                    "rule_version": d.rule_version,
                    "kind": d.kind,
                    "layer": d.layer.name.lower(),
                    "amount": d.amount,
                    "allocations": list(d.allocations),
                }
                for d in self.discounts
            ],
            "trips": [t._asdict() for t in self.trips],
            "explanation": [e._asdict() for e in self.explanation],
        }
