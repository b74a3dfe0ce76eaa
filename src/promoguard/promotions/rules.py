"""Typed, validated promotion rule specs: one pydantic model per kind, joined by ``kind``.

A spec is what an operator writes and what a campaign version stores. It is checked here for
values that are *impossible* (a negative amount, 120 % off, tiers out of order, an inverted
window, a field nobody knows). Values that are possible but suspicious (满50减200) are the
semantic lint's business, not this module's.

Conventions every spec follows:

* amounts are integer minor units of the rule's ``currency`` (fen for CNY);
* percentages are ``Decimal`` percent *off* with at most two decimals (``"20"`` is 20 % off,
  i.e. 8折); they become basis points when the engine compiles them;
* datetimes must carry a timezone;
* ``schema_version`` is written out with every spec so stored versions can be migrated.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from enum import IntEnum
from itertools import pairwise
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

__all__ = [
    "SCHEMA_VERSION",
    "BxGy",
    "Coupon",
    "FirstOrder",
    "FixedPrice",
    "FlashSale",
    "GroupBuy",
    "Layer",
    "Limits",
    "MemberPrice",
    "MemberTierOffer",
    "PercentOff",
    "Rule",
    "RuleSpecError",
    "Scope",
    "Threshold",
    "ThresholdTier",
    "TieredPercent",
    "TieredPercentTier",
    "dump_rules",
    "load_rules",
    "parse_rule",
    "rule_json_schema",
]

SCHEMA_VERSION = 1

Amount = Annotated[int, Field(ge=1, le=10**12, description="minor units, at least 1")]
Percent = Annotated[
    Decimal,
    Field(gt=0, le=100, decimal_places=2, description="percent off, 0 < p <= 100, two decimals"),
]
Ratio = Annotated[
    Decimal, Field(gt=0, le=1, decimal_places=4, description="share of the list total, 0 < r <= 1")
]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w.:-]*$")]
Label = Annotated[str, Field(min_length=1, max_length=128)]


class Layer(IntEnum):
    """Stacking layers, applied in this order as large Chinese shops stack them."""

    ITEM = 1
    """Unit prices: special price, flash sale, member price, group-buy (best one wins)."""
    COUNT = 2
    """Item-count promotions: buy N get M, tiered percent."""
    ORDER = 3
    """Order-level: threshold, percent off, first order."""
    COUPON = 4
    """Coupons the customer owns."""


class RuleSpecError(ValueError):
    """A spec that cannot be a rule; ``errors`` lists each problem with its field path."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{path or '<root>'}: {reason}" for path, reason in errors))

    @classmethod
    def from_validation(cls, exc: ValidationError) -> RuleSpecError:
        """Flatten a pydantic error into ``(field path, reason)`` pairs: ``tiers[1].discount``.

        The union's tag (the kind name pydantic puts in the location) is left out of the path; an
        unknown or missing kind is reported at ``kind``.
        """
        found = []
        for err in exc.errors(include_url=False):
            loc = list(err["loc"])
            # The tag sits right after the list indexes ("[2].threshold.tiers"); drop it there
            # only, so a field that happens to share a kind's name keeps its place in the path.
            tag_at = next((n for n, p in enumerate(loc) if not isinstance(p, int)), None)
            if tag_at is not None and loc[tag_at] in _KINDS:
                del loc[tag_at]
            if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                loc.append("kind")
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
            found.append((path.lstrip("."), str(err["msg"])))
        return cls(found)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Scope(_Spec):
    """Which cart lines a rule may touch. Store-wide must be said out loud: ``all_items: true``."""

    all_items: bool = False
    skus: frozenset[Label] = frozenset()
    categories: frozenset[Label] = frozenset()
    tags: frozenset[Label] = frozenset()
    exclude_skus: frozenset[Label] = frozenset()
    exclude_categories: frozenset[Label] = frozenset()
    exclude_tags: frozenset[Label] = frozenset()

    @model_validator(mode="after")
    def _says_what_it_covers(self) -> Self:
        includes = self.skus or self.categories or self.tags
        if self.all_items and includes:
            raise ValueError("all_items cannot be combined with skus, categories or tags")
        if not self.all_items and not includes:
            raise ValueError("scope is empty: name skus, categories or tags, or set all_items")
        return self

    def covers(self, sku: str, category: str, tags: Iterable[str]) -> bool:
        """Tell whether a line with this sku, category and tags is in scope."""
        if sku in self.exclude_skus or category in self.exclude_categories:
            return False
        tag_set = frozenset(tags)
        if tag_set & self.exclude_tags:
            return False
        return (
            self.all_items
            or sku in self.skus
            or category in self.categories
            or bool(tag_set & self.tags)
        )


