"""Logging in to the dashboard with an API key, logging out, and the dashboard's own files."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from promoguard.errors import PromoguardError
from promoguard.security.models import ApiKey
from promoguard.ui.common import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    STAFF,
    client_address,
    form,
    html_route,
    new_session,
    operator,
    render,
    services,
    set_cookie,
)

router = APIRouter()

STATIC = {"ui.css": "text/css; charset=utf-8", "ui.js": "text/javascript; charset=utf-8"}
"""The dashboard's own files (no third-party code is served)."""


def _safe_next(target: str) -> str:
    # Only a path of this dashboard: never another site (an open redirect).
    return target if target.startswith("/ui") and not target.startswith("//") else "/ui"


def _login_page(request: Request, *, error: str = "", status: int = 200) -> Response:
    token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
    request.state.csrf = token
    response = render(
        request,
        "login.html.j2",
        status=status,
        error=error,
        next=_safe_next(request.query_params.get("next", "/ui")),
    )
    set_cookie(request, response, CSRF_COOKIE, token, 3600)
    return response


@html_route(router, "/ui/login")
async def login_page(request: Request) -> Response:
    """The login form."""
    return _login_page(request)


async def _check_key(request: Request, key_id: str, secret: str) -> ApiKey | None:
    async with services(request).db.read() as session:
        key = await session.get(ApiKey, key_id) if key_id else None
    digest = hashlib.sha256(secret.encode()).hexdigest()
    if key is None or key.revoked_at is not None:
        return None
    if not hmac.compare_digest(digest, key.secret_sha256):
        return None
    if key.allowed_ips:
        ip = ipaddress.ip_address(client_address(request))
        if not any(ip in ipaddress.ip_network(n, strict=False) for n in key.allowed_ips):
            return None
    return key


@html_route(router, "/ui/login", "POST")
async def login(request: Request) -> Response:
    """Check the key id and secret; start a session for a staff key."""
    fields = await form(request)
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(fields.get("csrf", ""), cookie):
        return _login_page(request, error="The form expired: try again.", status=403)
    key_id = fields.get("key_id", "")
    try:
        await services(request).guard.limits.hit(
            "ui_login", {"ip": client_address(request), "key": key_id or "-"}
        )
    except PromoguardError as exc:
        return _login_page(request, error=exc.detail, status=exc.status)
    key = await _check_key(request, key_id, fields.get("secret", ""))
    if key is None:
        return _login_page(request, error="Unknown key id or wrong secret.", status=401)
    if key.role not in STAFF:
        return _login_page(request, error=f"A {key.role} key cannot use the dashboard.", status=403)
    response = RedirectResponse(_safe_next(fields.get("next", "/ui")), status_code=303)
    set_cookie(request, response, SESSION_COOKIE, new_session(request, key), SESSION_SECONDS)
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@html_route(router, "/ui/logout", "POST")
async def logout(request: Request) -> Response:
    """End the session (the form carries the session's CSRF token)."""
    op = await operator(request)
    fields = await form(request)
    response = RedirectResponse("/ui/login", status_code=303)
    if op is not None and hmac.compare_digest(fields.get("csrf", ""), op.csrf):
        response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@html_route(router, "/ui")
async def home(_: Request) -> Response:
    """The dashboard starts at the campaigns."""
    return RedirectResponse("/ui/campaigns", status_code=303)


@html_route(router, "/ui/static/{name}")
async def static(_: Request, name: str) -> Response:
    """The dashboard's stylesheet and script."""
    if name not in STATIC:
        return Response("not found", status_code=404, media_type="text/plain")
    body = resources.files("promoguard.ui").joinpath("static", name).read_bytes()
    return Response(body, media_type=STATIC[name], headers={"Cache-Control": "public, max-age=300"})
