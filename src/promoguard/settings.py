"""Configuration from the environment (``PROMOGUARD_*``), with embedded defaults that need nothing.

The defaults run everything on one SQLite file in the working directory. Production sets
``PROMOGUARD_ENVIRONMENT=production``, a real ``PROMOGUARD_SECRET_KEY``, a PostgreSQL
``PROMOGUARD_DATABASE_URL`` and usually ``PROMOGUARD_REDIS_URL``.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVELOPMENT_SECRET = "development-only-secret-change-me"
REDIS_NONCES_WITHOUT_REDIS = (
    "set PROMOGUARD_REDIS_URL: PROMOGUARD_NONCE_STORE=redis keeps nonces in Redis, and none is "
    "configured"
)


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
    nonce_store: Literal["auto", "redis", "file", "database"] = Field(
        default="auto",
        description="where signed requests' nonces are kept: auto (Redis when "
        "PROMOGUARD_REDIS_URL is set, else the nonce file), redis, file (a SQLite file every "
        "worker on the host shares; per host) or database (the used_nonces table: several hosts "
        "on one PostgreSQL without Redis)",
    )
    nonce_file: str | None = Field(
        default=None,
        description="the nonce file; unset: beside a SQLite database (promoguard.db -> "
        "promoguard.nonces.db), on PostgreSQL promoguard.nonces.db in the working directory",
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
    review_departments: list[Literal["marketing", "engineering", "product"]] = Field(
        default=["marketing", "engineering", "product"],
        min_length=1,
        description="departments that must each approve a version before it may go live",
    )
    lint_max_share_of_threshold: str = Field(
        default="0.5", description="a threshold discount above this share of its spend is linted"
    )
    lint_max_percent: str = Field(default="70", description="percent off above this is linted")
    lint_max_discount_ratio: str = Field(
        default="0.7",
        description="lint refuses a rule whose worst stacked cart is discounted more than this "
        "(the run-time guard, max_discount_ratio, caps every quote at 0.9)",
    )
    lint_widen_factor: str = Field(
        default="2", description="a live campaign's audience or depth may not grow more than this"
    )
    simulation_sample_size: int = Field(
        default=500, ge=10, le=100_000, description="recorded orders a simulation re-prices"
    )
    expected_orders_per_hour: int = Field(
        default=1000,
        ge=0,
        le=10**9,
        description="order volume a budget forecast assumes when there is no order history",
    )
    monitoring_enabled: bool = Field(
        default=True, description="run the detectors and their alert rules in every worker"
    )
    monitor_rules_path: str | None = Field(
        default=None, description="TOML alert rules; unset: the bundled defaults"
    )
    monitor_interval_seconds: float = Field(
        default=0.05, gt=0, le=60, description="how often each worker evaluates the alert rules"
    )
    monitor_buffer_size: int = Field(
        default=100_000, ge=100, le=10_000_000, description="signals a worker buffers at most"
    )
    traffic_retention_days: int = Field(
        default=90,
        ge=0,
        le=36_500,
        description="per-minute traffic sums (campaign_traffic, route_traffic) older than this "
        "are deleted by the sweeper; 0 keeps them for ever",
    )
    incident_policy: dict[str, Any] = Field(
        default_factory=dict,
        description="JSON overriding the incident grading bars, clocks, on-call levels, time "
        "zone (see promoguard/incidents/grading.py; {} keeps the defaults)",
    )
    queue_path: str = Field(
        default="promoguard-queue.db",
        description="the job queue's SQLite file when Redis is not configured (with Redis the "
        "queue lives there)",
    )
    remediation_policy: dict[str, Any] = Field(
        default_factory=dict,
        description="JSON overriding the remediation policy per severity (see "
        "promoguard/remediation/policy.py; {} keeps the defaults)",
    )
    incident_check_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="how often deadlines and impact are checked"
    )

    notify_webhook_urls: list[str] = Field(
        default_factory=list,
        description="URLs every notification event is POSTed to, signed; see docs/notifications.md",
    )
    notify_webhook_key_id: str = Field(
        default="promoguard-notify",
        min_length=1,
        max_length=64,
        description="key id outbound webhooks are signed with (X-Promoguard-Key)",
    )
    notify_webhook_secret: str | None = Field(
        default=None,
        min_length=16,
        description="HMAC secret outbound webhooks are signed with; required with webhook URLs",
    )
    notify_webhook_timeout_seconds: float = Field(
        default=5, gt=0, le=120, description="how long one webhook POST may take"
    )
    notify_smtp_host: str | None = Field(
        default=None, description="SMTP server for notification emails; unset: no email"
    )
    notify_smtp_port: int = Field(default=587, ge=1, le=65_535, description="SMTP port")
    notify_smtp_username: str | None = Field(default=None, description="SMTP login, if any")
    notify_smtp_password: str | None = Field(default=None, description="SMTP password, if any")
    notify_smtp_from: str = Field(
        default="promoguard@localhost", description="From address of notification emails"
    )
    notify_smtp_starttls: bool = Field(
        default=True, description="upgrade the SMTP connection with STARTTLS (required if on)"
    )
    notify_smtp_timeout_seconds: float = Field(
        default=10, gt=0, le=300, description="how long one SMTP conversation may take"
    )
    notify_team_emails: list[str] = Field(
        default_factory=list, description="addresses the team's incident emails go to"
    )
    notify_team_phones: list[str] = Field(
        default_factory=list, description="phone numbers the team's incident SMS go to"
    )
    notify_team_locale: Literal["zh", "en"] = Field(
        default="zh", description="language of the team's notifications"
    )
    notify_timezone: str = Field(
        default="Asia/Shanghai", description="time zone times are shown in by the templates"
    )
    notify_sms_path: str | None = Field(
        default=None,
        description="JSON-lines file SMS are appended to (no SMS provider yet); unset: the log",
    )
    notify_push_path: str | None = Field(
        default=None,
        description="JSON-lines file app pushes are appended to (no push provider yet); unset: "
        "the log",
    )
    notify_max_attempts: int = Field(
        default=6, ge=1, le=50, description="attempts per delivery before it is a dead letter"
    )
    notify_backoff_base_seconds: float = Field(
        default=2,
        gt=0,
        le=3600,
        description="wait after a delivery's first failure; doubles after each further one",
    )
    notify_backoff_max_seconds: float = Field(
        default=3600, gt=0, le=86_400, description="longest wait between two delivery attempts"
    )
    notify_interval_seconds: float = Field(
        default=1, gt=0, le=300, description="how often a worker looks for due notifications"
    )
    payment_provider_url: str | None = Field(
        default=None,
        description="base URL of the payment provider (e.g. the simulator started by "
        "`promoguard payment-provider`, http://127.0.0.1:8092); unset: payouts cannot be paid",
    )
    payment_timeout_seconds: float = Field(
        default=10, gt=0, le=300, description="how long one call to the payment provider may take"
    )
    payment_max_attempts: int = Field(
        default=6, ge=1, le=50, description="refund requests per payout before it is failed"
    )
    payment_backoff_base_seconds: float = Field(
        default=2,
        gt=0,
        le=3600,
        description="wait after a payout's first failed attempt; doubles after each further one",
    )
    payment_backoff_max_seconds: float = Field(
        default=600, gt=0, le=86_400, description="longest wait between two payout attempts"
    )
    payment_claim_timeout_seconds: float = Field(
        default=120,
        gt=0,
        le=86_400,
        description="how long a worker keeps a payout it is paying before another may take it "
        "over (longer than a provider call)",
    )
    payment_poll_seconds: float = Field(
        default=30, gt=0, le=86_400, description="how often a pending refund is looked up again"
    )
    payment_concurrency: int = Field(
        default=16, ge=1, le=256, description="provider calls one payment worker makes at once"
    )

    @model_validator(mode="after")
    def _no_default_secret_in_production(self) -> Self:
        if self.environment == "production" and self.secret_key == DEVELOPMENT_SECRET:
            raise ValueError("set PROMOGUARD_SECRET_KEY: the development secret is refused")
        return self

    @model_validator(mode="after")
    def _redis_nonces_need_redis(self) -> Self:
        if self.nonce_store == "redis" and not self.redis_url:
            raise ValueError(REDIS_NONCES_WITHOUT_REDIS)
        return self

    @model_validator(mode="after")
    def _webhooks_need_a_secret(self) -> Self:
        if self.notify_webhook_urls and not self.notify_webhook_secret:
            raise ValueError(
                "set PROMOGUARD_NOTIFY_WEBHOOK_SECRET: outbound webhooks are always signed"
            )
        return self

    @model_validator(mode="after")
    def _incident_policy_is_valid(self) -> Self:
        from promoguard.incidents.grading import IncidentPolicy  # noqa: PLC0415 (no cycle)

        IncidentPolicy.model_validate(self.incident_policy)
        return self

    @model_validator(mode="after")
    def _remediation_policy_is_valid(self) -> Self:
        from promoguard.remediation.policy import RemediationPolicy  # noqa: PLC0415 (no cycle)

        RemediationPolicy.model_validate(self.remediation_policy)
        return self
