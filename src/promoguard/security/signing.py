"""Request signing: HMAC-SHA256 over a canonical string, and a client helper to sign with.

The canonical string is six lines joined by ``\\n``::

    POST                            the method, upper case
    /v1/coupons/d11-coupon/claims   the path, exactly as sent (percent-encoded)
    a=1&b=2                         the query, parameters sorted by name then value
    1795996800                      X-Promoguard-Timestamp (Unix seconds)
    3f6c0f3b9a2d4e51                X-Promoguard-Nonce (8-64 of A-Z a-z 0-9 _ -)
    9f86d081884c7d65...             X-Promoguard-Content-SHA256: hex SHA-256 of the body

and the signature is ``base64(HMAC-SHA256(secret, canonical))`` in ``X-Promoguard-Signature``,
with the key id in ``X-Promoguard-Key``. The server checks that the body hashes to the declared
digest (a tampered body is ``body_digest_mismatch``), the timestamp is within the allowed skew,
the signature matches (compared in constant time) and the nonce is new.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Generator
from urllib.parse import parse_qsl, urlencode

import httpx

__all__ = [
    "HEADER_DIGEST",
    "HEADER_KEY",
    "HEADER_NONCE",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "PromoguardAuth",
    "canonical_string",
    "sign",
    "signature",
]

HEADER_KEY = "X-Promoguard-Key"
HEADER_TIMESTAMP = "X-Promoguard-Timestamp"
HEADER_NONCE = "X-Promoguard-Nonce"
HEADER_DIGEST = "X-Promoguard-Content-SHA256"
HEADER_SIGNATURE = "X-Promoguard-Signature"


def sorted_query(query: str) -> str:
    """The query string with its parameters sorted (by name, then value)."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode(sorted(pairs))


def canonical_string(  # noqa: PLR0917 (the six components, in their order)
    method: str, path: str, query: str, timestamp: str, nonce: str, body_sha256: str
) -> str:
    """What is signed (see the module docstring)."""
    return "\n".join((method.upper(), path, sorted_query(query), timestamp, nonce, body_sha256))


def signature(secret: str, canonical: str) -> str:
    """base64 HMAC-SHA256 of the canonical string."""
    digest = hmac.digest(secret.encode(), canonical.encode(), "sha256")
    return base64.b64encode(digest).decode()


def sign(
    *,
    key_id: str,
    secret: str,
    method: str,
    path: str,
    query: str = "",
    body: bytes = b"",
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers that sign one request."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    once = nonce or secrets.token_hex(16)
    digest = hashlib.sha256(body).hexdigest()
    return {
        HEADER_KEY: key_id,
        HEADER_TIMESTAMP: stamp,
        HEADER_NONCE: once,
        HEADER_DIGEST: digest,
        HEADER_SIGNATURE: signature(
            secret, canonical_string(method, path, query, stamp, once, digest)
        ),
    }


class PromoguardAuth(httpx.Auth):
    """Sign every request an ``httpx`` client sends::

        client = httpx.Client(base_url="https://shop.example", auth=PromoguardAuth(key_id, secret))

    It is also a plain callable (request -> request), which is how ``httpx2`` and other clients
    that accept a function as ``auth`` can use it.
    """

    requires_request_body = True

    def __init__(self, key_id: str, secret: str) -> None:
        self.key_id = key_id
        self.secret = secret

    def __call__(self, request: httpx.Request) -> httpx.Request:
        """Add the signature headers to ``request``."""
        headers = sign(
            key_id=self.key_id,
            secret=self.secret,
            method=request.method,
            path=request.url.raw_path.decode().split("?", 1)[0],
            query=request.url.query.decode(),
            body=request.content,
        )
        request.headers.update(headers)
        return request

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """httpx's hook: sign, then send."""
        yield self(request)
