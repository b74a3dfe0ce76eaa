"""Configuration from the environment (``PROMOGUARD_*``), with embedded defaults that need nothing.

The defaults run everything on one SQLite file in the working directory. Production sets
``PROMOGUARD_ENVIRONMENT=production``, a real ``PROMOGUARD_SECRET_KEY``, a PostgreSQL
``PROMOGUARD_DATABASE_URL`` and usually ``PROMOGUARD_REDIS_URL``.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVELOPMENT_SECRET = "development-only-secret-change-me"


class Settings(BaseSettings):
    """Everything promoguard can be told; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="PROMOGUARD_", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    database_url: str = Field(
        default="sqlite:///promoguard.db",
        description="sqlite:///path.db (default) or postgresql+psycopg://user@host/db",
    )
    redis_url: str | None = Field(default=None, description="redis://host:6379/0 when scaled")
    redis_prefix: str = Field(
        default="promoguard:", max_length=64, description="prefix of every key promoguard writes"
    )
    secret_key: str = Field(default=DEVELOPMENT_SECRET, min_length=16)
    quote_ttl_seconds: int = Field(default=900, ge=10, le=86_400)
    rules_refresh_seconds: float = Field(
        default=0.5, gt=0, le=60, description="how often a worker checks for rule changes"
    )
    max_discount_ratio: str = Field(default="0.9", description="shop-wide guard, see the engine")
    signing_required: list[str] = Field(
        default=["storefront", "operator", "approver", "auditor", "admin"],
        description="roles whose requests must be signed; others may use a bearer key",
    )
    clock_skew_seconds: int = Field(default=300, ge=5, le=3600)
    trusted_proxies: list[str] = Field(
        default_factory=list, description="CIDRs whose X-Forwarded-For is believed"
    )
    rate_limits: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {"coupon_claim": {"customer": "10/minute"}},
        description='{route: {scope: "N/period"}}; scopes: key, ip, customer, route; "*" = all',
    )

    metrics_roles: list[str] = Field(
        default_factory=list,
        description="roles whose key may read /metrics; empty: open (scrapers usually sit "
        "inside the network)",
    )
    reservation_ttl_seconds: int = Field(
        default=1800,
        ge=10,
        le=7 * 86_400,
        description="an unpaid order's stock, budget and limits are released after this",
    )
    sweep_interval_seconds: float = Field(
        default=30, gt=0, le=3600, description="how often a worker runs the sweeper"
    )
    default_region: str = Field(
        default="CN", pattern=r"^[A-Z]{2}$", description="region of phone numbers without +"
    )
    member_tiers_url: str | None = Field(
        default=None,
        description="base URL of the member-tier service; unset: the shop's asserted tier is used",
    )
    inventory_url: str | None = Field(default=None, description="base URL of the inventory service")
    dependency_timeout_ms: int = Field(
        default=300, ge=10, le=30_000, description="timeout of one call to a dependency"
    )
    breaker_threshold: int = Field(
        default=5, ge=1, le=1000, description="failures in a row that open a breaker"
    )
    breaker_reset_seconds: float = Field(
        default=10, gt=0, le=3600, description="how long an open breaker waits before a trial"
    )

    @model_validator(mode="after")
    def _no_default_secret_in_production(self) -> Self:
        if self.environment == "production" and self.secret_key == DEVELOPMENT_SECRET:
            raise ValueError("set PROMOGUARD_SECRET_KEY: the development secret is refused")
        return self
