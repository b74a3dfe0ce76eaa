"""Quote tokens: what one signs, the other reads, whichever way the payload was compressed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import zlib
from datetime import UTC, datetime

import orjson

from promoguard.orders import tokens

SECRET = "test-secret-0123456789abcdef"
CLAIMS = {"qid": "q-1", "req": {"cart": {"lines": [{"sku": "sku-1", "quantity": 2}] * 9}}}


def test_a_token_reads_back_the_claims_it_was_signed_with():
    claims = {**CLAIMS, "exp": 1_900_000_000}

    token = tokens.sign(claims, SECRET)

    assert tokens.verify(token, SECRET, datetime(2026, 1, 1, tzinfo=UTC)) == claims


def test_a_token_compressed_with_zlibs_default_window_still_reads():
    # Tokens signed before the payload's window was made smaller are valid for their TTL.
    claims = {**CLAIMS, "exp": 1_900_000_000}
    compressed = zlib.compress(orjson.dumps(claims, option=orjson.OPT_SORT_KEYS), 6)
    payload = base64.urlsafe_b64encode(compressed).rstrip(b"=").decode()
    mac = hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).digest()
    token = f"{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"

    assert tokens.verify(token, SECRET, datetime(2026, 1, 1, tzinfo=UTC)) == claims
