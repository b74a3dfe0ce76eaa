"""Incidents in the service: opened by an alert or by hand, graded, escalated on a missed
deadline (the desk's clock is injected: no sleeps), moved forward, and reported with the real
numbers of a scripted incident. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.notify.helpers import Mailbox, MailHandler
from tests.service.conftest import signed_client
from tests.service.helpers import approve, catalogue, line, live, order, quote, threshold
from tests.serving import free_port

from promoguard.notify.models import Delivery
from promoguard.settings import Settings


@pytest.fixture
def desk_client(settings: Settings) -> Iterator[TestClient]:
    """A client whose watch and incident clock run only when a test says so; the team is
    emailed and a webhook configured (queued in the outbox; nothing is delivered here)."""
    slow = settings.model_copy(
        update={
            "monitor_interval_seconds": 3600,
            "incident_check_seconds": 3600,
            "notify_interval_seconds": 3600,
            "notify_team_emails": ["oncall@shop.example"],
            "notify_smtp_host": "127.0.0.1",
            "notify_webhook_urls": ["http://127.0.0.1:9/hook"],
            "notify_webhook_secret": "webhook-secret-0123456789",
        }
    )
    with signed_client(slow) as client:
        assert client.put("/v1/catalogue", json=catalogue()).status_code == 200
        yield client


def tick_watch(client: TestClient) -> list[Any]:
    watch = client.app.state.services.watch  # type: ignore[attr-defined]
    return client.portal.call(watch.tick)  # type: ignore[union-attr, no-any-return]


def tick_desk(client: TestClient, at: datetime) -> list[tuple[int, str]]:
    desk = client.app.state.incidents  # type: ignore[attr-defined]
    desk._clock = lambda: at  # the injectable clock
    return client.portal.call(desk.tick)  # type: ignore[union-attr, no-any-return]


def buy(client: TestClient, n: int, prefix: str, expected: int) -> None:
    for i in range(n):
        priced = quote(client, [line("sku-8", 30000)], customer=f"{prefix}-{i}")
        assert priced["discount_total"] == expected
        assert order(client, priced["quote_token"], f"{prefix}-{i}").status_code == 201


def deliveries(client: TestClient) -> list[tuple[str, str, str]]:
    async def read() -> list[tuple[str, str, str]]:
        db = client.app.state.services.db  # type: ignore[attr-defined]
        async with db.read() as session:
            rows = await session.scalars(select(Delivery).order_by(Delivery.id))
            return [(d.event, d.channel, d.target) for d in rows.all()]

    return client.portal.call(read)  # type: ignore[union-attr]


def faulty_version_paused(client: TestClient) -> dict[str, Any]:
    """满200减20 live with 5 normal orders; v2 (满200减60) live, 8 orders; the watch pauses it
    and opens the incident. Returns the incident."""
    live(client, threshold(spend=20000, off=2000))
    buy(client, 5, "normal", 2000)
    assert (
        client.post("/v1/campaigns/mj/versions", json={"spec": threshold(off=6000)}).status_code
        == 201
    )
    approve(client, "mj", 2)
    assert client.post("/v1/campaigns/mj/activate", json={"version": 2}).status_code == 200
    buy(client, 8, "affected", 6000)
    assert [a.rule for a in tick_watch(client)] == ["discount-above-profile"]
    (incident,) = client.get("/v1/incidents").json()
    return incident  # type: ignore[no-any-return]


def test_an_alert_opens_an_incident_graded_from_its_impact_and_tells_the_team(
    desk_client: TestClient,
):
    incident = faulty_version_paused(desk_client)

    assert (incident["status"], incident["severity"]) == ("open", "P1")  # the rule's severity
    assert incident["versions"] == [["mj", 2]]
    impact = incident["impact"]
    assert (impact["orders_affected"], impact["customers_affected"]) == (8, 8)
    assert impact["discount_given"] == 8 * 6000
    # v1's expected discount per order is 20 yuan: 40 yuan an order beyond intent.
    assert impact["beyond_intent"] == 8 * 4000
    opened = datetime.fromisoformat(incident["opened_at"])
    assert datetime.fromisoformat(incident["ack_due_at"]) == opened + timedelta(minutes=10)
    assert datetime.fromisoformat(incident["respond_due_at"]) == opened + timedelta(minutes=30)
    (alert,) = desk_client.get("/v1/alerts").json()
    assert alert["outcome"] == {
        "pause": "paused",
        "notify": "logged",
        "incident": f"opened {incident['id']} (P1)",
    }
    kinds = [e["kind"] for e in desk_client.get(f"/v1/incidents/{incident['id']}/timeline").json()]
    assert {"opened", "alert", "alert.fired", "campaign.paused"} <= set(kinds)
    assert kinds.index("campaign.paused") < kinds.index("opened")  # the kill switch came first
    assert ("incident.opened", "email", "oncall@shop.example") in deliveries(desk_client)
    assert ("incident.opened", "webhook", "http://127.0.0.1:9/hook") in deliveries(desk_client)


def test_a_missed_acknowledge_deadline_escalates_level_by_level(desk_client: TestClient):
    incident = faulty_version_paused(desk_client)
    number, due = incident["id"], datetime.fromisoformat(incident["ack_due_at"])

    assert tick_desk(desk_client, due - timedelta(seconds=1)) == []
    assert tick_desk(desk_client, due) == [(number, "acknowledge")]
    first = desk_client.get(f"/v1/incidents/{number}").json()
    assert (first["escalation_level"], first["oncall"]) == (1, ["oncall-secondary"])
    # Re-armed one period (10 minutes) later: still nobody, so the next level.
    assert tick_desk(desk_client, due + timedelta(minutes=5)) == []
    assert tick_desk(desk_client, due + timedelta(minutes=10)) == [(number, "acknowledge")]
    second = desk_client.get(f"/v1/incidents/{number}").json()
    assert (second["escalation_level"], second["oncall"]) == (2, ["engineering-lead"])
    escalations = [
        e
        for e in desk_client.get(f"/v1/incidents/{number}/timeline").json()
        if e["kind"] == "escalated"
    ]
    assert [e["detail"]["level"] for e in escalations] == [1, 2]
    assert [d for d in deliveries(desk_client) if d[0] == "incident.escalated"]
    # Acknowledged: the acknowledge clock stops (the respond clock still runs).
    assert desk_client.post(f"/v1/incidents/{number}/acknowledge", json={}).status_code == 200
    assert tick_desk(desk_client, due + timedelta(minutes=19)) == []
    respond = datetime.fromisoformat(incident["respond_due_at"])
    assert tick_desk(desk_client, respond) == [(number, "respond")]


def test_states_move_forward_only_and_a_review_needs_a_root_cause(desk_client: TestClient):
    opened = desk_client.post("/v1/incidents", json={"title": "banner shows the wrong price"})
    assert opened.status_code == 201, opened.text
    number = opened.json()["id"]
    assert opened.json()["severity"] == "P3"

    mitigated = desk_client.post(f"/v1/incidents/{number}/status", json={"status": "mitigated"})
    assert mitigated.status_code == 200
    assert mitigated.json()["acknowledged_at"] is not None  # mitigating acknowledges
    back = desk_client.post(f"/v1/incidents/{number}/status", json={"status": "open"})
    assert (back.status_code, back.json()["code"]) == (409, "incident_state")
    assert (
        desk_client.post(f"/v1/incidents/{number}/status", json={"status": "resolved"}).status_code
        == 200
    )
    early = desk_client.post(f"/v1/incidents/{number}/status", json={"status": "reviewed"})
    assert (early.status_code, early.json()["code"]) == (409, "postmortem_incomplete")
    pm = desk_client.put(
        f"/v1/incidents/{number}/postmortem", json={"root_cause": "a stale CDN copy"}
    )
    assert pm.status_code == 200
    done = desk_client.post(f"/v1/incidents/{number}/status", json={"status": "reviewed"})
    assert done.json()["status"] == "reviewed"


def test_severity_is_raised_freely_and_lowered_only_with_a_reason(desk_client: TestClient):
    number = desk_client.post("/v1/incidents", json={"title": "t", "severity": "P2"}).json()["id"]
    raised = desk_client.post(f"/v1/incidents/{number}/severity", json={"severity": "P0"})
    assert raised.json()["severity"] == "P0"
    bare = desk_client.post(f"/v1/incidents/{number}/severity", json={"severity": "P2"})
    assert (bare.status_code, bare.json()["code"]) == (422, "reason_required")
    lowered = desk_client.post(
        f"/v1/incidents/{number}/severity", json={"severity": "P2", "reason": "one SKU only"}
    )
    assert lowered.json()["severity"] == "P2"
    story = desk_client.get(f"/v1/incidents/{number}/timeline").json()
    assert [e["message"] for e in story if e["kind"] == "severity"] == [
        "raised from P2 to P0",
        "lowered from P0 to P2: one SKU only",
    ]


def test_reported_outage_regrades_to_p0_and_the_change_is_recorded(desk_client: TestClient):
    number = desk_client.post("/v1/incidents", json={"title": "payments failing"}).json()["id"]
    reported = desk_client.post(f"/v1/incidents/{number}/impact", json={"payment_down": True})
    assert reported.json()["severity"] == "P0"
    story = desk_client.get(f"/v1/incidents/{number}/timeline").json()
    assert any(e["kind"] == "severity" and e["detail"]["auto"] for e in story)


def test_the_impact_is_re_measured_as_orders_arrive(desk_client: TestClient):
    live(desk_client, threshold(spend=20000, off=2000))
    buy(desk_client, 2, "early", 2000)
    opened = desk_client.post(
        "/v1/incidents",
        json={"title": "mj", "versions": [{"campaign_id": "mj", "version": 1}]},
    ).json()
    assert (opened["severity"], opened["impact"]["orders_affected"]) == ("P2", 2)
    buy(desk_client, 3, "later", 2000)
    tick_desk(desk_client, datetime.now(UTC))
    again = desk_client.get(f"/v1/incidents/{opened['id']}").json()
    assert again["impact"]["orders_affected"] == 5


def test_the_report_holds_the_scripted_incidents_real_numbers(desk_client: TestClient):
    incident = faulty_version_paused(desk_client)
    number = incident["id"]
    desk_client.post(f"/v1/incidents/{number}/acknowledge", json={"message": "on it"})
    desk_client.put(
        f"/v1/incidents/{number}/postmortem",
        json={
            "summary": "满200减60 went live instead of 满200减20",
            "root_cause": "the amount was keyed as 60 instead of 20",
            "contributing_factors": ["the L502 warning was acknowledged in a hurry"],
            "action_items": [{"what": "make L502 blocking", "owner": "marketing-ops"}],
        },
    )
    markdown = desk_client.get(f"/v1/incidents/{number}/report")
    assert markdown.status_code == 200
    text = markdown.text
    assert "| Orders affected | 8 |" in text
    assert "| Customers affected | 8 of 8 active (100.00 %) |" in text
    assert "| Discount given by the faulty versions | ¥480.00 |" in text
    assert "| Money given away beyond intent | ¥320.00 |" in text
    assert "the amount was keyed as 60 instead of 20" in text
    assert "| make L502 blocking | marketing-ops | — |" in text
    assert "Lint **L502**" in text
    assert "Alert rule **discount-above-profile** (P1) fired" in text
    assert "after 8 affected orders" in text
    html = desk_client.get(f"/v1/incidents/{number}/report", params={"format": "html"})
    assert html.headers["content-type"].startswith("text/html")
    assert '<td class="num">8</td>' in html.text
    data = desk_client.get(f"/v1/incidents/{number}/report", params={"format": "json"}).json()
    assert data["impact"]["orders_affected"] == 8


def test_an_unknown_incident_is_a_404(desk_client: TestClient):
    missing = desk_client.get("/v1/incidents/999")
    assert (missing.status_code, missing.json()["code"]) == (404, "incident_not_found")


def test_a_status_update_reaches_the_team_and_each_customer_in_their_language_by_email(
    settings: Settings,
):
    """Through the outbox and a real SMTP server (aiosmtpd)."""
    mailbox = Mailbox("127.0.0.1", free_port())
    controller = Controller(MailHandler(mailbox), hostname=mailbox.host, port=mailbox.port)
    controller.start()
    mailing = settings.model_copy(
        update={
            "monitor_interval_seconds": 3600,
            "incident_check_seconds": 3600,
            "notify_interval_seconds": 3600,
            "notify_team_emails": ["oncall@shop.example"],
            "notify_team_locale": "en",
            "notify_smtp_host": mailbox.host,
            "notify_smtp_port": mailbox.port,
            "notify_smtp_starttls": False,  # the local test server speaks plain SMTP
        }
    )
    try:
        with signed_client(mailing) as client:
            number = client.post("/v1/incidents", json={"title": "wrong VIP prices"}).json()["id"]
            update = client.post(
                f"/v1/incidents/{number}/notes",
                json={
                    "kind": "update",
                    "message": "The difference will be refunded within 3 days.",
                    "customers": [
                        {"order_id": "o-1", "locale": "zh", "email": "li@example.cn"},
                        {"order_id": "o-2", "locale": "en", "email": "ann@example.com"},
                    ],
                },
            )
            assert update.status_code == 200, update.text
            notifications = client.app.state.notifications  # type: ignore[attr-defined]
            report = client.portal.call(notifications.flush)  # type: ignore[union-attr]
            # Four emails: the team's for the opening and the update, one to each customer.
            assert (report.delivered, report.retried, report.dead) == (4, 0, 0)
    finally:
        controller.stop()

    (zh,) = mailbox.to("li@example.cn")
    assert zh["Subject"] == "您的订单 o-1 处理进展"
    assert "The difference will be refunded within 3 days." in zh.get_body(("plain",)).get_content()
    (en,) = mailbox.to("ann@example.com")
    assert "o-2" in en["Subject"]
    team = mailbox.to("oncall@shop.example")
    assert any("wrong VIP prices" in m["Subject"] for m in team)
