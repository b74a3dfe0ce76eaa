"""The payment provider interface: refunds, the way a Stripe-like provider offers them.

A refund is asked for with an idempotency key. The provider keeps the key with the refund it
made: the same key again returns that same refund (nothing is paid twice), and the same key with
another amount, currency or order is refused (:class:`IdempotencyKeyReusedError`). A refund is
``pending`` until the money has moved, then ``succeeded``, or ``failed``.

Errors say whether trying again may help. :class:`RetryableProviderError` (a timeout, a dropped
connection, a 5xx or 429) means the outcome is unknown or the provider is briefly unable: the
request may be sent again *with the same idempotency key*. :class:`PermanentProviderError` (an
invalid request, a reused key, an unknown refund) will fail the same way every time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

__all__ = [
    "IdempotencyKeyReusedError",
    "InvalidRefundRequestError",
    "PaymentProvider",
    "PermanentProviderError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "Refund",
    "RefundNotFoundError",
    "RefundStatus",
    "RetryableProviderError",
]


class RefundStatus(StrEnum):
    """``pending → succeeded | failed``; a refund may also be created in a final state."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Refund:
    """A refund as the provider records it.

    Args:
        id: the provider's id (``re_…``).
        idempotency_key: the key it was created with.
        order_ref: the order (a charge, at a card provider) the money goes back for.
        amount: minor units of ``currency``.
        currency: ISO 4217 code.
        status: see :class:`RefundStatus`.
        created: when the provider made it.
        reason: why, in the caller's words.
        metadata: the caller's own labels, returned as given.
    """

    id: str
    idempotency_key: str
    order_ref: str
    amount: int
    currency: str
    status: RefundStatus
    created: datetime
    reason: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


class ProviderError(Exception):
    """Any failure to get an answer from the payment provider."""

    retryable: bool = False

    def __init__(self, message: str, *, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class RetryableProviderError(ProviderError):
    """The outcome is unknown or the provider is briefly unable: send again with the same key."""

    retryable = True


class ProviderTimeoutError(RetryableProviderError):
    """No answer in time: the refund may or may not have been made."""


class ProviderConnectionError(RetryableProviderError):
    """The provider could not be reached, or the connection dropped mid-request."""


class ProviderUnavailableError(RetryableProviderError):
    """The provider answered 5xx or 429."""


class PermanentProviderError(ProviderError):
    """The request will fail the same way every time it is sent."""


class InvalidRefundRequestError(PermanentProviderError):
    """The provider refused the request's content (an amount too large, a bad currency)."""


class IdempotencyKeyReusedError(PermanentProviderError):
    """The key was used before for a refund with another amount, currency or order."""


class RefundNotFoundError(PermanentProviderError):
    """No refund has that id."""


@runtime_checkable
class PaymentProvider(Protocol):
    """What promoguard needs from a payment provider: refunds, made once per key, and looked up."""

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
        """Refund ``amount`` for ``order_ref``; the same key again returns the same refund."""
        ...

    async def get_refund(self, refund_id: str) -> Refund:
        """The refund with this id, as it stands now (a pending one may have succeeded)."""
        ...

    async def list_refunds(
        self,
        *,
        order_ref: str | None = None,
        starting_after: str | None = None,
        limit: int = 100,
    ) -> Sequence[Refund]:
        """Refunds oldest first, ``limit`` at a time after the refund ``starting_after``; only
        those of ``order_ref`` when given."""
        ...