class Limits(_Spec):
    """Run-time caps, consumed atomically when an order commits and given back when it is
    cancelled or expires unpaid. Unset means no cap."""

    budget: Amount | None = Field(
        default=None, description="most discount, in minor units, the rule may give in all"
    )
    max_redemptions: int | None = Field(
        default=None, ge=1, le=10**9, description="most orders the rule may discount"
    )
    per_customer: int | None = Field(
        default=None, ge=1, le=10_000, description="most orders per customer account"
    )
    per_identity: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="most orders per identity: accounts sharing a phone, device, payment "
        "fingerprint or address count as one",
    )


class _Rule(_Spec):
    """Fields every rule kind shares."""

    LAYER: ClassVar[Layer]

    schema_version: Literal[1] = 1
    id: Name
    version: int = Field(default=1, ge=1)
    name: str = Field(default="", max_length=200)
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    scope: Scope
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None
    exclusive: bool = Field(
        default=False,
        description="an exclusive rule touches only lines no other rule discounted, "
        "and closes them to every later rule",
    )
    priority: int = Field(default=0, ge=-1000, le=1000, description="higher applies first")
    max_discount_ratio: Ratio | None = Field(
        default=None, description="cap on the discount from list price of the lines in scope"
    )
    limits: Limits = Field(default_factory=Limits)

    @model_validator(mode="after")
    def _window_in_order(self) -> Self:
        if self.valid_from and self.valid_until and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        return self

    @property
    def layer(self) -> Layer:
        """The stacking layer this kind belongs to."""
        return self.LAYER


def _strictly_increasing(values: Sequence[Any], what: str) -> None:
    if any(b <= a for a, b in pairwise(values)):
        raise ValueError(f"tiers must be in strictly increasing order of {what}")


class ThresholdTier(_Spec):
    """满 ``min_spend`` 减 ``discount``."""

    min_spend: Amount
    discount: Amount


class Threshold(_Rule):
    """满减: spend at least X in scope, save Y; several tiers, or "每满" repeating with a cap."""

    LAYER = Layer.ORDER
    kind: Literal["threshold"] = "threshold"
    tiers: list[ThresholdTier] = Field(min_length=1, max_length=20)
    repeat: bool = Field(default=False, description="每满: the single tier applies per multiple")
    repeat_cap: Amount | None = Field(default=None, description="most a repeating tier may save")

    @model_validator(mode="after")
    def _tiers_make_sense(self) -> Self:
        _strictly_increasing([t.min_spend for t in self.tiers], "min_spend")
        if self.repeat and len(self.tiers) != 1:
            raise ValueError("a repeating (每满) threshold has exactly one tier")
        if self.repeat_cap is not None and not self.repeat:
            raise ValueError("repeat_cap only applies when repeat is true")
        return self


class PercentOff(_Rule):
    """折扣: a percentage off the lines in scope, with an optional cap on the saving."""

    LAYER = Layer.ORDER
    kind: Literal["percent_off"] = "percent_off"
    percent: Percent
    cap: Amount | None = None
    min_spend: int = Field(default=0, ge=0, le=10**12)


class TieredPercentTier(_Spec):
    """From ``min_quantity`` units in scope, ``percent`` off."""

    min_quantity: int = Field(ge=1, le=10_000)
    percent: Percent


class TieredPercent(_Rule):
    """阶梯折扣: 2 items 10 % off, 3 items 20 % off; the highest tier reached applies."""

    LAYER = Layer.COUNT
    kind: Literal["tiered_percent"] = "tiered_percent"
    tiers: list[TieredPercentTier] = Field(min_length=1, max_length=20)

    @model_validator(mode="after")
    def _tiers_make_sense(self) -> Self:
        _strictly_increasing([t.min_quantity for t in self.tiers], "min_quantity")
        return self


class FixedPrice(_Rule):
    """特价 / 一口价: a set unit price for the SKUs in scope."""

    LAYER = Layer.ITEM
    kind: Literal["fixed_price"] = "fixed_price"
    price: Amount


class BxGy(_Rule):
    """买赠 / 第二件半价: per ``buy + get`` units, ``get`` of the cheapest are ``percent`` off."""

    LAYER = Layer.COUNT
    kind: Literal["bxgy"] = "bxgy"
    buy: int = Field(ge=1, le=1000)
    get: int = Field(ge=1, le=1000)
    percent: Percent = Field(default=Decimal(100), description="100 means free")
    max_applications: int | None = Field(default=None, ge=1, le=10_000)


class MemberTierOffer(_Spec):
    """The offer for one membership tier: a unit ``price`` or a ``percent`` off, not both."""

    tier: Label
    price: Amount | None = None
    percent: Percent | None = None

    @model_validator(mode="after")
    def _one_offer(self) -> Self:
        if (self.price is None) == (self.percent is None):
            raise ValueError("give exactly one of price or percent")
        return self


class MemberPrice(_Rule):
    """会员价: a price or percentage by membership tier."""

    LAYER = Layer.ITEM
    kind: Literal["member_price"] = "member_price"
    offers: list[MemberTierOffer] = Field(min_length=1, max_length=20)

    @model_validator(mode="after")
    def _tiers_unique(self) -> Self:
        tiers = [o.tier for o in self.offers]
        if len(set(tiers)) != len(tiers):
            raise ValueError("each membership tier may have one offer only")
        return self


