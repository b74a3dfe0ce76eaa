"""Rate limits per key, per customer, per IP and per route, with the ``limits`` library.

Moving-window counters live in memory when embedded (one budget per process) and in Redis when
configured (one budget shared by every worker). A rejection is ``429 rate_limited`` with
``Retry-After`` and the IETF ``RateLimit-Policy`` / ``RateLimit`` headers.

Rules are ``{route: {scope: "N/period"}}``; the route ``"*"`` applies to every route, and a scope
is ``key``, ``ip``, ``customer`` or ``route`` (everyone calling that route together).
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import ConfigurationError
from limits.storage import storage_from_string

from promoguard.errors import PromoguardError
from promoguard.security.nonces import StoreUnavailableError

__all__ = ["RateLimitedError", "RateLimits"]

log = logging.getLogger(__name__)


class RateLimitedError(PromoguardError):
    """Over a rate limit."""

    status = 429


class RateLimits:
    """The configured limits over one storage."""

    def __init__(
        self,
        rules: dict[str, dict[str, str]],
        redis_url: str | None,
        prefix: str = "promoguard:",
    ) -> None:
        self.rules: dict[str, list[tuple[str, RateLimitItem]]] = {}
        for route, scopes in rules.items():
            try:
                self.rules[route] = [(scope, parse(text)) for scope, text in scopes.items()]
            except ValueError as exc:
                raise ConfigurationError(f"rate limit for {route!r}: {exc}") from None
        storage = (
            storage_from_string(
                f"async+{redis_url}", implementation="redispy", key_prefix=f"{prefix}limits"
            )
            if redis_url
            else storage_from_string("async+memory://")
        )
        assert isinstance(storage, Storage)
        self.storage = storage
        self._limiter = MovingWindowRateLimiter(self.storage)

    async def hit(self, route: str, subjects: dict[str, str]) -> None:
        """Count one request against every limit for ``route``; raise if any is exhausted.

        ``subjects`` maps scopes to who is calling (``{"key": "pk_..", "ip": "203.0.113.9"}``);
        only the limits of those scopes are counted (``"route": <route>`` counts the route's
        shared budget), so a route can add its ``customer`` limit in a second call.
        """
        for scope, item in self.rules.get(route, []) + self.rules.get("*", []):
            who = subjects.get(scope)
            if who is None:
                continue
            namespace = (route if route in self.rules else "*", scope, who)
            try:
                allowed = await self._limiter.hit(item, *namespace)
                if allowed:
                    continue
                stats = await self._limiter.get_window_stats(item, *namespace)
            except Exception:  # the store is down: fail closed
                log.exception("rate-limit store unavailable")
                raise StoreUnavailableError(
                    "security_store_unavailable", "the rate-limit store is unavailable"
                ) from None
            retry = max(1, math.ceil(stats.reset_time - time.time()))
            window = item.get_expiry()
            raise RateLimitedError(
                "rate_limited",
                f"too many requests: at most {item.amount} per {window} s per {scope} "
                f"on {route}; retry in {retry} s",
                headers={
                    "Retry-After": str(retry),
                    "RateLimit-Policy": f'"{scope}";q={item.amount};w={window}',
                    "RateLimit": f'"{scope}";r=0;t={retry}',
                },
            )
