"""Member tiers and stock from outside services, behind timeouts and circuit breakers.

``clients`` holds what promoguard calls; ``reference`` is a small service that answers those
calls (with injectable faults) for tests and the demo.
"""

from promoguard.members.clients import (
    INVENTORY,
    MEMBER_TIERS,
    AssertedTiers,
    Breakers,
    BreakerState,
    Dependencies,
    HttpInventory,
    HttpMemberTiers,
    Inventory,
    MemberTiers,
    NoInventory,
    TierAnswer,
    build_dependencies,
)

__all__ = [
    "INVENTORY",
    "MEMBER_TIERS",
    "AssertedTiers",
    "BreakerState",
    "Breakers",
    "Dependencies",
    "HttpInventory",
    "HttpMemberTiers",
    "Inventory",
    "MemberTiers",
    "NoInventory",
    "TierAnswer",
    "build_dependencies",
]
