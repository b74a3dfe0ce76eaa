"""The application factory: ``create_app(settings)`` wires the services and maps every error to
an RFC 9457 problem. Nothing happens at import time."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promoguard import __version__
from promoguard.api import Services, allow
from promoguard.campaigns import service as campaign_service
from promoguard.campaigns.live import LiveRules
from promoguard.campaigns.routes import catalogue_router
from promoguard.campaigns.routes import router as campaigns_router
from promoguard.claims.routes import router as claims_router
from promoguard.coupons.routes import router as coupons_router
from promoguard.errors import PromoguardError, UnavailableError
from promoguard.incidents.desk import IncidentDesk
from promoguard.incidents.grading import IncidentPolicy
from promoguard.incidents.notices import announcer
from promoguard.incidents.routes import router as incidents_router
from promoguard.loops import Periodic
from promoguard.members.clients import build_dependencies
from promoguard.metrics import ServiceMetrics, metrics_response, new_registry
from promoguard.monitoring.alert_rules import AlertRule, default_rules, load_rules
from promoguard.monitoring.bus import RedisBus
from promoguard.monitoring.retention import prune_old_traffic
from promoguard.monitoring.routes import router as alerts_router
from promoguard.monitoring.routes import routes_router, traffic_router
from promoguard.monitoring.telemetry import Telemetry
from promoguard.monitoring.watch import Watch
from promoguard.notify.service import Notifications
from promoguard.orders.routes import router as orders_router
from promoguard.orders.service import Checkout
from promoguard.plans.routes import router as plans_router
from promoguard.promotions.engine import PricingPolicy
from promoguard.security.guard import Guard
from promoguard.security.keys import Role
from promoguard.security.nonces import nonce_store
from promoguard.security.ratelimit import RateLimits
from promoguard.security.routes import router as audit_router
from promoguard.settings import Settings
from promoguard.store.counters import RedisCounters, SqlCounters
from promoguard.store.db import Database
from promoguard.ui import router as ui_router

__all__ = ["create_app", "problem"]

log = logging.getLogger("promoguard")
SCHEDULER_SECONDS = 1.0
"""How often each worker looks for scheduled versions that are due."""
PROBLEM_JSON = "application/problem+json"


def problem(
    status: int,
    code: str,
    detail: str,
    errors: list[tuple[str, str]] | None = None,
    **extra: object,
) -> JSONResponse:
    """An RFC 9457 problem+json response."""
    body = {
        "type": f"https://promoguard.dev/problems/{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "code": code,
        "detail": detail,
        "errors": [{"path": path, "reason": reason} for path, reason in errors or []],
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def _path(loc: tuple[int | str, ...]) -> str:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        where = parts.pop(0)
        if where != "body" and parts:
            return f"{where}.{parts[0]}" if where != "header" else str(parts[0])
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (routes are per method, so ask each one)."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PromoguardError)
    async def _ours(request: Request, exc: PromoguardError) -> JSONResponse:
        if exc.status in REJECTIONS:
            telemetry: Telemetry | None = getattr(request.app.state, "telemetry", None)
            if telemetry is not None:
                telemetry.rejected(exc.code)
        response = problem(exc.status, exc.code, exc.detail, exc.errors, **exc.extra)
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [(_path(tuple(e["loc"])), str(e["msg"])) for e in exc.errors()]
        where = ", ".join(p or "<body>" for p, _ in errors[:5])
        return problem(422, "invalid_request", f"the request is invalid at {where}", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = problem(exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})
        if exc.status_code == 405 and (allowed := _allowed_methods(request)):
            # RFC 9110: a 405 lists every method the resource supports. Starlette's own header
            # names only the first route that matched the path, not the others on the same path.
            response.headers["Allow"] = allowed
        return response

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        # PostgreSQL text cannot hold NUL, which JSON ("\u0000"), paths and queries (%00) can
        # carry into any string; the driver refuses to send it. That is the input's fault.
        if "cannot contain NUL" in str(exc.orig):
            return problem(422, "invalid_request", "text cannot contain NUL (U+0000) characters")
        return await _bug(request, exc)

    @app.exception_handler(RedisError)
    async def _redis_down(_: Request, exc: RedisError) -> JSONResponse:
        # A shared counter (stock, budget, limits) cannot be read or taken: refused, not
        # guessed; the request's transaction has rolled back.
        log.warning("Redis unavailable: %s", exc)
        return problem(
            503,
            "counter_store_unavailable",
            "the shared counter store (Redis) is unavailable: nothing was done, try again",
        )

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "internal_error", "something went wrong on our side; it is logged")


async def _sweep(checkout: Checkout, db: Database, live: LiveRules, retention_days: int) -> None:
    """One sweep (every worker runs one every ``PROMOGUARD_SWEEP_INTERVAL_SECONDS``; the sweeps
    are safe to overlap): unpaid orders, expired groups, campaigns whose window closed, and
    traffic sums older than ``retention_days``. A failing sweep is logged by its loop and tried
    again next time."""
    report = await checkout.sweep(datetime.now(UTC))
    async with db.write() as session:
        ended = await campaign_service.end_closed(session, now=datetime.now(UTC))
    if ended:
        log.info("campaigns: %s", "; ".join(ended))
        await live.announce()
    report |= await prune_old_traffic(db, datetime.now(UTC), retention_days)
    if any(report.values()):
        log.info("swept: %s", report)


async def _load_counters(checkout: Checkout) -> None:
    """Load an empty counter store (Redis) from the record before this worker takes anything;
    if Redis does not answer yet, the sweeper tries again (takes are refused until then)."""
    try:
        await checkout.load_counters()
    except (RedisError, UnavailableError) as exc:
        log.warning("counters: not loaded at start (%s); the sweeper tries again", exc)


async def _start_scheduled(db: Database, live: LiveRules) -> None:
    """Make due scheduled versions live, then tell every worker (one cheap read when idle)."""
    at = datetime.now(UTC)
    async with db.read() as session:
        if not await campaign_service.schedule_due(session, now=at):
            return
    async with db.write() as session:
        done = await campaign_service.start_due(session, now=at)
    if done:
        log.info("scheduler: %s", "; ".join(done))
        await live.announce()


REJECTIONS = frozenset({401, 403, 429, 503})
"""Statuses of the security layer's refusals, counted by code in the metrics."""


