"""SMS and app push: the file adapter's outbox holds one JSON line per message; the log adapter
logs it; injected failures are retried like any other."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from promoguard.notify import (
    AdapterChannel,
    ChannelName,
    FileAdapter,
    LogAdapter,
    Notice,
    Notifications,
    Recipient,
)
from promoguard.notify.outbox import deliveries
from promoguard.settings import Settings
from promoguard.store.db import Database

from .helpers import FakeClock, run

NOTICE = Notice(
    key="incident:3:resolved",
    event="incident.resolved",
    data={"incident_id": 3},
    customer_template="customer_incident_resolved",
    customers=[
        Recipient(
            locale="zh",
            phone="+8613800138000",
            device="device-token-li",
            context={"order_id": "o-31", "remedy": "refund", "amount": 1990},
        ),
        Recipient(locale="en", phone="+8613900139000", context={"order_id": "o-32"}),
    ],
)


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_sms_and_push_go_to_their_file_outboxes_one_json_line_each(
    settings: Settings, tmp_path: Path, clock: FakeClock
):
    config = settings.model_copy(
        update={
            "notify_sms_path": str(tmp_path / "sms.jsonl"),
            "notify_push_path": str(tmp_path / "out" / "push.jsonl"),
        }
    )

    async def scenario() -> None:
        db = Database(config.database_url)
        try:
            notifications = Notifications.from_settings(config, db, clock=clock)
            assert len(await notifications.send(NOTICE)) == 3
            assert (await notifications.flush()).delivered == 3
        finally:
            await db.dispose()

    run(scenario())
    sms = sorted(_lines(tmp_path / "sms.jsonl"), key=lambda m: str(m["to"]))
    assert [(m["channel"], m["to"]) for m in sms] == [
        ("sms", "+8613800138000"),
        ("sms", "+8613900139000"),
    ]
    assert sms[0]["text"] == "订单 o-31 的价格问题已解决，已退还 ¥19.90。"
    assert sms[1]["text"] == "Order o-32: the pricing problem is fixed."
    assert {m["event"] for m in sms} == {"incident.resolved"}
    (push,) = _lines(tmp_path / "out" / "push.jsonl")
    assert push["to"] == "device-token-li"
    assert push["title"] == "您的订单 o-31：价格问题已解决"
    assert push["data"] == {"key": "incident:3:resolved", "event": "incident.resolved"}


def test_an_adapter_failing_its_first_sends_is_retried_until_it_succeeds(
    settings: Settings, tmp_path: Path, clock: FakeClock
):
    adapter = FileAdapter(tmp_path / "sms.jsonl", fail_first=2)
    notice = Notice(
        key="incident:4:update:1",
        event="incident.update",
        data={"message": "退款已发起"},
        customer_template="customer_incident_update",
        customers=[Recipient(locale="zh", phone="+8613800138000", context={"order_id": "o-4"})],
    )

    async def scenario() -> None:
        db = Database(settings.database_url)
        try:
            notifications = Notifications.from_settings(
                settings, db, clock=clock, channels={ChannelName.SMS: AdapterChannel(adapter)}
            )
            await notifications.send(notice)
            outcomes = []
            for _ in range(3):
                report = await notifications.flush()
                outcomes.append((report.retried, report.delivered))
                clock.advance(hours=1)
            assert outcomes == [(1, 0), (1, 0), (0, 1)]
            async with db.read() as session:
                (row,) = await deliveries(session, notice_key=notice.key)
            assert (row.status, row.attempts) == ("delivered", 3)
            assert "injected failure 2 of 2" in (row.last_error or "")
        finally:
            await db.dispose()

    run(scenario())
    (line,) = _lines(tmp_path / "sms.jsonl")
    assert line["text"] == "订单 o-4 进展：退款已发起"
    assert adapter.calls == 3


def test_the_log_adapter_logs_each_message(
    settings: Settings, clock: FakeClock, caplog: pytest.LogCaptureFixture
):
    async def scenario() -> None:
        db = Database(settings.database_url)
        try:
            notifications = Notifications.from_settings(
                settings, db, clock=clock, channels={ChannelName.PUSH: AdapterChannel(LogAdapter())}
            )
            await notifications.send(NOTICE)
            with caplog.at_level(logging.INFO, logger="promoguard.notify"):
                assert (await notifications.flush()).delivered == 3
        finally:
            await db.dispose()

    run(scenario())
    logged = [r.getMessage() for r in caplog.records if r.name == "promoguard.notify"]
    assert any(m.startswith("push to device-token-li: ") for m in logged)
    assert sum(m.startswith("sms to +86") for m in logged) == 2
