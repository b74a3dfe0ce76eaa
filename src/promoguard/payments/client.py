"""The HTTP adapter of :class:`~promoguard.payments.provider.PaymentProvider`.

It speaks the Stripe-like refund API the simulator serves (``promoguard payment-provider``):
the idempotency key goes in the ``Idempotency-Key`` header, and every failure becomes one of the
provider errors, retryable or permanent, so the payer never sees an ``httpx`` exception.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from promoguard import __version__
from promoguard.payments.provider import (
    IdempotencyKeyReusedError,
    InvalidRefundRequestError,
    PermanentProviderError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    Refund,
    RefundNotFoundError,
    RefundStatus,
)

__all__ = ["HttpPaymentProvider"]


def _refund(data: Mapping[str, Any]) -> Refund:
    try:
        return Refund(
            id=str(data["id"]),
            idempotency_key=str(data["idempotency_key"]),
            order_ref=str(data["order_ref"]),
            amount=int(data["amount"]),
            currency=str(data["currency"]),
            status=RefundStatus(data["status"]),
            created=datetime.fromisoformat(str(data["created"])),
            reason=str(data.get("reason", "")),
            metadata={str(k): str(v) for k, v in dict(data.get("metadata") or {}).items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        # A body we cannot read is a broken answer, not a verdict on the refund: try again.
        raise ProviderUnavailableError(f"unreadable refund from the provider: {exc}") from exc


def _error(answer: httpx.Response) -> ProviderError:
    try:
        error = answer.json().get("error", {})
        code, message = str(error.get("code", "")), str(error.get("message", answer.text))
    except (ValueError, AttributeError):
        code, message = "", answer.text[:200]
    status = answer.status_code
    text = f"{status} {code}: {message}".strip()
    if status >= 500 or status in {409, 429}:  # 409: the same key is in flight
        return ProviderUnavailableError(text, status=status, code=code)
    if status == 404:
        return RefundNotFoundError(text, status=status, code=code)
    if status == 422 and code == "idempotency_key_reused":
        return IdempotencyKeyReusedError(text, status=status, code=code)
    if status in (400, 422):
        return InvalidRefundRequestError(text, status=status, code=code)
    return PermanentProviderError(text, status=status, code=code)


class HttpPaymentProvider:
    """Refunds at a provider over HTTP.

    Args:
        base_url: the provider, e.g. ``http://127.0.0.1:8092``.
        timeout: seconds to wait for one answer; a longer wait is a
            :class:`~promoguard.payments.provider.ProviderTimeoutError`.
        transport: an httpx transport (tests); default: the network.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 64,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": f"promoguard/{__version__}"},
            limits=httpx.Limits(max_connections=max_connections),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._client.aclose()

    async def _call(self, method: str, path: str, **options: Any) -> Any:
        try:
            answer = await self._client.request(method, path, **options)
        except httpx.TimeoutException as exc:
            raise ProviderTimeoutError(f"no answer from the provider: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise ProviderConnectionError(f"cannot reach the provider: {exc!r}") from exc
        if not answer.is_success:
            raise _error(answer)
        try:
            return answer.json()
        except ValueError as exc:
            raise ProviderUnavailableError("the provider answered with no JSON") from exc

    async def create_refund(
        self,
        *,
        idempotency_key: str,
        order_ref: str,
        amount: int,
        currency: str,
        reason: str,
        metadata: Mapping[str, str],
    ) -> Refund:
        """Refund ``amount`` for ``order_ref`` once per ``idempotency_key``."""
        body = {
            "order_ref": order_ref,
            "amount": amount,
            "currency": currency,
            "reason": reason,
            "metadata": dict(metadata),
        }
        data = await self._call(
            "POST", "/v1/refunds", json=body, headers={"Idempotency-Key": idempotency_key}
        )
        return _refund(data)

    async def get_refund(self, refund_id: str) -> Refund:
        """The refund ``refund_id`` as it stands now."""
        return _refund(await self._call("GET", f"/v1/refunds/{quote(refund_id, safe='')}"))

    async def list_refunds(
        self,
        *,
        order_ref: str | None = None,
        starting_after: str | None = None,
        limit: int = 100,
    ) -> Sequence[Refund]:
        """One page of refunds, oldest first (see the protocol)."""
        params: dict[str, str | int] = {"limit": limit}
        if order_ref is not None:
            params["order_ref"] = order_ref
        if starting_after is not None:
            params["starting_after"] = starting_after
        data = await self._call("GET", "/v1/refunds", params=params)
        return [_refund(item) for item in data.get("data", [])]