class RequestTelemetry:
    """ASGI middleware: every HTTP request's route template, status and duration to telemetry."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request and report it once the response has gone."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            telemetry: Telemetry | None = getattr(scope["app"].state, "telemetry", None)
            if telemetry is not None:
                route = getattr(scope.get("route"), "path", "unmatched")
                telemetry.request(route, scope["method"], status, time.perf_counter() - started)


def _alert_rules(settings: Settings) -> list[AlertRule]:
    if settings.monitor_rules_path is None:
        return default_rules()
    with open(settings.monitor_rules_path, encoding="utf-8") as file:
        return load_rules(file.read())


def _include_routers(app: FastAPI) -> None:
    # A request is matched against the routes in this order, each router's routes one by one:
    # the quote and order routes, the busiest, come first (no two routers share a path).
    app.include_router(orders_router)
    app.include_router(campaigns_router)
    app.include_router(catalogue_router)
    app.include_router(coupons_router)
    app.include_router(audit_router)
    app.include_router(alerts_router)
    app.include_router(traffic_router)
    app.include_router(routes_router)
    app.include_router(incidents_router)
    app.include_router(plans_router)
    app.include_router(claims_router)
    app.include_router(ui_router)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the promoguard API for ``settings`` (from the environment when omitted)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.database_url)
        policy = PricingPolicy(max_discount_ratio=Decimal(settings.max_discount_ratio))
        redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        live = LiveRules(
            db,
            policy,
            settings.rules_refresh_seconds,
            redis=redis,
            channel=f"{settings.redis_prefix}rules",
        )
        await live.start()
        # A registry per lifespan: a test client may start the same app more than once.
        app.state.registry = registry = new_registry()
        service_metrics = ServiceMetrics(registry)
        deps = build_dependencies(settings, registry)
        app.state.notifications = notifications = Notifications.from_settings(settings, db)
        app.state.incidents = desk = IncidentDesk(
            db,
            IncidentPolicy.model_validate(settings.incident_policy),
            announce=announcer(notifications),
            interval=settings.incident_check_seconds,
        )
        watch = (
            Watch(
                db,
                live,
                _alert_rules(settings),
                interval=settings.monitor_interval_seconds,
                buffer_size=settings.monitor_buffer_size,
                metrics=service_metrics,
                bus=None if redis is None else RedisBus(redis, settings.redis_prefix),
                incidents=desk,
            )
            if settings.monitoring_enabled
            else None
        )
        app.state.telemetry = telemetry = Telemetry(
            service_metrics,
            None if watch is None else watch.observe,
            tripped=None if watch is None else watch.tripped,
        )
        checkout = Checkout(
            db,
            live,
            secret=settings.secret_key,
            quote_ttl=timedelta(seconds=settings.quote_ttl_seconds),
            counters=(
                RedisCounters(redis, settings.redis_prefix) if redis is not None else SqlCounters()
            ),
            tiers=deps.tiers,
            inventory=deps.inventory if settings.inventory_url else None,
            region=settings.default_region,
            reservation_ttl=timedelta(seconds=settings.reservation_ttl_seconds),
            telemetry=telemetry,
        )
        await _load_counters(checkout)
        nonces = nonce_store(settings, db, redis)
        guard = Guard(
            db=db,
            master_secret=settings.secret_key,
            nonces=nonces,
            limits=RateLimits(settings.rate_limits, settings.redis_url, settings.redis_prefix),
            signing_required=frozenset(settings.signing_required),
            skew=timedelta(seconds=settings.clock_skew_seconds),
            trusted_proxies=settings.trusted_proxies,
        )
        app.state.services = Services(
            settings=settings,
            db=db,
            live=live,
            checkout=checkout,
            guard=guard,
            telemetry=telemetry,
            watch=watch,
        )
        # Everything built so far lives as long as the process: keep it out of the collector's
        # way, or full collections of these objects show up as 100+ ms pauses in p99 latency.
        gc.collect()
        gc.freeze()
        loops = (
            Periodic(
                partial(_sweep, checkout, db, live, settings.traffic_retention_days),
                settings.sweep_interval_seconds,
                log=log,
                what="sweep",
            ),
            Periodic(
                partial(_start_scheduled, db, live), SCHEDULER_SECONDS, log=log, what="scheduler"
            ),
        )
        for loop in loops:
            await loop.start()
        if watch is not None:
            await watch.start()
        await desk.start()
        await notifications.start()
        try:
            yield
        finally:
            for loop in loops:
                await loop.stop()
            if watch is not None:
                await watch.stop()
            await desk.stop()
            await notifications.stop()
            await live.stop()
            await deps.aclose()
            await nonces.aclose()
            if redis is not None:
                await redis.aclose()
            await db.dispose()

    app = FastAPI(
        title="promoguard",
        version=__version__,
        description="E-commerce promotions that cannot quietly give the store away.",
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    app.add_middleware(RequestTelemetry)
    _include_routers(app)

    metrics_gate = (
        [allow(*(Role(r) for r in settings.metrics_roles), route="metrics")]
        if settings.metrics_roles
        else []
    )

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics (text exposition format)",
        dependencies=metrics_gate,
        response_class=PlainTextResponse,
    )
    async def metrics(request: Request) -> Response:
        return metrics_response(request.app.state.registry)

    @app.get("/healthz", tags=["ops"], summary="Liveness")
    async def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app
