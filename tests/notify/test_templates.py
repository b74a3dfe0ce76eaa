"""Customer and team messages from the bundled zh/en templates."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources

import pytest

from promoguard.notify.templates import (
    TemplateContextError,
    Templates,
    UnknownTemplateError,
    normalise_locale,
    render,
)

EVERYTHING = {
    "order_id": "o-1",
    "customer_name": "Ann",
    "remedy": "refund",
    "amount": 12_345,
    "currency": "CNY",
    "claim_url": "https://shop.example/claims/o-1",
    "message": "refunds are being paid",
    "next_update_at": datetime(2026, 11, 11, 4, 0, tzinfo=UTC),
    "incident_id": 9,
    "severity": "P1",
    "title": "VIP price for everyone",
    "status": "mitigated",
    "acknowledge_by": datetime(2026, 11, 11, 4, 15, tzinfo=UTC),
    "respond_by": datetime(2026, 11, 11, 4, 30, tzinfo=UTC),
    "deadline": datetime(2026, 11, 11, 4, 15, tzinfo=UTC),
    "missed": "acknowledge",
    "level": 2,
    "money_at_stake": 8_800_000,
    "refunded": 12_345,
    "compensated": 500,
    "link": "https://ops.example/incidents/9",
}


def test_the_bundled_templates_are_the_customer_and_team_incident_messages():
    assert Templates().names() == [
        "customer_claim_update",
        "customer_incident_opened",
        "customer_incident_resolved",
        "customer_incident_update",
        "team_incident_escalated",
        "team_incident_opened",
        "team_incident_resolved",
        "team_incident_update",
    ]


@pytest.mark.parametrize("name", Templates().names())
@pytest.mark.parametrize("locale", ["zh", "en"])
def test_every_template_renders_in_both_locales(name: str, locale: str):
    message = render(name, locale, **EVERYTHING)
    assert message.locale == locale
    assert message.subject
    assert "\n" not in message.subject
    assert message.short
    assert message.text.strip()
    assert "</html>" in message.html
    assert ("o-1" in message.subject) == name.startswith("customer_")
    assert ("P1" in message.subject) == name.startswith("team_")


def test_a_customer_message_in_chinese_and_in_english_renders_money_from_minor_units():
    zh = render("customer_incident_opened", "zh", order_id="o-1", remedy="refund", amount=5000)
    assert zh.subject == "关于您的订单 o-1：我们发现了一个价格问题，正在处理"
    assert "我们将把 ¥50.00 原路退还给您" in zh.text
    assert zh.short == "您的订单 o-1 受到一个价格问题影响，我们将原路退还 ¥50.00。"
    en = render("customer_incident_opened", "en", order_id="o-1", remedy="compensation", amount=5)
    assert "We will compensate you with CN¥0.05." in en.text
    assert '<html lang="en">' in en.html


def test_times_are_shown_in_the_configured_time_zone():
    at = datetime(2026, 11, 11, 4, 30, tzinfo=UTC)
    shanghai = render(
        "team_incident_opened", "en", incident_id=1, severity="P0", title="t", respond_by=at
    )
    assert "Respond by:     2026-11-11 12:30 GMT+08:00" in shanghai.text
    utc = Templates("UTC").render(
        "team_incident_opened", "zh", incident_id=1, severity="P0", title="t", respond_by=at
    )
    assert "响应截止：2026-11-11 04:30 GMT" in utc.text


def test_html_is_escaped_and_text_is_not():
    message = render("customer_incident_update", "en", order_id="o-1", message="<b>now</b> & then")
    assert "<p>&lt;b&gt;now&lt;/b&gt; &amp; then</p>" in message.html
    assert "<b>now</b> & then" in message.text


@pytest.mark.parametrize(
    ("locale", "expected"),
    [("zh", "zh"), ("zh_CN", "zh"), ("zh-Hans", "zh"), ("EN-gb", "en"), ("fr", "en"), (None, "en")],
)
def test_locales_are_reduced_to_their_language_and_unknown_ones_fall_back_to_english(
    locale: str | None, expected: str
):
    assert normalise_locale(locale) == expected


def test_an_unknown_locale_renders_the_english_template():
    message = render("customer_incident_update", "fr_FR", order_id="o-1", message="m")
    assert (message.locale, message.subject) == ("en", "Update on your order o-1")


def test_a_missing_template_is_an_error_naming_it_and_the_ones_that_exist():
    with pytest.raises(UnknownTemplateError) as raised:
        render("customer_incident_reopened", "zh", order_id="o-1")
    assert raised.value.code == "unknown_template"
    assert "'customer_incident_reopened'" in raised.value.detail
    assert "customer_incident_opened" in raised.value.detail
    with pytest.raises(UnknownTemplateError):
        render("../_layout", "en")


def test_a_missing_variable_is_an_error_naming_it():
    with pytest.raises(TemplateContextError) as raised:
        render("customer_incident_update", "en", order_id="o-1")
    assert "'message' is undefined" in raised.value.detail


def test_the_templates_ship_inside_the_package():
    root = resources.files("promoguard.notify") / "templates"
    shipped = {f"{d.name}/{f.name}" for d in root.iterdir() if d.is_dir() for f in d.iterdir()}
    for name in Templates().names():
        assert {f"zh/{name}.txt", f"zh/{name}.html", f"en/{name}.txt", f"en/{name}.html"} <= shipped
