"""The gate every ``/v1`` route passes: key, IP allow-list, role, signature, rate limits.

Checks run in this order and stop at the first failure, before the route does anything, so a
refused request changes nothing:

1. a key is named (``X-Promoguard-Key``, or ``Authorization: Bearer <key id>.<secret>`` for
   roles that may call unsigned) — ``401 authentication_required`` / ``unknown_key``;
2. the caller's IP is in the key's allow-list — ``403 ip_not_allowed``;
3. the key's role is admitted by the route — ``403 role_forbidden``;
4. the request is signed when its role must sign — ``401 signature_required``; the timestamp is
   within the skew — ``401 timestamp_out_of_window``; the signature matches —
   ``401 signature_invalid``; the body hashes to the signed digest — ``400 body_digest_mismatch``;
5. rate limits per key, IP and route — ``429 rate_limited``;
6. the nonce was not used in the window — ``401 nonce_replayed`` (recorded last, so a refused
   request does not even use up its nonce).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import Request
from starlette.types import Scope

from promoguard.errors import BadRequestError, ForbiddenError, UnauthorizedError
from promoguard.security import signing
from promoguard.security.context import Principal, current
from promoguard.security.keys import Role, derive_secret
from promoguard.security.models import ApiKey
from promoguard.security.nonces import NonceStore
from promoguard.security.ratelimit import RateLimits
from promoguard.store.db import Database

__all__ = ["Guard", "client_ip"]

NONCE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
KEY_CACHE_SECONDS = 5.0
"""How long a worker trusts what it read about a key (a revocation takes at most this long)."""


@dataclass(frozen=True, slots=True)
class _Key:
    id: str
    role: str
    department: str | None
    secret_sha256: str
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    revoked: bool
    owner: str = ""
    signing_secret: str = ""
    """The key's secret, derived from the server's secret once per cache lifetime."""


def client_ip(
    request: Request, trusted_proxies: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> str:
    """The caller's address; ``X-Forwarded-For`` counts only when a trusted proxy sent it.

    The chain is read right to left and the first address that is not a trusted proxy wins, so
    a client cannot forge its address by sending its own ``X-Forwarded-For``.
    """
    client = request.scope.get("client")
    peer = client[0] if client else "0.0.0.0"
    proxies = tuple(trusted_proxies)
    if not proxies or not _in_networks(peer, proxies):
        return peer
    chain = [a.strip() for a in request.headers.get("x-forwarded-for", "").split(",") if a.strip()]
    for address in reversed(chain):
        if not _in_networks(address, proxies):
            return address
    return peer


class Guard:
    """Authenticates, authorises and limits requests for one app."""

    def __init__(
        self,
        *,
        db: Database,
        master_secret: str,
        nonces: NonceStore,
        limits: RateLimits,
        signing_required: frozenset[str],
        skew: timedelta,
        trusted_proxies: list[str],
    ) -> None:
        self._db = db
        self._master = master_secret
        self._nonces = nonces
        self.limits = limits
        self._signing_required = signing_required
        self._skew = skew
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]
        self._keys: dict[str, tuple[float, _Key | None]] = {}

    async def _key(self, key_id: str) -> _Key | None:
        cached = self._keys.get(key_id)
        if cached is not None and time.monotonic() - cached[0] < KEY_CACHE_SECONDS:
            return cached[1]
        async with self._db.read() as session:
            row = await session.get(ApiKey, key_id)
            key = None
            if row is not None:
                key = _Key(
                    id=row.id,
                    role=row.role,
                    department=row.department,
                    secret_sha256=row.secret_sha256,
                    networks=tuple(ipaddress.ip_network(n, strict=False) for n in row.allowed_ips),
                    revoked=row.revoked_at is not None,
                    owner=row.owner,
                    signing_secret=derive_secret(self._master, row.id),
                )
        if len(self._keys) > 10_000:  # unknown ids must not grow the cache without bound
            self._keys.clear()
        self._keys[key_id] = (time.monotonic(), key)
        return key

    async def check(self, request: Request, *, roles: frozenset[str], route: str) -> Principal:
        """Let the request through (and return who it is) or raise the first failure."""
        headers = _headers(request.scope)
        key_id, bearer = self._named_key(headers.get(_KEY), headers.get("authorization"))
        key = await self._key(key_id)
        if key is None or key.revoked:
            raise UnauthorizedError("unknown_key", f"no active API key {key_id!r}")
        ip = client_ip(request, self._proxies)
        if key.networks and not _in_networks(ip, key.networks):
            raise ForbiddenError("ip_not_allowed", f"key {key.id} may not call from {ip}")
        if key.role != Role.ADMIN and key.role not in roles:
            raise ForbiddenError(
                "role_forbidden",
                f"a {key.role} key may not call {route}; it needs {' or '.join(sorted(roles))}",
            )
        signed = _SIGNATURE in headers
        if signed:
            nonce = await self._verify_signature(request, key, headers)
        elif key.role in self._signing_required or bearer is None:
            raise UnauthorizedError(
                "signature_required", f"requests from {key.role} keys must be signed"
            )
        else:
            self._verify_bearer(key, bearer)
            nonce = None
        await self.limits.hit(route, {"key": key.id, "ip": ip, "route": route})
        if nonce is not None:
            now = datetime.now(UTC)
            if not await self._nonces.first_use(key.id, nonce, now, self._skew * 2):
                raise UnauthorizedError("nonce_replayed", "this nonce was already used: a replay")
        principal = Principal(
            key_id=key.id,
            role=key.role,
            department=key.department,
            ip=ip,
            request_id=headers.get("x-request-id") or uuid.uuid4().hex,
            signed=signed,
            owner=key.owner,
        )
        current.set(principal)
        return principal

    @staticmethod
    def _named_key(header_key: str | None, authorization: str | None) -> tuple[str, str | None]:
        if header_key:
            return header_key, None
        if authorization and authorization.lower().startswith("bearer "):
            key_id, _, secret = authorization[7:].strip().partition(".")
            if key_id and secret:
                return key_id, secret
        raise UnauthorizedError(
            "authentication_required",
            f"name an API key: sign the request ({signing.HEADER_KEY} and friends) "
            "or send Authorization: Bearer <key id>.<secret>",
        )

    @staticmethod
    def _verify_bearer(key: _Key, secret: str) -> None:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        if not hmac.compare_digest(digest, key.secret_sha256):
            raise UnauthorizedError("bad_credentials", "the key's secret is wrong")

    async def _verify_signature(self, request: Request, key: _Key, headers: dict[str, str]) -> str:
        stamp = headers.get(_TIMESTAMP, "")
        nonce = headers.get(_NONCE, "")
        digest = headers.get(_DIGEST, "")
        if not stamp.isdigit() or not NONCE.match(nonce) or len(digest) != 64:
            raise UnauthorizedError(
                "signature_invalid",
                f"a signed request needs {signing.HEADER_TIMESTAMP} (Unix seconds), "
                f"{signing.HEADER_NONCE} (8-64 of A-Z a-z 0-9 _ -) and {signing.HEADER_DIGEST}",
            )
        if abs(time.time() - int(stamp)) > self._skew.total_seconds():
            raise UnauthorizedError(
                "timestamp_out_of_window",
                f"the request's timestamp is more than {int(self._skew.total_seconds())} s "
                "from the server's clock",
            )
        scope = request.scope
        raw_path = scope.get("raw_path")
        canonical = signing.canonical_string(
            request.method,
            request.url.path if raw_path is None else raw_path.decode(),
            request.url.query if scope.get("query_string") else "",
            stamp,
            nonce,
            digest,
        )
        expected = signing.signature(key.signing_secret, canonical)
        if not hmac.compare_digest(expected, headers.get(_SIGNATURE, "")):
            raise UnauthorizedError("signature_invalid", "the signature does not match the request")
        body = await request.body()
        if not hmac.compare_digest(hashlib.sha256(body).hexdigest(), digest.lower()):
            raise BadRequestError(
                "body_digest_mismatch", "the body is not the one that was signed (tampered?)"
            )
        return nonce


_KEY = signing.HEADER_KEY.lower()
_TIMESTAMP = signing.HEADER_TIMESTAMP.lower()
_NONCE = signing.HEADER_NONCE.lower()
_DIGEST = signing.HEADER_DIGEST.lower()
_SIGNATURE = signing.HEADER_SIGNATURE.lower()


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name, the first of repeated ones (as Starlette's
    ``Headers.get`` answers), read in one pass instead of a scan per header."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        found.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return found


def _in_networks(
    address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> bool:
    """Whether ``address`` is an IP inside one of ``networks`` (not an IP: no)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)
