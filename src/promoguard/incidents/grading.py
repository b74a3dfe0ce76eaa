"""How bad an incident is, and who must act by when: pure functions over an :class:`Impact`.

**Grading** (:func:`grade`). Each severity from P0 down has a bar; the worst bar an impact clears
is its grade, P3 when it clears none. The defaults follow common practice in Chinese e-commerce
operations and are configurable (``PROMOGUARD_INCIDENT_POLICY``, JSON of :class:`IncidentPolicy`):

====  ======================================================  ===========  ===========
..    clears the bar when any of                              acknowledge  respond
====  ======================================================  ===========  ===========
P0    checkout or payment down; 20 % of active customers      5 min        15 min
      (and 500 or more); ¥50,000 at stake
P1    5 % of active customers (and 50 or more); ¥5,000 at     10 min       30 min
      stake; 100 orders
P2    any customer, order or money affected                   30 min       2 h
P3    nothing measurable (cosmetic)                           next         next
                                                              working day  working day
====  ======================================================  ===========  ===========

*Money at stake* is the discount given beyond intent plus the refunds owed; *share* is affected
customers over the customers active in the incident's window, in basis points.

**Clocks** (:func:`deadlines`). Acknowledge and respond (reach *mitigated*) deadlines run from
the moment the incident opened, per severity; "next working day" is 10:00 on the next Monday to
Friday in the shop's time zone. A missed deadline escalates to the next on-call level (see
:mod:`promoguard.incidents.service`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from promoguard.incidents.models import Severity
from promoguard.money import BPS_WHOLE

__all__ = ["Bar", "Impact", "IncidentPolicy", "deadlines", "grade", "share_bps", "worse"]


@dataclass(frozen=True, slots=True)
class Impact:
    """What an incident has done so far. Money in minor units."""

    customers_affected: int = 0
    active_customers: int = 0
    """Customers who ordered in the incident's window (the share's denominator)."""
    orders_affected: int = 0
    discount_given: int = 0
    """Discount the incident's versions gave on the affected orders."""
    beyond_intent: int = 0
    """The part of it beyond what was intended (an estimate until the orders are re-priced)."""
    refunds_owed: int = 0
    checkout_down: bool = False
    payment_down: bool = False

    @property
    def money_at_stake(self) -> int:
        """Discount beyond intent plus refunds owed."""
        return self.beyond_intent + self.refunds_owed

    @property
    def share_bps(self) -> int:
        """Affected customers over active customers, basis points."""
        return share_bps(self.customers_affected, self.active_customers)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived figures."""
        return {**asdict(self), "money_at_stake": self.money_at_stake, "share_bps": self.share_bps}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Impact:
        """Read back :meth:`as_dict` (derived figures ignored)."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})

    def combined(self, other: Impact) -> Impact:
        """The larger of each figure: what was measured and what people reported."""
        return Impact(
            customers_affected=max(self.customers_affected, other.customers_affected),
            active_customers=max(self.active_customers, other.active_customers),
            orders_affected=max(self.orders_affected, other.orders_affected),
            discount_given=max(self.discount_given, other.discount_given),
            beyond_intent=max(self.beyond_intent, other.beyond_intent),
            refunds_owed=max(self.refunds_owed, other.refunds_owed),
            checkout_down=self.checkout_down or other.checkout_down,
            payment_down=self.payment_down or other.payment_down,
        )


