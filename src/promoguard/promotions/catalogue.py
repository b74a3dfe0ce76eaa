"""What the shop sells: every SKU with its list price, floor price and cost, and the member tiers
the shop has. Lint checks rules against it and simulation builds synthetic carts from it.

A catalogue is a JSON file (``promoguard catalogue load FILE``, ``promoguard lint --catalogue``)::

    {"currency": "CNY", "member_tiers": ["gold", "platinum"],
     "items": [{"sku": "phone-x", "category": "electronics", "unit_price": 499900,
                "floor_price": 360000, "cost": 330000}]}

Amounts are minor units, like everywhere else.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import Field, field_validator, model_validator

from promoguard.promotions.model import CartLine, FrozenInput
from promoguard.promotions.rules import Label, Scope

__all__ = ["Catalogue", "CatalogueItem"]


def _once_each(value: Any) -> Any:
    """Refuse a list naming something twice (the schema says uniqueItems, so must we)."""
    strings = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
    if strings and len(set(value)) != len(value):
        raise ValueError("each entry once: the list has duplicates")
    return value  # anything else is for the field's own validation to refuse


class CatalogueItem(FrozenInput):
    """One SKU as the shop sells it."""

    sku: Label
    category: Label
    tags: frozenset[Label] = frozenset()
    unit_price: int = Field(ge=0, le=10**12, strict=True, description="list unit price")
    floor_price: int | None = Field(
        default=None, ge=0, le=10**12, strict=True, description="lowest unit price allowed"
    )
    cost: int | None = Field(default=None, ge=0, le=10**12, strict=True, description="unit cost")

    _tags_once_each = field_validator("tags", mode="before")(_once_each)

    def line(self, quantity: int = 1) -> CartLine:
        """A cart line of ``quantity`` units of this SKU at its list price."""
        return CartLine(
            sku=self.sku,
            category=self.category,
            tags=self.tags,
            unit_price=self.unit_price,
            quantity=quantity,
            floor_price=self.floor_price,
        )

    def lowest_allowed(self) -> int | None:
        """The unit price under which selling loses what the shop set: floor or cost."""
        limits = [p for p in (self.floor_price, self.cost) if p is not None]
        return max(limits) if limits else None


class Catalogue(FrozenInput):
    """The SKUs and member tiers of one shop, in one currency; a SKU appears once."""

    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    member_tiers: frozenset[Label] = Field(
        default=frozenset(), description="the membership tiers that exist"
    )
    items: tuple[CatalogueItem, ...] = Field(default=(), max_length=1_000_000)

    _tiers_once_each = field_validator("member_tiers", mode="before")(_once_each)

    @model_validator(mode="after")
    def _one_entry_per_sku(self) -> Self:
        seen: set[str] = set()
        for item in self.items:
            if item.sku in seen:
                raise ValueError(f"sku {item.sku} is listed twice")
            seen.add(item.sku)
        return self

    def in_scope(self, scope: Scope) -> list[CatalogueItem]:
        """The items a rule with ``scope`` may discount."""
        return [i for i in self.items if scope.covers(i.sku, i.category, i.tags)]

    @property
    def categories(self) -> frozenset[str]:
        """Every category that has at least one item."""
        return frozenset(i.category for i in self.items)
