"""Money as integer minor units (fen, cents), and the few exact operations promotions need.

Every amount in promoguard is an ``int`` of minor units, tagged by an ISO 4217 currency where it
crosses a boundary. ``Decimal`` appears only inside a conversion, with one named rounding mode.
Percentages travel as basis points (1 bp = 0.01 %), so ``apply_bps`` is exact integer arithmetic.

Rounding rule, the one that keeps the shop whole: **a discount is rounded down to the minor unit**,
so a price computed from a percentage is rounded *up*.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache

from babel.numbers import format_currency, get_currency_precision

__all__ = [
    "BPS_WHOLE",
    "Money",
    "MoneyError",
    "allocate",
    "discount_bps",
    "format_minor",
    "formatter",
    "minor_exponent",
    "parse_minor",
    "percent_to_bps",
    "price_after_bps",
]

BPS_WHOLE = 10_000
"""Basis points in 100 %."""


class MoneyError(ValueError):
    """An amount or currency that cannot be represented exactly."""


@cache
def minor_exponent(currency: str) -> int:
    """Return how many decimal places the currency's minor unit has (CNY 2, JPY 0, BHD 3)."""
    return int(get_currency_precision(currency))


def parse_minor(text: str | int | Decimal, currency: str = "CNY") -> int:
    """Turn a major-unit amount as a shop writes it ("199.90") into minor units (19990).

    Args:
        text: the amount in major units; ints and Decimals are accepted, floats are not.
        currency: ISO 4217 code that fixes the number of decimal places.

    Returns:
        The amount in minor units.

    Raises:
        MoneyError: the amount is not a number or has more decimals than the currency allows.
    """
    if isinstance(text, float):
        raise MoneyError("floats are not money: pass the amount as a string")
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise MoneyError(f"not an amount: {text!r}") from exc
    if not value.is_finite():
        raise MoneyError(f"not an amount: {text!r}")
    scaled = value.scaleb(minor_exponent(currency))
    if scaled != scaled.to_integral_value():
        raise MoneyError(
            f"{text} has more decimals than {currency} allows ({minor_exponent(currency)})"
        )
    return int(scaled)


def format_minor(amount: int, currency: str = "CNY") -> str:
    """Render minor units as a plain major-unit string: 18000 -> "180.00"."""
    return formatter(currency)(amount)


@cache
def formatter(currency: str) -> Callable[[int], str]:
    """A fast :func:`format_minor` bound to one currency, for code that formats a lot."""
    exp = minor_exponent(currency)
    if not exp:
        return str

    def fmt(amount: int) -> str:
        # Digits and a cut, not divmod and a format spec: the engine formats on every quote.
        if amount < 0:
            return "-" + fmt(-amount)
        digits = str(amount).rjust(exp + 1, "0")
        return f"{digits[:-exp]}.{digits[-exp:]}"

    return fmt


def percent_to_bps(percent: Decimal) -> int:
    """Convert a percentage with at most two decimals (12.5) to basis points (1250)."""
    bps = percent * 100
    if bps != bps.to_integral_value():
        raise MoneyError(f"{percent}% is finer than a basis point")
    return int(bps)


def discount_bps(amount: int, bps: int) -> int:
    """Return ``bps`` basis points of ``amount``, rounded down: the discount never over-pays."""
    return amount * bps // BPS_WHOLE


def price_after_bps(amount: int, off_bps: int) -> int:
    """Return what is left of ``amount`` after ``off_bps`` off; the price rounds up."""
    return amount - discount_bps(amount, off_bps)


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` over ``weights`` in proportion, by the largest-remainder method.

    The parts sum exactly to ``total``. Ties on the remainder go to the earlier weight, so the
    result is deterministic. When ``0 <= total <= sum(weights)`` no part exceeds its weight, which
    is what lets a discount be spread over order lines without pushing any line below zero.

    Args:
        total: the amount to split, in minor units (non-negative).
        weights: non-negative weights, usually the lines' current amounts.

    Returns:
        One part per weight.
    """
    if total < 0:
        raise MoneyError("cannot allocate a negative amount")
    weight_sum = sum(weights)
    if weight_sum > 0 and (total == weight_sum or len(weights) == 1):
        return [total] if len(weights) == 1 else list(weights)
    if weight_sum <= 0:
        if total:
            raise MoneyError("cannot allocate a positive amount over zero weights")
        return [0] * len(weights)
    parts = [total * weight // weight_sum for weight in weights]
    left = total - sum(parts)
    if left:
        # The largest remainders take one unit more each. A reversed sort keeps equal keys in
        # their order, so ties go to the earlier weight.
        remainders = [total * weight % weight_sum for weight in weights]
        for index in sorted(range(len(parts)), key=remainders.__getitem__, reverse=True)[:left]:
            parts[index] += 1
    return parts


@dataclass(frozen=True, slots=True)
class Money:
    """An amount of one currency in minor units; arithmetic refuses to mix currencies."""

    amount: int
    currency: str = "CNY"

    def __post_init__(self) -> None:
        if not isinstance(self.amount, int) or isinstance(self.amount, bool):
            raise MoneyError(f"money is integer minor units, not {type(self.amount).__name__}")

    @classmethod
    def of(cls, major: str | int | Decimal, currency: str = "CNY") -> Money:
        """Build from a major-unit amount as a shop writes it: ``Money.of("230.00")``."""
        return cls(parse_minor(major, currency), currency)

    def _same(self, other: Money) -> None:
        if self.currency != other.currency:
            raise MoneyError(f"cannot mix {self.currency} and {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __str__(self) -> str:
        return f"{format_minor(self.amount, self.currency)} {self.currency}"

    def display(self, locale: str = "zh_CN") -> str:
        """Format for people with the locale's currency sign: ``¥230.00``."""
        major = Decimal(self.amount).scaleb(-minor_exponent(self.currency))
        return str(format_currency(major, self.currency, locale=locale))

    def split(self, weights: Sequence[int]) -> list[Money]:
        """Allocate this amount over ``weights`` by largest remainder (see :func:`allocate`)."""
        return [Money(part, self.currency) for part in allocate(self.amount, weights)]