def share_bps(part: int, whole: int) -> int:
    """``part / whole`` in basis points, rounded down; 10,000 when there is no whole but a part."""
    if whole <= 0:
        return BPS_WHOLE if part > 0 else 0
    return min(BPS_WHOLE, part * BPS_WHOLE // whole)


class Bar(BaseModel):
    """What an impact must reach (any one of) for a severity; None is "not by this measure"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    outage: bool = Field(default=False, description="checkout or payment down clears it")
    share_bps: int | None = Field(default=None, ge=0, le=BPS_WHOLE)
    share_needs: int = Field(
        default=0, ge=0, description="affected customers a share counts from (small samples lie)"
    )
    money: int | None = Field(default=None, ge=0, description="money at stake, minor units")
    orders: int | None = Field(default=None, ge=0)
    customers: int | None = Field(default=None, ge=0)

    def cleared_by(self, impact: Impact) -> bool:
        """Whether ``impact`` reaches this bar."""
        return (
            (self.outage and (impact.checkout_down or impact.payment_down))
            or (
                self.share_bps is not None
                and impact.customers_affected >= self.share_needs
                and impact.share_bps >= self.share_bps
            )
            or (self.money is not None and impact.money_at_stake >= self.money)
            or (self.orders is not None and impact.orders_affected >= self.orders)
            or (self.customers is not None and impact.customers_affected >= self.customers)
        )


class Clock(BaseModel):
    """A severity's deadlines, in minutes after opening; None is "next working day"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    acknowledge_minutes: int | None = Field(default=None, ge=1)
    respond_minutes: int | None = Field(default=None, ge=1)


def _bars() -> dict[Severity, Bar]:
    return {
        Severity.P0: Bar(outage=True, share_bps=2000, share_needs=500, money=5_000_000),
        Severity.P1: Bar(share_bps=500, share_needs=50, money=500_000, orders=100),
        Severity.P2: Bar(money=1, orders=1, customers=1),
    }


def _clocks() -> dict[Severity, Clock]:
    return {
        Severity.P0: Clock(acknowledge_minutes=5, respond_minutes=15),
        Severity.P1: Clock(acknowledge_minutes=10, respond_minutes=30),
        Severity.P2: Clock(acknowledge_minutes=30, respond_minutes=120),
        Severity.P3: Clock(),
    }


class IncidentPolicy(BaseModel):
    """Grading bars, clocks, on-call levels and the shop's working hours."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bars: dict[Severity, Bar] = Field(default_factory=_bars)
    """P0, P1 and P2's bars (P3 has none: it is what clears no bar)."""
    clocks: dict[Severity, Clock] = Field(default_factory=_clocks)
    oncall: list[list[str]] = Field(
        default_factory=lambda: [["oncall-primary"], ["oncall-secondary"], ["engineering-lead"]],
        min_length=1,
        description="on-call levels, first to last: who is told (names or email addresses)",
    )
    timezone: str = "Asia/Shanghai"
    working_day_starts: time = time(10, 0)

    def clock(self, severity: Severity) -> Clock:
        """The severity's deadlines (next working day when not configured)."""
        return self.clocks.get(severity, Clock())


def grade(impact: Impact, policy: IncidentPolicy) -> Severity:
    """The worst severity whose bar the impact clears; P3 when it clears none."""
    for severity in (Severity.P0, Severity.P1, Severity.P2):
        bar = policy.bars.get(severity)
        if bar is not None and bar.cleared_by(impact):
            return severity
    return Severity.P3


def worse(a: Severity, b: Severity) -> Severity:
    """The worse of two severities."""
    return a if a.rank <= b.rank else b


def next_working_day(moment: datetime, policy: IncidentPolicy) -> datetime:
    """``working_day_starts`` on the first Monday-Friday after ``moment``'s day, shop time."""
    zone = ZoneInfo(policy.timezone)
    day = moment.astimezone(zone).date() + timedelta(days=1)
    while day.weekday() >= 5:  # Saturday, Sunday
        day += timedelta(days=1)
    return datetime.combine(day, policy.working_day_starts, tzinfo=zone)


def _due(start: datetime, minutes: int | None, policy: IncidentPolicy) -> datetime:
    if minutes is None:
        return next_working_day(start, policy)
    return start + timedelta(minutes=minutes)


def deadlines(
    severity: Severity, start: datetime, policy: IncidentPolicy
) -> tuple[datetime, datetime]:
    """``(acknowledge by, respond by)`` for an incident of ``severity`` from ``start``."""
    clock = policy.clock(severity)
    return (
        _due(start, clock.acknowledge_minutes, policy),
        _due(start, clock.respond_minutes, policy),
    )