class FirstOrder(_Rule):
    """首单立减: an amount or percentage off an identity's first paid order."""

    LAYER = Layer.ORDER
    kind: Literal["first_order"] = "first_order"
    discount: Amount | None = None
    percent: Percent | None = None
    cap: Amount | None = None
    min_spend: int = Field(default=0, ge=0, le=10**12)

    @model_validator(mode="after")
    def _one_benefit(self) -> Self:
        if (self.discount is None) == (self.percent is None):
            raise ValueError("give exactly one of discount or percent")
        if self.cap is not None and self.percent is None:
            raise ValueError("cap only applies to a percent benefit")
        return self


class GroupBuy(_Rule):
    """拼团: a unit price for members of a complete group of ``group_size`` identities."""

    LAYER = Layer.ITEM
    kind: Literal["group_buy"] = "group_buy"
    price: Amount
    group_size: int = Field(ge=2, le=1000)
    time_limit_minutes: int = Field(default=24 * 60, ge=1, le=30 * 24 * 60)


class FlashSale(_Rule):
    """秒杀: a special unit price with limited stock and a per-customer cap on units."""

    LAYER = Layer.ITEM
    kind: Literal["flash_sale"] = "flash_sale"
    price: Amount
    stock: int = Field(ge=1, le=10**9)
    per_user_limit: int = Field(ge=1, le=10_000)


class Coupon(_Rule):
    """优惠券: a claimable voucher; ``benefit`` says which of the three shapes it takes."""

    LAYER = Layer.COUPON
    kind: Literal["coupon"] = "coupon"
    benefit: Literal["threshold", "percent", "no_threshold"]
    min_spend: int = Field(default=0, ge=0, le=10**12)
    discount: Amount | None = None
    percent: Percent | None = None
    cap: Amount | None = None
    per_user_limit: int = Field(ge=1, le=10_000)
    quantity: int = Field(ge=1, le=10**9)

    @model_validator(mode="after")
    def _benefit_is_complete(self) -> Self:
        if self.benefit == "percent":
            if self.percent is None or self.discount is not None:
                raise ValueError("a percent coupon has percent (and optionally cap), no discount")
        else:
            if self.discount is None or self.percent is not None or self.cap is not None:
                raise ValueError(f"a {self.benefit} coupon has a discount amount, no percent/cap")
            if self.benefit == "threshold" and self.min_spend <= 0:
                raise ValueError("a threshold coupon needs min_spend above zero")
            if self.benefit == "no_threshold" and self.min_spend:
                raise ValueError("a no_threshold coupon cannot have min_spend")
        return self


Rule = Annotated[
    Threshold
    | PercentOff
    | TieredPercent
    | FixedPrice
    | BxGy
    | MemberPrice
    | FirstOrder
    | GroupBuy
    | FlashSale
    | Coupon,
    Field(discriminator="kind"),
]
"""Any rule spec; the ``kind`` field picks the model."""

_KINDS = frozenset(
    model.model_fields["kind"].default
    for model in (
        Threshold,
        PercentOff,
        TieredPercent,
        FixedPrice,
        BxGy,
        MemberPrice,
        FirstOrder,
        GroupBuy,
        FlashSale,
        Coupon,
    )
)
_RULE: TypeAdapter[Rule] = TypeAdapter(Rule)
_RULES: TypeAdapter[list[Rule]] = TypeAdapter(list[Rule])


def parse_rule(data: Any) -> Rule:
    """Validate one spec from a dict or JSON text; raise :class:`RuleSpecError` with field paths."""
    try:
        if isinstance(data, str | bytes):
            return _RULE.validate_json(data)
        return _RULE.validate_python(data)
    except ValidationError as exc:
        raise RuleSpecError.from_validation(exc) from None


def load_rules(data: str | bytes) -> list[Rule]:
    """Validate a JSON array of specs; error paths start with the rule's index: ``[2].tiers``."""
    try:
        rules = _RULES.validate_json(data)
    except ValidationError as exc:
        raise RuleSpecError.from_validation(exc) from None
    seen: set[tuple[str, int]] = set()
    for index, rule in enumerate(rules):
        key = (rule.id, rule.version)
        if key in seen:
            raise RuleSpecError([(f"[{index}].id", f"duplicate rule {rule.id} v{rule.version}")])
        seen.add(key)
    return rules


def dump_rules(rules: Sequence[Rule], *, indent: int | None = 2) -> str:
    """Serialise specs to JSON that :func:`load_rules` reads back to equal specs."""
    return _RULES.dump_json(list(rules), indent=indent).decode()


def rule_json_schema() -> dict[str, Any]:
    """The JSON Schema of one rule spec, every kind included."""
    return _RULE.json_schema()
