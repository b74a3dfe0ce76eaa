"""What every dashboard page shares: the signed session cookie, CSRF tokens, the operator behind a
request (checked against the API key on every request, like the API's gate), forms, templates and
the redirects and messages after an action.

The session is a cookie holding ``base64url(JSON).base64url(HMAC-SHA256)`` under a key derived
from ``PROMOGUARD_SECRET_KEY``: the key id, its role, department and owner, a per-session CSRF
token and an expiry. It is HttpOnly, SameSite=Strict, and Secure when the page was served over
TLS. Nothing is stored on the server, so every worker accepts it; a revoked key or a changed role
ends the session at the next request, because the key row is read each time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel, ValidationError
from starlette.background import BackgroundTask

from promoguard.api import Services
from promoguard.errors import InvalidError, PromoguardError
from promoguard.money import MoneyError, format_minor, parse_minor
from promoguard.security.context import Principal, current
from promoguard.security.guard import client_ip
from promoguard.security.keys import Role
from promoguard.security.models import ApiKey

__all__ = [
    "READERS",
    "Operator",
    "act",
    "client_address",
    "form",
    "form_body",
    "html_route",
    "page",
    "parse_amount",
    "render",
    "seal",
    "services",
    "unseal",
]

SESSION_COOKIE = "pg_session"
CSRF_COOKIE = "pg_csrf"
FLASH_COOKIE = "pg_flash"
SESSION_SECONDS = 8 * 3600
"""A session lasts a working shift; then the operator logs in again."""
MAX_FORM_BYTES = 64 * 1024
MAX_ID = 2**31 - 1
"""Ids are INTEGER columns: a larger one is no page (PostgreSQL would refuse the query)."""
STAFF = frozenset({Role.OPERATOR, Role.APPROVER, Role.AUDITOR, Role.ADMIN})
"""Roles that may log in to the dashboard (storefront keys may not)."""
READERS = (Role.OPERATOR, Role.APPROVER, Role.AUDITOR)
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'"
)


@dataclass(frozen=True, slots=True)
class Operator:
    """The person logged in to the dashboard, as their API key says."""

    key_id: str
    role: str
    department: str | None
    owner: str
    csrf: str

    def may(self, *roles: Role) -> bool:
        """Whether this key's role is one of ``roles`` (admin keys may do everything)."""
        return self.role == Role.ADMIN or self.role in roles


Page = Callable[..., Awaitable[Response]]


def html_route(router: APIRouter, path: str, method: str = "GET") -> Callable[[Page], Page]:
    """Register a page as a plain Starlette route, not an API operation: it is not in the
    OpenAPI document and has no API-key gate; the page checks the session itself (:func:`page`,
    :func:`act`). Path parameters (``{plan_id:int}``) arrive as keyword arguments."""

    def register(handler: Page) -> Page:
        async def endpoint(request: Request) -> Response:
            # Named by its path template in the metrics and the stored route traffic, as the
            # API's routes are (not "unmatched", nor one name per claim or campaign).
            request.scope["route"] = named
            params = request.path_params
            if any(isinstance(v, int) and v > MAX_ID for v in params.values()):
                return Response("not found", status_code=404, media_type="text/plain")
            return await handler(request, **params)

        endpoint.__name__ = endpoint.__qualname__ = handler.__name__
        router.add_route(path, endpoint, methods=[method], include_in_schema=False)
        named = router.routes[-1]
        return handler

    return register


def services(request: Request) -> Services:
    """The services the app factory built."""
    found: Services = request.app.state.services
    return found


