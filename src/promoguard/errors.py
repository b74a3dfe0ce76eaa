"""One exception hierarchy for everything a caller can get wrong, mapped to problem+json.

Every error has a stable machine ``code`` (documented in the README's error table), an HTTP
status, a human ``detail`` and, for bad input, the field paths at fault. The API turns them into
RFC 9457 ``application/problem+json`` responses in one place (``promoguard.app``).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BadRequestError",
    "ConflictError",
    "ForbiddenError",
    "InvalidError",
    "NotFoundError",
    "PromoguardError",
    "UnauthorizedError",
    "UnavailableError",
]


class PromoguardError(Exception):
    """Base of every error promoguard reports to a caller."""

    status: ClassVar[int] = 400

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        errors: list[tuple[str, str]] | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.errors = errors or []
        self.extra = extra or {}
        self.headers = headers or {}


class InvalidError(PromoguardError):
    """The request is well-formed but its content cannot be accepted (422)."""

    status = 422


class NotFoundError(PromoguardError):
    """The thing named does not exist (404)."""

    status = 404


class ConflictError(PromoguardError):
    """The request clashes with the current state (409): a used coupon, a changed price."""

    status = 409


class UnauthorizedError(PromoguardError):
    """Who is calling could not be established (401): no key, a bad signature, a replay."""

    status = 401


class ForbiddenError(PromoguardError):
    """The caller is known but may not do this (403): wrong role, disallowed IP."""

    status = 403


class BadRequestError(PromoguardError):
    """The request is missing something the protocol requires (400)."""

    status = 400


class UnavailableError(PromoguardError):
    """A store promoguard cannot decide without did not answer, or is not ready (503): the
    request is refused, never waved through, and nothing is written. Safe to retry."""

    status = 503
