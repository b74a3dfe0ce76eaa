"""Email over SMTP: a notice's messages arrive at a real local SMTP server, in each recipient's
language, as plain text with an HTML alternative; a server that is down means a retry."""

from __future__ import annotations

from promoguard.notify import Notice, Notifications, Recipient
from promoguard.settings import Settings
from promoguard.store.db import Database

from .helpers import FakeClock, Mailbox, run

NOTICE = Notice(
    key="incident:7:opened",
    event="incident.opened",
    data={
        "incident_id": 7,
        "severity": "P0",
        "title": "满减 keyed as 满50减200",
        "link": "https://ops/7",
    },
    team_template="team_incident_opened",
    customer_template="customer_incident_opened",
    customers=[
        Recipient(
            locale="zh_CN",
            email="li@example.com",
            context={
                "order_id": "o-1001",
                "remedy": "refund",
                "amount": 5000,
                "customer_name": "李雷",
            },
        ),
        Recipient(
            locale="en",
            email="ann@example.com",
            context={"order_id": "o-1002", "remedy": "coupon", "amount": 2000},
        ),
    ],
)


def _config(settings: Settings, mailbox: Mailbox) -> Settings:
    return settings.model_copy(
        update={
            "notify_smtp_host": mailbox.host,
            "notify_smtp_port": mailbox.port,
            "notify_smtp_starttls": False,
            "notify_smtp_from": "alerts@shop.example",
            "notify_team_emails": ["oncall@shop.example"],
            "notify_team_locale": "en",
        }
    )


def _parts(message: object) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[attr-defined]
    html = message.get_body(preferencelist=("html",)).get_content()  # type: ignore[attr-defined]
    return text, html


def test_a_notice_emails_the_team_and_each_customer_in_their_language(
    settings: Settings, mailbox: Mailbox, clock: FakeClock
):
    config = _config(settings, mailbox)

    async def scenario() -> None:
        db = Database(config.database_url)
        try:
            notifications = Notifications.from_settings(config, db, clock=clock)
            assert len(await notifications.send(NOTICE)) == 3
            assert (await notifications.flush()).delivered == 3
        finally:
            await db.dispose()

    run(scenario())
    assert sorted(r for _, rcpts, _ in mailbox.messages for r in rcpts) == [
        "ann@example.com",
        "li@example.com",
        "oncall@shop.example",
    ]
    assert {sender for sender, _, _ in mailbox.messages} == {"alerts@shop.example"}

    (zh,) = mailbox.to("li@example.com")
    assert zh["Subject"] == "关于您的订单 o-1001：我们发现了一个价格问题，正在处理"
    assert zh["From"] == "alerts@shop.example"
    text, html = _parts(zh)
    assert "李雷，您好" in text
    assert "我们将把 ¥50.00 原路退还给您" in text
    assert "<strong>¥50.00</strong>" in html
    assert '<html lang="zh-CN">' in html

    (en,) = mailbox.to("ann@example.com")
    assert en["Subject"] == "About your order o-1002: a pricing problem we are putting right"
    text, html = _parts(en)
    assert "Dear customer," in text
    assert "a coupon worth CN¥20.00" in text
    assert "<strong>CN¥20.00</strong>" in html

    (team,) = mailbox.to("oncall@shop.example")
    assert team["Subject"] == "[P0] Incident 7 opened: 满减 keyed as 满50减200"
    text, _ = _parts(team)
    assert "https://ops/7" in text


def test_an_email_is_retried_while_the_smtp_server_is_down(
    settings: Settings, mailbox: Mailbox, clock: FakeClock
):
    config = _config(settings, mailbox).model_copy(update={"notify_team_emails": []})
    down = config.model_copy(
        update={"notify_smtp_port": mailbox.port + 1 if mailbox.port < 65535 else 1}
    )
    notice = Notice(
        key="incident:8:update:1",
        event="incident.update",
        data={"message": "The refund is on its way."},
        customer_template="customer_incident_update",
        customers=[Recipient(locale="en", email="ann@example.com", context={"order_id": "o-9"})],
    )

    async def scenario() -> None:
        db = Database(config.database_url)
        try:
            await Notifications.from_settings(down, db, clock=clock).send(notice)
            report = await Notifications.from_settings(down, db, clock=clock).flush()
            assert (report.delivered, report.retried) == (0, 1)
            clock.advance(hours=1)
            report = await Notifications.from_settings(config, db, clock=clock).flush()
            assert report.delivered == 1
        finally:
            await db.dispose()

    run(scenario())
    (message,) = mailbox.to("ann@example.com")
    assert message["Subject"] == "Update on your order o-9"
    assert "The refund is on its way." in _parts(message)[0]
