"""The canonical string and signature, as documented for shops signing in other languages."""

from __future__ import annotations

import base64
import hashlib
import hmac

import httpx

from promoguard.security import signing


def test_the_canonical_string_is_six_lines_with_the_query_sorted():
    canonical = signing.canonical_string(
        "post", "/v1/coupons/d11/claims", "b=2&a=1&a=0", "1795996800", "nonce-0001", "ab" * 32
    )

    assert canonical == "\n".join(
        ["POST", "/v1/coupons/d11/claims", "a=0&a=1&b=2", "1795996800", "nonce-0001", "ab" * 32]
    )


def test_the_worked_example_in_the_readme_signs_to_the_documented_value():
    """The README's example, checked against hashlib/hmac directly (what any language does)."""
    body = b'{"customer_id":"c-1001"}'
    headers = signing.sign(
        key_id="pk_0123456789abcdef",
        secret="example-secret",
        method="POST",
        path="/v1/coupons/d11-coupon/claims",
        body=body,
        timestamp=1795996800,
        nonce="3f6c0f3b9a2d4e51",
    )

    digest = "10812e37e14c7ddbea40f63fe5a66ca3d2b38c1f80102b47794e1a4979a6c3fd"
    assert hashlib.sha256(body).hexdigest() == digest
    canonical = f"POST\n/v1/coupons/d11-coupon/claims\n\n1795996800\n3f6c0f3b9a2d4e51\n{digest}"
    mac = hmac.new(b"example-secret", canonical.encode(), hashlib.sha256).digest()
    assert base64.b64encode(mac).decode() == "xTwoSBQywZUrnQlJ+EUuldL5ElMpKC7VSsobGVfrWhE="
    assert headers == {
        "X-Promoguard-Key": "pk_0123456789abcdef",
        "X-Promoguard-Timestamp": "1795996800",
        "X-Promoguard-Nonce": "3f6c0f3b9a2d4e51",
        "X-Promoguard-Content-SHA256": digest,
        "X-Promoguard-Signature": "xTwoSBQywZUrnQlJ+EUuldL5ElMpKC7VSsobGVfrWhE=",
    }


def test_the_httpx_auth_signs_what_is_sent():
    auth = signing.PromoguardAuth("pk_1", "s3cret")
    request = httpx.Request("POST", "https://shop.example/v1/quotes?z=1&a=2", content=b"{}")

    flow = auth.auth_flow(request)
    signed = next(flow)

    canonical = signing.canonical_string(
        "POST",
        "/v1/quotes",
        "a=2&z=1",
        signed.headers[signing.HEADER_TIMESTAMP],
        signed.headers[signing.HEADER_NONCE],
        signed.headers[signing.HEADER_DIGEST],
    )
    assert signed.headers[signing.HEADER_SIGNATURE] == signing.signature("s3cret", canonical)
    assert signed.headers[signing.HEADER_KEY] == "pk_1"
