"""Outbound webhooks: signed so promoguard's own inbound check accepts them, retried with
backoff until they succeed, and dead-lettered after the last attempt (time moved by a fake
clock, never slept through)."""

from __future__ import annotations

import json
from datetime import timedelta

from promoguard.notify import DeliveryStatus, Notice, Notifications
from promoguard.notify.outbox import deliveries
from promoguard.security import signing
from promoguard.settings import Settings
from promoguard.store.db import Database

from .helpers import FakeClock, Receiver, run

NOTICE = Notice(
    key="incident:42:opened",
    event="incident.opened",
    data={"incident_id": 42, "severity": "P1", "money_at_stake": 1_234_500, "currency": "CNY"},
)


def _settings(
    settings: Settings, receiver: Receiver, key: tuple[str, str], **more: object
) -> Settings:
    return settings.model_copy(
        update={
            "notify_webhook_urls": [receiver.url],
            "notify_webhook_key_id": key[0],
            "notify_webhook_secret": key[1],
            "notify_backoff_base_seconds": 10.0,
            **more,
        }
    )


async def _rows(db: Database) -> list[object]:
    async with db.read() as session:
        return list(await deliveries(session, notice_key=NOTICE.key))


def test_a_webhook_is_signed_so_the_inbound_check_accepts_it_and_retried_until_it_succeeds(
    settings: Settings, receiver: Receiver, outbound_key: tuple[str, str], clock: FakeClock
):
    receiver.fail_first = 2
    config = _settings(settings, receiver, outbound_key)

    async def scenario() -> None:
        db = Database(config.database_url)
        try:
            notifications = Notifications.from_settings(config, db, clock=clock)
            assert len(await notifications.send(NOTICE)) == 1

            first = await notifications.flush()
            assert (first.delivered, first.retried) == (0, 1)
            (row,) = await _rows(db)
            assert (row.status, row.attempts) == (DeliveryStatus.PENDING, 1)
            assert "HTTP 503" in row.last_error
            # Backoff: 10 s ± 20 % after the first failure; not due before 8 s.
            assert timedelta(seconds=8) <= row.next_attempt_at - clock.now <= timedelta(seconds=12)
            clock.advance(seconds=7)
            assert (await notifications.flush()).claimed == 0
            assert len(receiver.received) == 1

            clock.advance(seconds=6)
            assert (await notifications.flush()).retried == 1
            (row,) = await _rows(db)
            # 20 s ± 20 % after the second failure.
            wait = row.next_attempt_at - clock.now
            assert timedelta(seconds=16) <= wait <= timedelta(seconds=24)

            clock.advance(seconds=25)
            assert (await notifications.flush()).delivered == 1
            (row,) = await _rows(db)
            assert (row.status, row.attempts, row.delivered_at) == ("delivered", 3, clock.now)
            assert (await notifications.flush()).claimed == 0
        finally:
            await db.dispose()

    run(scenario())

    assert len(receiver.received) == 3
    # Every attempt passed promoguard's own inbound verification, as the outbound key.
    assert [r.verified_key for r in receiver.received] == [outbound_key[0]] * 3
    assert [r.answered for r in receiver.received] == [503, 503, 200]
    headers = [r.headers for r in receiver.received]
    # Signed afresh each time (new nonce), but the same message with the same idempotency key.
    assert len({h[signing.HEADER_NONCE.lower()] for h in headers}) == 3
    assert len({h["idempotency-key"] for h in headers}) == 1
    assert {h["x-promoguard-event"] for h in headers} == {"incident.opened"}
    body = json.loads(receiver.received[-1].body)
    assert body["key"] == NOTICE.key
    assert body["event"] == "incident.opened"
    assert body["data"] == {
        "incident_id": 42,
        "severity": "P1",
        "money_at_stake": 1_234_500,
        "currency": "CNY",
    }
    assert {r.body for r in receiver.received} == {receiver.received[0].body}


def test_a_webhook_signed_with_the_wrong_secret_is_refused_by_the_inbound_check(
    settings: Settings, receiver: Receiver, outbound_key: tuple[str, str], clock: FakeClock
):
    config = _settings(settings, receiver, (outbound_key[0], "not-the-secret-0123456789"))

    async def scenario() -> None:
        db = Database(config.database_url)
        try:
            notifications = Notifications.from_settings(config, db, clock=clock)
            await notifications.send(NOTICE)
            report = await notifications.flush()
            assert (report.delivered, report.retried) == (0, 1)
            (row,) = await _rows(db)
            assert "HTTP 401" in row.last_error
        finally:
            await db.dispose()

    run(scenario())
    assert [(r.verified_key, r.refusal) for r in receiver.received] == [(None, "signature_invalid")]


def test_a_webhook_that_always_fails_is_dead_lettered_after_the_last_attempt_and_can_be_retried(
    settings: Settings, receiver: Receiver, outbound_key: tuple[str, str], clock: FakeClock
):
    receiver.fail_first = 10**6
    config = _settings(settings, receiver, outbound_key, notify_max_attempts=4)

    async def scenario() -> None:
        db = Database(config.database_url)
        try:
            notifications = Notifications.from_settings(config, db, clock=clock)
            (delivery_id,) = await notifications.send(NOTICE)
            outcomes = []
            for _ in range(4):
                report = await notifications.flush()
                outcomes.append((report.retried, report.dead))
                clock.advance(hours=2)
            assert outcomes == [(1, 0), (1, 0), (1, 0), (0, 1)]
            (row,) = await _rows(db)
            assert (row.status, row.attempts) == (DeliveryStatus.DEAD, 4)
            assert "HTTP 503" in row.last_error

            clock.advance(days=2)
            assert (await notifications.flush()).claimed == 0  # dead stays dead
            assert [d.id for d in await notifications.dead_letters()] == [delivery_id]

            receiver.fail_first = 0
            retried = await notifications.retry(delivery_id)
            assert (retried.status, retried.attempts) == (DeliveryStatus.PENDING, 0)
            assert (await notifications.flush()).delivered == 1
            assert await notifications.dead_letters() == []
        finally:
            await db.dispose()

    run(scenario())
    assert [r.answered for r in receiver.received] == [503, 503, 503, 503, 200]
    assert all(r.verified_key == outbound_key[0] for r in receiver.received)
