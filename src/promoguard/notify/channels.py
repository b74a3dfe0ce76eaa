"""Channels: what actually sends a queued delivery (a webhook POST, an email, an SMS, a push).

Every channel has one method, ``async deliver(delivery)``, that returns when the message is
accepted and raises when it is not; the dispatcher retries what raised. SMS and app push go
through an :class:`Adapter` (one per provider); the ones here write to a JSON-lines file or to the
log, for development, tests and as the fallback where no provider is configured.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib
import httpx
import orjson

from promoguard.notify.models import Delivery
from promoguard.security import signing

__all__ = [
    "HEADER_DELIVERY",
    "HEADER_EVENT",
    "Adapter",
    "AdapterChannel",
    "Channel",
    "DeliveryError",
    "EmailChannel",
    "FileAdapter",
    "LogAdapter",
    "ShortMessage",
    "WebhookChannel",
]

log = logging.getLogger("promoguard.notify")

HEADER_EVENT = "X-Promoguard-Event"
HEADER_DELIVERY = "X-Promoguard-Delivery"


class DeliveryError(Exception):
    """A channel could not deliver a message (the dispatcher tries again later)."""


class Channel(Protocol):
    """Sends one delivery; returns when it was accepted, raises when it was not."""

    async def deliver(self, delivery: Delivery) -> None:
        """Send ``delivery`` or raise."""
        ...


def webhook_body(delivery: Delivery) -> bytes:
    """The exact bytes a webhook delivery POSTs (and signs): its payload as compact JSON."""
    return orjson.dumps(delivery.payload, option=orjson.OPT_SORT_KEYS)


class WebhookChannel:
    """POSTs the payload as JSON to the delivery's target URL, signed like an inbound request.

    The headers are those :mod:`promoguard.security.signing` defines (key id, timestamp, nonce,
    body digest, signature), so a receiver verifies with the same code promoguard uses for its own
    API; every attempt is signed afresh (new timestamp and nonce). ``Idempotency-Key`` is the
    same on every attempt, so a receiver can drop a message it already processed. Any status
    outside 2xx, a timeout or a connection error is a failure.
    """

    def __init__(
        self,
        *,
        key_id: str,
        secret: str,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._key_id = key_id
        self._secret = secret
        self._timeout = timeout
        self._transport = transport

    async def deliver(self, delivery: Delivery) -> None:
        """POST ``delivery.payload`` to ``delivery.target``."""
        body = webhook_body(delivery)
        url = httpx.URL(delivery.target)
        headers = signing.sign(
            key_id=self._key_id,
            secret=self._secret,
            method="POST",
            path=url.raw_path.decode().split("?", 1)[0],
            query=url.query.decode(),
            body=body,
        )
        headers.update(
            {
                "Content-Type": "application/json",
                "Idempotency-Key": delivery.idempotency_key,
                HEADER_EVENT: delivery.event,
                HEADER_DELIVERY: str(delivery.id),
            }
        )
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout, transport=self._transport, follow_redirects=False
            ) as client:
                response = await client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"POST {delivery.target}: {exc.__class__.__name__}: {exc}") from exc
        if not response.is_success:
            raise DeliveryError(
                f"POST {delivery.target}: HTTP {response.status_code} {response.text[:200]!r}"
            )


class EmailChannel:
    """Sends the rendered subject, plain text and HTML alternative over SMTP."""

    def __init__(
        self,
        *,
        host: str,
        port: int = 587,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        timeout: float = 10.0,
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._username = username
        self._password = password
        self._starttls = starttls
        self._timeout = timeout

    def message(self, delivery: Delivery) -> EmailMessage:
        """The email a delivery sends."""
        payload = delivery.payload
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = delivery.target
        message["Subject"] = str(payload["subject"])
        message["Date"] = formatdate(localtime=False, usegmt=True)
        # The same id on every attempt: a mail system that got it once can drop a repeat.
        domain = self._sender.rpartition("@")[2] or "promoguard"
        message["Message-ID"] = f"<{delivery.idempotency_key}@{domain}>"
        message.set_content(str(payload["text"]))
        if payload.get("html"):
            message.add_alternative(str(payload["html"]), subtype="html")
        return message

    async def deliver(self, delivery: Delivery) -> None:
        """Send ``delivery`` to ``delivery.target``."""
        try:
            await aiosmtplib.send(
                self.message(delivery),
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password,
                start_tls=self._starttls,
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPException as exc:
            raise DeliveryError(
                f"SMTP {self._host}:{self._port}: {exc.__class__.__name__}: {exc}"
            ) from exc
        except OSError as exc:
            raise DeliveryError(f"SMTP {self._host}:{self._port}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class ShortMessage:
    """What an SMS or push adapter is given."""

    channel: str
    """``sms`` or ``push``."""
    to: str
    """A phone number or a device token."""
    title: str
    text: str
    event: str
    key: str
    """The delivery's idempotency key: the same on every attempt."""
    data: dict[str, Any] = field(default_factory=dict)


class Adapter(Protocol):
    """A provider of SMS or app push: sends one short message or raises."""

    async def send(self, message: ShortMessage) -> None:
        """Send ``message`` or raise."""
        ...


class _Failing:
    """Failure injection for the adapters: the first ``fail_first`` sends raise."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.calls = 0

    def _maybe_fail(self, message: ShortMessage) -> None:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise DeliveryError(
                f"injected failure {self.calls} of {self.fail_first} "
                f"({message.channel} to {message.to})"
            )


class FileAdapter(_Failing):
    """Appends each message to a file as one JSON line (an outbox a test or a person can read).

    Args:
        path: the file; its directory is created when missing.
        fail_first: make the first N sends fail (to exercise retries).
    """

    def __init__(self, path: str | Path, *, fail_first: int = 0) -> None:
        super().__init__(fail_first)
        self.path = Path(path)
        self._lock = asyncio.Lock()

    async def send(self, message: ShortMessage) -> None:
        """Append ``message`` as one line."""
        self._maybe_fail(message)
        line = orjson.dumps(message) + b"\n"
        async with self._lock:
            await asyncio.to_thread(self._append, line)

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write on a file opened for appending: lines of concurrent writers do not interleave.
        with self.path.open("ab") as file:
            file.write(line)


class LogAdapter(_Failing):
    """Logs each message at INFO on ``promoguard.notify`` (where no provider is configured)."""

    def __init__(self, logger: logging.Logger | None = None, *, fail_first: int = 0) -> None:
        super().__init__(fail_first)
        self._log = logger or log

    async def send(self, message: ShortMessage) -> None:
        """Log ``message``."""
        self._maybe_fail(message)
        self._log.info("%s to %s: %s", message.channel, message.to, orjson.dumps(message).decode())


class AdapterChannel:
    """The SMS or push channel: turns a delivery into a :class:`ShortMessage` for an adapter."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    async def deliver(self, delivery: Delivery) -> None:
        """Hand ``delivery`` to the adapter."""
        payload = delivery.payload
        await self.adapter.send(
            ShortMessage(
                channel=delivery.channel,
                to=delivery.target,
                title=str(payload.get("title", "")),
                text=str(payload["text"]),
                event=delivery.event,
                key=delivery.idempotency_key,
                data=dict(payload.get("data", {})),
            )
        )
