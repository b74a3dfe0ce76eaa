"""The notifications facade: one ``send(notice)`` that fans a notice out to every channel.

A :class:`Notice` says what happened (``event``, ``data``) and who hears of it: every configured
webhook URL gets the event as signed JSON; the team's email addresses and phones get
``team_template`` in the team's language; each customer :class:`Recipient` gets
``customer_template`` in their own language on each channel they have (email, SMS, app push).
``send`` renders everything, queues one outbox row per target and returns: it never waits on the
network, and a template error surfaces to the caller before anything is queued. The same notice
key queued twice queues nothing the second time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from promoguard.notify.channels import (
    Adapter,
    AdapterChannel,
    Channel,
    EmailChannel,
    FileAdapter,
    LogAdapter,
    WebhookChannel,
)
from promoguard.notify.models import ChannelName, Delivery
from promoguard.notify.outbox import (
    Clock,
    Dispatcher,
    DispatchReport,
    Outgoing,
    RetryPolicy,
    dead_letters,
    enqueue,
    retry_dead_letter,
)
from promoguard.notify.templates import Rendered, Templates
from promoguard.settings import Settings
from promoguard.store.db import Database, utcnow

__all__ = ["Notice", "Notifications", "Recipient", "channels_from_settings"]


@dataclass(frozen=True, slots=True)
class Recipient:
    """A customer to tell, in their language, on every channel they have an address for.

    ``context`` is merged over the notice's ``data`` for this customer's messages (their order
    id, the amount refunded to them, their name).
    """

    locale: str = "zh"
    email: str | None = None
    phone: str | None = None
    device: str | None = None
    """An app-push device token."""
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Notice:
    """Something to tell people about.

    Args:
        key: unique per notice, e.g. ``incident:42:opened`` or ``incident:42:update:3``; queueing
            the same key again queues nothing new (per channel and target).
        event: what happened, e.g. ``incident.opened``; the webhooks' ``event`` field.
        data: JSON-able facts (datetimes allowed): the webhooks' ``data`` and every template's
            variables.
        team_template: the template for the team (emails and SMS), e.g. ``team_incident_opened``.
        customer_template: the template for ``customers``, e.g. ``customer_incident_opened``.
        customers: the customers to tell.
        webhooks: whether the configured webhook URLs get this notice.
        at: when it happened (default: when it is queued).
    """

    key: str
    event: str
    data: Mapping[str, Any] = field(default_factory=dict)
    team_template: str | None = None
    customer_template: str | None = None
    customers: Sequence[Recipient] = ()
    webhooks: bool = True
    at: datetime | None = None


def _jsonable(value: Mapping[str, Any]) -> dict[str, Any]:
    """``value`` as JSON types (datetimes as RFC 3339 strings, anything else odd as text)."""
    loaded: dict[str, Any] = orjson.loads(
        orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    )
    return loaded


def _adapter(path: str | None) -> Adapter:
    return FileAdapter(path) if path else LogAdapter()


def channels_from_settings(settings: Settings) -> dict[str, Channel]:
    """The channels the settings configure: webhooks when signed, email with an SMTP host, SMS
    and push through their file (or the log) until a provider adapter exists."""
    channels: dict[str, Channel] = {
        ChannelName.SMS: AdapterChannel(_adapter(settings.notify_sms_path)),
        ChannelName.PUSH: AdapterChannel(_adapter(settings.notify_push_path)),
    }
    if settings.notify_webhook_secret:
        channels[ChannelName.WEBHOOK] = WebhookChannel(
            key_id=settings.notify_webhook_key_id,
            secret=settings.notify_webhook_secret,
            timeout=settings.notify_webhook_timeout_seconds,
        )
    if settings.notify_smtp_host:
        channels[ChannelName.EMAIL] = EmailChannel(
            host=settings.notify_smtp_host,
            port=settings.notify_smtp_port,
            sender=settings.notify_smtp_from,
            username=settings.notify_smtp_username,
            password=settings.notify_smtp_password,
            starttls=settings.notify_smtp_starttls,
            timeout=settings.notify_smtp_timeout_seconds,
        )
    return channels


class Notifications:
    """Queue notices for delivery, and run the dispatcher that delivers them.

    Build it with :meth:`from_settings`; call :meth:`send` (or :meth:`queue` inside your own
    transaction); :meth:`start` and :meth:`stop` the background delivery with the app.
    """

    def __init__(
        self,
        db: Database,
        *,
        channels: Mapping[str, Channel],
        webhook_urls: Sequence[str] = (),
        team_emails: Sequence[str] = (),
        team_phones: Sequence[str] = (),
        team_locale: str = "zh",
        templates: Templates | None = None,
        policy: RetryPolicy | None = None,
        clock: Clock = utcnow,
        interval: float = 1.0,
        send_timeout: float = 60.0,
    ) -> None:
        self._db = db
        self._webhook_urls = tuple(webhook_urls)
        self._team_emails = tuple(team_emails)
        self._team_phones = tuple(team_phones)
        self._team_locale = team_locale
        self._templates = templates or Templates()
        self._clock = clock
        self.dispatcher = Dispatcher(
            db,
            channels,
            policy=policy,
            clock=clock,
            interval=interval,
            send_timeout=send_timeout,
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        db: Database,
        *,
        clock: Clock = utcnow,
        channels: Mapping[str, Channel] | None = None,
    ) -> Notifications:
        """Wire the channels, recipients and retry policy the settings describe.

        Args:
            settings: the ``notify_*`` settings are read.
            db: the database holding the outbox.
            clock: now (tests pass a fake).
            channels: replace some channels (e.g. an SMS adapter with failure injection).
        """
        return cls(
            db,
            channels={**channels_from_settings(settings), **(channels or {})},
            webhook_urls=settings.notify_webhook_urls,
            team_emails=settings.notify_team_emails,
            team_phones=settings.notify_team_phones,
            team_locale=settings.notify_team_locale,
            templates=Templates(settings.notify_timezone),
            policy=RetryPolicy(
                max_attempts=settings.notify_max_attempts,
                base_seconds=settings.notify_backoff_base_seconds,
                max_seconds=settings.notify_backoff_max_seconds,
            ),
            clock=clock,
            interval=settings.notify_interval_seconds,
            # A send must end before its claim lapses, or a second worker would send it too.
            send_timeout=max(
                settings.notify_webhook_timeout_seconds, settings.notify_smtp_timeout_seconds
            )
            + 5,
        )

    def plan(self, notice: Notice) -> list[Outgoing]:
        """Every delivery ``notice`` makes, rendered (no I/O).

        Raises:
            UnknownTemplateError: a template the notice names does not exist.
            TemplateContextError: a template needs a value the notice lacks.
        """
        items: list[Outgoing] = []
        data = _jsonable(notice.data)
        at = notice.at or self._clock()
        if notice.webhooks:
            body = {"key": notice.key, "event": notice.event, "at": at.isoformat(), "data": data}
            items += [
                self._item(notice, ChannelName.WEBHOOK, url, body) for url in self._webhook_urls
            ]
        if notice.team_template and (self._team_emails or self._team_phones):
            message = self._templates.render(notice.team_template, self._team_locale, **notice.data)
            items += self._messages(
                notice, notice.team_template, message, self._team_emails, self._team_phones, ()
            )
        if notice.customer_template:
            for customer in notice.customers:
                message = self._templates.render(
                    notice.customer_template,
                    customer.locale,
                    **{**notice.data, **customer.context},
                )
                items += self._messages(
                    notice,
                    notice.customer_template,
                    message,
                    [customer.email] if customer.email else (),
                    [customer.phone] if customer.phone else (),
                    [customer.device] if customer.device else (),
                )
        return items

    def _item(
        self, notice: Notice, channel: ChannelName, target: str, payload: dict[str, Any]
    ) -> Outgoing:
        return Outgoing(notice.key, channel.value, target, notice.event, payload)

    def _messages(  # noqa: PLR0917 (one list of targets per channel)
        self,
        notice: Notice,
        template: str,
        message: Rendered,
        emails: Sequence[str],
        phones: Sequence[str],
        devices: Sequence[str],
    ) -> list[Outgoing]:
        common = {"template": template, "locale": message.locale}
        email = {"subject": message.subject, "text": message.text, "html": message.html}
        sms = {"text": message.short, **common}
        push = {
            "title": message.subject,
            "text": message.short,
            "data": {"key": notice.key, "event": notice.event},
            **common,
        }
        return (
            [self._item(notice, ChannelName.EMAIL, to, {**email, **common}) for to in emails]
            + [self._item(notice, ChannelName.SMS, to, sms) for to in phones]
            + [self._item(notice, ChannelName.PUSH, to, push) for to in devices]
        )

    async def queue(self, session: AsyncSession, notice: Notice) -> list[int]:
        """Queue ``notice`` in the caller's transaction (it goes out only if that commits).

        Returns:
            The ids of the deliveries added (empty when the notice was queued before).
        """
        return await enqueue(session, items=self.plan(notice), now=self._clock())

    async def send(self, notice: Notice) -> list[int]:
        """Queue ``notice`` in a transaction of its own and wake the dispatcher.

        Returns:
            The ids of the deliveries added (empty when the notice was queued before).
        """
        items = self.plan(notice)
        async with self._db.write() as session:
            ids = await enqueue(session, items=items, now=self._clock())
        if ids:
            self.dispatcher.wake()
        return ids

    async def flush(self) -> DispatchReport:
        """Deliver everything due now, round after round, until nothing is (tests use it)."""
        return await self.dispatcher.run_until_idle()

    async def start(self) -> None:
        """Deliver in the background (call from the app's lifespan)."""
        await self.dispatcher.start()

    async def stop(self) -> None:
        """Stop delivering in the background."""
        await self.dispatcher.stop()

    async def dead_letters(self, limit: int = 100) -> list[Delivery]:
        """The deliveries that failed every attempt, oldest first."""
        async with self._db.read() as session:
            return list(await dead_letters(session, limit=limit))

    async def retry(self, delivery_id: int) -> Delivery:
        """Put a dead letter back to pending, due now (see :func:`retry_dead_letter`)."""
        async with self._db.write() as session:
            delivery = await retry_dead_letter(session, delivery_id=delivery_id, now=self._clock())
        self.dispatcher.wake()
        return delivery
