"""The customer's claim page at ``/claim`` (no operator login): look up an order with its id and
the customer id, apply for a refund or compensation, follow the application. Chinese by default,
English on request (``?lang=en``, remembered in a cookie).

Forms carry a CSRF token that must match a cookie of the visitor's (double submit). An order is
shown only to someone who knows both its id and its customer id, and the answer for a wrong pair
is the same as for no order. Claim ids are random (64 bits), so a status page is not guessable.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from promoguard.claims import service as claims
from promoguard.claims.models import Claim, ClaimReason
from promoguard.errors import PromoguardError
from promoguard.orders.models import Order
from promoguard.ui.claims import claim_policy, notifications, payment_task
from promoguard.ui.common import (
    CSRF_COOKIE,
    client_address,
    form,
    html_route,
    render,
    services,
    set_cookie,
)

router = APIRouter()

LANG_COOKIE = "pg_lang"
ACTOR = "claim-page"
"""Who submits in the claims' history: the shop's own page, on the customer's behalf."""

TEXT: Mapping[str, Mapping[str, str]] = {
    "zh": {
        "title": "售后申请：退款或补偿",
        "lookup": "查询订单",
        "order_id": "订单号",
        "customer_id": "用户 ID",
        "find": "查询",
        "follow": "查看申请进度",
        "claim_id": "申请编号",
        "show": "查看",
        "not_found": "没有找到这个订单：请核对订单号和用户 ID。",
        "claim_not_found": "没有找到这个申请编号。",
        "order": "订单",
        "status": "状态",
        "list_total": "原价",
        "discount": "优惠",
        "paid": "实付",
        "sku": "商品",
        "quantity": "数量",
        "amount": "金额",
        "apply": "申请退款或补偿",
        "reason": "原因",
        "message": "说明（选填）",
        "email": "邮箱（选填，用于通知）",
        "phone": "手机号（选填，用于通知）",
        "submit": "提交申请",
        "your_claims": "此订单的申请",
        "application": "申请",
        "outcome": "处理结果",
        "refund": "退款金额",
        "coupon": "补偿券",
        "due": "最迟答复时间",
        "history": "进度",
        "language": "语言",
        "back": "返回查询",
        "invalid": "提交的内容有误：",
        "expired": "页面已过期，请重新提交。",
        "reason_price_wrong": "价格不对",
        "reason_discount_missing": "优惠没有生效",
        "reason_coupon_failed": "领券失败",
        "reason_oversold": "超卖 / 无法发货",
        "reason_other": "其他",
        "status_submitted": "已提交",
        "status_verified": "已核实订单",
        "status_approved": "已同意，等待打款",
        "status_rejected": "未通过",
        "status_needs_review": "人工审核中",
        "status_paid": "已打款",
        "status_merged": "已合并到进行中的申请",
    },
    "en": {
        "title": "Refunds and compensation",
        "lookup": "Look up an order",
        "order_id": "Order number",
        "customer_id": "Customer ID",
        "find": "Look up",
        "follow": "Follow an application",
        "claim_id": "Application number",
        "show": "Show",
        "not_found": "No such order: check the order number and the customer ID.",
        "claim_not_found": "No application with this number.",
        "order": "Order",
        "status": "Status",
        "list_total": "List price",
        "discount": "Discount",
        "paid": "Paid",
        "sku": "Item",
        "quantity": "Quantity",
        "amount": "Amount",
        "apply": "Apply for a refund or compensation",
        "reason": "Reason",
        "message": "Details (optional)",
        "email": "Email (optional, for updates)",
        "phone": "Phone (optional, for updates)",
        "submit": "Submit the application",
        "your_claims": "Applications for this order",
        "application": "Application",
        "outcome": "Decision",
        "refund": "Refund",
        "coupon": "Compensation coupon",
        "due": "Answer due by",
        "history": "Progress",
        "language": "Language",
        "back": "Back to the look-up",
        "invalid": "The application is not valid: ",
        "expired": "The page expired: please submit again.",
        "reason_price_wrong": "The price was wrong",
        "reason_discount_missing": "A discount was missing",
        "reason_coupon_failed": "I could not claim a coupon",
        "reason_oversold": "Oversold / cannot be delivered",
        "reason_other": "Something else",
        "status_submitted": "Submitted",
        "status_verified": "Order verified",
        "status_approved": "Approved, payment on its way",
        "status_rejected": "Not approved",
        "status_needs_review": "Being reviewed by a person",
        "status_paid": "Paid",
        "status_merged": "Merged into your open application",
    },
}


def _lang(request: Request, fields: Mapping[str, str] | None = None) -> str:
    chosen = (fields or {}).get("lang") or request.query_params.get("lang")
    chosen = chosen or request.cookies.get(LANG_COOKIE) or "zh"
    return chosen if chosen in TEXT else "zh"


def _page(request: Request, name: str, lang: str, *, status: int = 200, **ctx: Any) -> Response:
    token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
    request.state.csrf = token
    here = request.url.path if request.method == "GET" else "/claim"
    response = render(
        request,
        name,
        status=status,
        lang=lang,
        here=ctx.pop("here", here),
        t=TEXT[lang],
        reasons=[r.value for r in ClaimReason],
        **ctx,
    )
    set_cookie(request, response, CSRF_COOKIE, token, 3600)
    response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, path="/", samesite="strict")
    return response