def _signing_key(request: Request) -> bytes:
    secret = services(request).settings.secret_key.encode()
    return hmac.new(secret, b"promoguard-ui-session", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(request: Request, data: dict[str, Any]) -> str:
    """``data`` as a signed cookie value (readable by the client, not forgeable)."""
    payload = _b64(json.dumps(data, separators=(",", ":")).encode())
    mac = hmac.new(_signing_key(request), payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(mac)}"


def unseal(request: Request, value: str | None) -> dict[str, Any] | None:
    """The data of a cookie :func:`seal` made, or None when it is missing, forged or expired."""
    if not value or value.count(".") != 1:
        return None
    payload, mac = value.split(".")
    expected = hmac.new(_signing_key(request), payload.encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(_unb64(mac), expected):
            return None
        data = json.loads(_unb64(payload))
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict) or float(data.get("exp", 0)) < time.time():
        return None
    return data


def set_cookie(request: Request, response: Response, name: str, value: str, age: int) -> None:
    """An HttpOnly, SameSite=Strict cookie; Secure when the request came over TLS."""
    response.set_cookie(
        name,
        value,
        max_age=age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def client_address(request: Request) -> str:
    """The caller's address, believing ``X-Forwarded-For`` only from trusted proxies."""
    proxies = [
        ipaddress.ip_network(p, strict=False) for p in services(request).settings.trusted_proxies
    ]
    return client_ip(request, proxies)


async def operator(request: Request) -> Operator | None:
    """The logged-in operator, or None. Sets the security context as the API's gate does, so
    audit entries written during the request carry the operator's key id."""
    data = unseal(request, request.cookies.get(SESSION_COOKIE))
    if data is None:
        return None
    async with services(request).db.read() as session:
        key = await session.get(ApiKey, str(data.get("k")))
    if key is None or key.revoked_at is not None or key.role != data.get("r"):
        return None
    if key.role not in STAFF:
        return None
    found = Operator(key.id, key.role, key.department, key.owner, str(data.get("c", "")))
    current.set(
        Principal(
            key_id=key.id,
            role=key.role,
            department=key.department,
            ip=client_address(request),
            request_id=request.headers.get("x-request-id") or uuid.uuid4().hex,
            signed=False,
            owner=key.owner,
        )
    )
    request.state.operator = found
    return found


def new_session(request: Request, key: ApiKey) -> str:
    """A fresh session cookie for ``key`` with a new CSRF token."""
    return seal(
        request,
        {
            "k": key.id,
            "r": key.role,
            "c": secrets.token_urlsafe(24),
            "exp": int(time.time()) + SESSION_SECONDS,
        },
    )


def _templates(request: Request) -> Environment:
    env: Environment | None = getattr(request.app.state, "ui_templates", None)
    if env is None:
        env = Environment(
            loader=PackageLoader("promoguard.ui", "templates"),
            autoescape=select_autoescape(["j2", "html"], default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters["money"] = _money
        env.filters["when"] = _when
        env.filters["percent_bps"] = lambda bps: f"{Decimal(int(bps or 0)) / 100:.2f} %"
        env.filters["ms"] = lambda ms: "—" if ms is None else f"{ms:,.1f} ms"
        request.app.state.ui_templates = env
    return env


def _money(amount: int | None, currency: str = "CNY") -> str:
    text = format_minor(int(amount or 0), currency)
    return f"¥{text}" if currency == "CNY" else f"{text} {currency}"


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render(request: Request, name: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """Render a template with the operator, the CSRF token and any message from the last action;
    the message is shown once."""
    flash = unseal(request, request.cookies.get(FLASH_COOKIE))
    op: Operator | None = getattr(request.state, "operator", None)
    html = (
        _templates(request)
        .get_template(name)
        .render(
            op=op,
            csrf=op.csrf if op is not None else getattr(request.state, "csrf", ""),
            flash=flash,
            path=request.url.path,
            now=datetime.now(UTC),
            **context,
        )
    )
    response = HTMLResponse(html, status_code=status)
    secure_headers(response)
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def secure_headers(response: Response) -> None:
    """No caching of operator pages, a strict content policy, no sniffing."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"


async def form(request: Request) -> dict[str, str]:
    """The URL-encoded form of a POST (the first value of each field)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0].strip() for name, values in parsed.items()}


def redirect(request: Request, to: str, message: str = "", *, error: bool = False) -> Response:
    """A 303 to ``to``, with a message for the next page."""
    response = RedirectResponse(to, status_code=303)
    if message:
        data = {"m": message[:600], "e": error, "exp": int(time.time()) + 120}
        set_cookie(request, response, FLASH_COOKIE, seal(request, data), 120)
    return response


def login_redirect(request: Request) -> Response:
    """Send someone without a session to the login page, then back here."""
    target = request.url.path if request.method == "GET" else "/ui"
    return RedirectResponse(f"/ui/login?next={quote(target)}", status_code=303)


def refusal(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    """An error page."""
    return render(request, "error.html.j2", status=status, title=title, detail=detail)


def forbidden(request: Request, op: Operator, roles: tuple[Role, ...]) -> HTMLResponse:
    """The page a key whose role may not do something gets."""
    needed = " or ".join(sorted(str(r) for r in roles))
    return refusal(
        request, 403, "Not allowed", f"A {op.role} key may not do this; it needs {needed}."
    )


async def page(request: Request, *roles: Role) -> Operator | Response:
    """The operator for a page that ``roles`` may see, or the response that refuses it."""
    op = await operator(request)
    if op is None:
        return login_redirect(request)
    if not op.may(*(roles or READERS)):
        return forbidden(request, op, roles or READERS)
    return op


Work = Callable[[Operator, dict[str, str]], Awaitable[str | tuple[str, BackgroundTask | None]]]


async def act(request: Request, roles: tuple[Role, ...], back: str, work: Work) -> Response:
    """Run a state-changing form: a session, a role that may, the session's CSRF token and a
    ticked confirmation box, or nothing happens. An error of the service comes back to ``back``
    as a message; so does what the work says it did, on ``request.state.next_page`` when the
    work set it (a record it created)."""
    found = await page(request, *roles)
    if not isinstance(found, Operator):
        return found
    fields = await form(request)
    if not hmac.compare_digest(fields.get("csrf", ""), found.csrf) or not found.csrf:
        return refusal(request, 403, "Form expired", "The form's security token is not valid.")
    if fields.get("confirm") != "yes":
        return refusal(request, 400, "Not confirmed", "Tick the confirmation box to go ahead.")
    try:
        done = await work(found, fields)
    except PromoguardError as exc:
        return redirect(request, back, f"{exc.code}: {exc.detail}", error=True)
    message, task = done if isinstance(done, tuple) else (done, None)
    response = redirect(request, getattr(request.state, "next_page", back), message)
    response.background = task
    return response


_Body = TypeVar("_Body", bound=BaseModel)


def form_body(model: type[_Body], data: dict[str, Any]) -> _Body:
    """``data`` (read from a form's fields) checked by the API's input model; a refusal is the
    API's own: ``invalid_request``, with the paths and reasons in ``errors`` and the detail."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [(".".join(str(p) for p in e["loc"]) or "form", e["msg"]) for e in exc.errors()]
        detail = "; ".join(f"{path}: {reason}" for path, reason in errors[:5])
        raise InvalidError("invalid_request", detail, errors=errors) from None


def parse_amount(text: str) -> int | None:
    """Yuan as typed (``12.5``) in minor units; None when empty. Raises ValueError if invalid."""
    if not text:
        return None
    try:
        amount = parse_minor(text.removeprefix("¥"))
    except MoneyError as exc:
        raise ValueError(str(exc)) from None
    if not 0 < amount <= 10**15:
        raise ValueError(f"{text!r} is not a positive amount")
    return amount
