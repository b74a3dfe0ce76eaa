"""Helpers of the notification tests: a fake clock, a webhook receiver, a mailbox."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from tests.service.conftest import SECRET

from promoguard.errors import PromoguardError
from promoguard.security.guard import Guard
from promoguard.security.keys import Role
from promoguard.security.nonces import DatabaseNonces
from promoguard.security.ratelimit import RateLimits
from promoguard.store.db import Database

START = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)


class FakeClock:
    """Now, as the test says: time moves only when the test moves it."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def free_socket() -> socket.socket:
    """A listening TCP socket on a free local port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class Received:
    """One request the receiver got, and what promoguard's own inbound check said of it."""

    verified_key: str | None
    refusal: str | None
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """A webhook receiver: verifies each request with promoguard's :class:`Guard` (the same code
    that checks signed calls to the API), then fails the first ``fail_first`` verified ones with
    503 and accepts the rest."""

    url: str
    fail_first: int = 0
    received: list[Received] = field(default_factory=list)

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.received if r.answered == 200]


def receiver_app(receiver: Receiver, url: str) -> Starlette:
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        db = Database(url)
        state["guard"] = Guard(
            db=db,
            master_secret=SECRET,
            nonces=DatabaseNonces(db),
            limits=RateLimits({}, None),
            signing_required=frozenset(Role),
            skew=timedelta(seconds=300),
            trusted_proxies=[],
        )
        yield
        await db.dispose()

    async def hook(request: Request) -> JSONResponse:
        body = await request.body()
        headers = dict(request.headers)
        try:
            principal = await state["guard"].check(
                request, roles=frozenset({Role.OPERATOR.value}), route="incident_webhook"
            )
        except PromoguardError as exc:
            receiver.received.append(Received(None, exc.code, headers, body, exc.status))
            return JSONResponse({"code": exc.code}, status_code=exc.status)
        verified = [r for r in receiver.received if r.verified_key]
        status = 503 if len(verified) < receiver.fail_first else 200
        receiver.received.append(Received(principal.key_id, None, headers, body, status))
        return JSONResponse({"ok": status == 200}, status_code=status)

    return Starlette(routes=[Route("/hooks/incidents", hook, methods=["POST"])], lifespan=lifespan)


def wait_until(ready: Any, thread: threading.Thread) -> bool:
    """Wait (on an event, not a clock) for a server thread to be up; False if it died."""
    event = threading.Event()
    for _ in range(3000):
        if ready():
            return True
        if not thread.is_alive():
            return False
        event.wait(0.01)
    return False


@dataclass
class Mailbox:
    """What the local SMTP server received."""

    host: str
    port: int
    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)

    def to(self, address: str) -> list[EmailMessage]:
        return [m for _, rcpts, m in self.messages if address in rcpts]


class MailHandler:
    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.mailbox.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


def run(coro: Any) -> Any:
    """Run a coroutine to completion (the tests are plain functions, like the rest)."""
    return asyncio.run(coro)