def _csrf_ok(request: Request, fields: Mapping[str, str]) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie) and hmac.compare_digest(fields.get("csrf", ""), cookie)


@html_route(router, "/claim")
async def start(request: Request) -> Response:
    """The look-up form and the follow-up form."""
    return _page(request, "claim_lookup.html.j2", _lang(request))


async def _order(request: Request, order_id: str, customer_id: str) -> Order | None:
    if not order_id or not customer_id or len(order_id) > 36 or len(customer_id) > 128:
        return None
    async with services(request).db.read() as session:
        found = await session.scalar(
            select(Order).options(selectinload(Order.lines)).where(Order.id == order_id)
        )
    if found is None or not hmac.compare_digest(found.customer_id, customer_id):
        return None
    return found


async def _order_page(
    request: Request, found: Order, lang: str, *, error: str = "", status: int = 200
) -> Response:
    async with services(request).db.read() as session:
        rows = await session.scalars(
            select(Claim)
            .where(Claim.order_id == found.id, Claim.customer_id == found.customer_id)
            .order_by(Claim.created_at.desc())
        )
        theirs = list(rows.all())
    return _page(
        request, "claim_order.html.j2", lang, status=status, order=found, claims=theirs, error=error
    )


@html_route(router, "/claim/lookup", "POST")
async def lookup(request: Request) -> Response:
    """Show an order to someone who knows its id and customer id."""
    fields = await form(request)
    lang = _lang(request, fields)
    if not _csrf_ok(request, fields):
        return _page(request, "claim_lookup.html.j2", lang, status=403, error=TEXT[lang]["expired"])
    try:
        await services(request).guard.limits.hit("claim_lookup", {"ip": client_address(request)})
    except PromoguardError as exc:
        return _page(request, "claim_lookup.html.j2", lang, status=exc.status, error=exc.detail)
    found = await _order(request, fields.get("order_id", ""), fields.get("customer_id", ""))
    if found is None:
        return _page(
            request, "claim_lookup.html.j2", lang, status=404, error=TEXT[lang]["not_found"]
        )
    return await _order_page(request, found, lang)


def _request(fields: Mapping[str, str], found: Order, lang: str) -> claims.ClaimRequest:
    reason = ClaimReason(fields.get("reason", ""))  # ValueError: not a reason
    return claims.ClaimRequest(
        order_id=found.id,
        customer_id=found.customer_id,
        reason=reason,
        message=fields.get("message", "")[:2000],
        locale=lang,
        email=fields.get("email") or None,
        phone=fields.get("phone") or None,
    )


@html_route(router, "/claim/apply", "POST")
async def apply(request: Request) -> Response:
    """Submit the customer's application, then show its status."""
    fields = await form(request)
    lang = _lang(request, fields)
    if not _csrf_ok(request, fields):
        return _page(request, "claim_lookup.html.j2", lang, status=403, error=TEXT[lang]["expired"])
    svc = services(request)
    found = await _order(request, fields.get("order_id", ""), fields.get("customer_id", ""))
    if found is None:
        return _page(
            request, "claim_lookup.html.j2", lang, status=404, error=TEXT[lang]["not_found"]
        )
    try:
        wanted = _request(fields, found, lang)
        await svc.guard.limits.hit(
            "claim_submit", {"customer": found.customer_id, "ip": client_address(request)}
        )
        async with svc.db.write() as session:
            done = await claims.submit(
                session,
                wanted,
                actor=ACTOR,
                now=datetime.now(UTC),
                policy=claim_policy(svc.settings),
                notifications=notifications(request),
            )
    except (PromoguardError, ValueError) as exc:
        detail = exc.detail if isinstance(exc, PromoguardError) else str(exc)
        return await _order_page(
            request, found, lang, error=TEXT[lang]["invalid"] + detail, status=422
        )
    response = RedirectResponse(f"/claim/status/{done.claim.id}?lang={lang}", status_code=303)
    response.background = payment_task(request, done.claim)
    return response


@html_route(router, "/claim/status/{claim_id}")
async def status(request: Request, claim_id: str) -> Response:
    """Where an application stands, as the customer sees it (no reviewer names, no notes)."""
    lang = _lang(request)
    wanted = claim_id.strip()[:64]
    try:
        async with services(request).db.read() as session:
            found = await claims.get(session, wanted)
            steps = [
                e
                for e in await claims.events(session, wanted)
                if not e.internal and e.kind == e.status
            ]
    except PromoguardError:
        return _page(
            request, "claim_lookup.html.j2", lang, status=404, error=TEXT[lang]["claim_not_found"]
        )
    return _page(
        request,
        "claim_status.html.j2",
        lang,
        claim=found,
        steps=steps,
        here=f"/claim/status/{found.id}",
    )


@html_route(router, "/claim/status")
async def status_form(request: Request) -> Response:
    """The follow-up form (a GET with the number) leads to the status page."""
    wanted = request.query_params.get("claim_id", "").strip()
    lang = _lang(request)
    if not wanted:
        return _page(request, "claim_lookup.html.j2", lang)
    return await status(request, wanted)
