"""The outbox: a notice is queued once per target, due deliveries are claimed by one worker
each (PostgreSQL: FOR UPDATE SKIP LOCKED), an outcome recorded after the claim lapsed is
dropped, and the backoff grows within its jitter bounds."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest

from promoguard.errors import ConflictError, NotFoundError
from promoguard.notify import (
    Delivery,
    DeliveryStatus,
    Dispatcher,
    Notice,
    Notifications,
    Recipient,
    RetryPolicy,
)
from promoguard.notify.outbox import Outgoing, deliveries, enqueue, retry_dead_letter
from promoguard.settings import Settings
from promoguard.store.db import Database

from .helpers import FakeClock, run


class Recording:
    """A channel that records what it delivered; it yields to the loop mid-send so two
    dispatchers really overlap."""

    def __init__(self) -> None:
        self.delivered: list[int] = []

    async def deliver(self, delivery: Delivery) -> None:
        await asyncio.sleep(0)
        self.delivered.append(delivery.id)


def _notice(*emails: str) -> Notice:
    return Notice(
        key="incident:5:opened",
        event="incident.opened",
        data={"incident_id": 5},
        customer_template="customer_incident_opened",
        customers=[Recipient(locale="en", email=e, context={"order_id": "o-5"}) for e in emails],
    )


def test_the_same_notice_is_queued_once_per_channel_and_target(
    settings: Settings, clock: FakeClock
):
    config = settings.model_copy(
        update={
            "notify_webhook_urls": ["http://127.0.0.1:9/hook"],
            "notify_webhook_secret": "s" * 32,
        }
    )

    async def scenario() -> None:
        db = Database(config.database_url)
        try:
            notifications = Notifications.from_settings(config, db, clock=clock)
            first = await notifications.send(_notice("a@example.com", "b@example.com"))
            assert len(first) == 3  # the webhook and two emails
            assert await notifications.send(_notice("a@example.com", "b@example.com")) == []
            # A customer added to the same notice later gets theirs; the others are not repeated.
            again = await notifications.send(
                _notice("a@example.com", "c@example.com", "c@example.com")
            )
            assert len(again) == 1
            async with db.read() as session:
                rows = await deliveries(session, notice_key="incident:5:opened")
            assert sorted((r.channel, r.target) for r in rows) == [
                ("email", "a@example.com"),
                ("email", "b@example.com"),
                ("email", "c@example.com"),
                ("webhook", "http://127.0.0.1:9/hook"),
            ]
            assert len({r.idempotency_key for r in rows}) == 4
        finally:
            await db.dispose()

    run(scenario())


def test_a_notice_queued_in_a_transaction_that_rolls_back_is_not_sent(
    settings: Settings, clock: FakeClock
):
    async def scenario() -> None:
        db = Database(settings.database_url)
        try:
            notifications = Notifications.from_settings(settings, db, clock=clock)

            async def save_incident() -> None:
                async with db.write() as session:
                    assert len(await notifications.queue(session, _notice("a@example.com"))) == 1
                    raise RuntimeError("the incident could not be saved")

            with pytest.raises(RuntimeError):
                await save_incident()
            async with db.read() as session:
                assert list(await deliveries(session)) == []
        finally:
            await db.dispose()

    run(scenario())


def test_two_dispatchers_deliver_every_due_delivery_exactly_once(
    settings: Settings, clock: FakeClock
):
    items = [
        Outgoing(f"notice:{n}", "push", f"device-{n}", "incident.update", {"text": "x"})
        for n in range(40)
    ]

    async def scenario() -> list[int]:
        dbs = [Database(settings.database_url) for _ in range(3)]
        channel = Recording()
        try:
            async with dbs[0].write() as session:
                ids = await enqueue(session, items=items, now=clock.now)
            workers = [
                Dispatcher(db, {"push": channel}, clock=clock, batch_size=7) for db in dbs[1:]
            ]
            reports = await asyncio.gather(*(w.run_until_idle() for w in workers))
            assert sum(r.delivered for r in reports) == 40
            assert sorted(channel.delivered) == sorted(ids)
            async with dbs[0].read() as session:
                rows = await deliveries(session)
            assert {(r.status, r.attempts) for r in rows} == {("delivered", 1)}
            return channel.delivered
        finally:
            for db in dbs:
                await db.dispose()

    delivered = run(scenario())
    assert len(delivered) == len(set(delivered)) == 40


def test_an_outcome_recorded_after_the_claim_lapsed_and_another_worker_took_over_is_dropped(
    settings: Settings, clock: FakeClock
):
    class Slow:
        """Holds its send until the test has let a second worker deliver the same row."""

        def __init__(self) -> None:
            self.started = asyncio.Event()
            self.release = asyncio.Event()

        async def deliver(self, delivery: Delivery) -> None:
            self.started.set()
            await self.release.wait()
            raise ConnectionError("too late anyway")

    async def scenario() -> None:
        db = Database(settings.database_url)
        try:
            async with db.write() as session:
                await enqueue(
                    session,
                    items=[Outgoing("n", "sms", "+8613800138000", "e", {"text": "x"})],
                    now=clock.now,
                )
            slow = Slow()
            stuck = Dispatcher(db, {"sms": slow}, clock=clock, claim_timeout=timedelta(minutes=2))
            first = asyncio.create_task(stuck.run_once())
            await slow.started.wait()
            clock.advance(minutes=3)  # the claim lapsed: another worker takes the row
            second = await Dispatcher(db, {"sms": Recording()}, clock=clock).run_once()
            assert second.delivered == 1
            slow.release.set()
            report = await first
            assert (report.lost, report.retried) == (1, 0)
            async with db.read() as session:
                (row,) = await deliveries(session)
            assert (row.status, row.attempts, row.last_error) == ("delivered", 2, None)
        finally:
            await db.dispose()

    run(scenario())


def test_a_delivery_for_a_channel_that_is_not_configured_ends_dead(
    settings: Settings, clock: FakeClock
):
    async def scenario() -> None:
        db = Database(settings.database_url)
        try:
            async with db.write() as session:
                await enqueue(
                    session,
                    items=[
                        Outgoing("n", "email", "a@example.com", "e", {"subject": "s", "text": "t"})
                    ],
                    now=clock.now,
                )
            dispatcher = Dispatcher(db, {}, clock=clock, policy=RetryPolicy(max_attempts=2))
            assert (await dispatcher.run_once()).retried == 1
            clock.advance(hours=1)
            assert (await dispatcher.run_once()).dead == 1
            async with db.read() as session:
                (row,) = await deliveries(session, status=DeliveryStatus.DEAD)
            assert row.last_error == "no email channel is configured"
        finally:
            await db.dispose()

    run(scenario())


def test_only_a_dead_letter_can_be_retried(settings: Settings, clock: FakeClock):
    async def scenario() -> None:
        db = Database(settings.database_url)
        try:
            async with db.write() as session:
                (delivery_id,) = await enqueue(
                    session, items=[Outgoing("n", "sms", "+861", "e", {"text": "x"})], now=clock.now
                )
            async with db.write() as session:
                with pytest.raises(ConflictError) as raised:
                    await retry_dead_letter(session, delivery_id=delivery_id, now=clock.now)
            assert raised.value.code == "delivery_not_dead"
            async with db.write() as session:
                with pytest.raises(NotFoundError):
                    await retry_dead_letter(session, delivery_id=delivery_id + 1, now=clock.now)
        finally:
            await db.dispose()

    run(scenario())


def test_the_backoff_doubles_up_to_its_cap_and_its_jitter_stays_within_bounds():
    policy = RetryPolicy(max_attempts=10, base_seconds=2, max_seconds=60, jitter=0.25)
    rng = random.Random(7)
    for attempt, nominal in [(1, 2), (2, 4), (3, 8), (4, 16), (5, 32), (6, 60), (9, 60)]:
        waits = [policy.delay(attempt, rng).total_seconds() for _ in range(200)]
        assert all(nominal * 0.75 <= w <= nominal * 1.25 for w in waits)
        assert max(waits) - min(waits) > nominal * 0.25  # jittered, not all the same
    exact = RetryPolicy(base_seconds=3, jitter=0)
    assert [exact.delay(n, rng).total_seconds() for n in (1, 2, 3)] == [3, 6, 12]


@pytest.mark.parametrize(
    "fields",
    [{"max_attempts": 0}, {"base_seconds": 0}, {"jitter": 1.0}, {"jitter": -0.1}],
)
def test_a_nonsensical_retry_policy_is_refused(fields: dict[str, float]):
    with pytest.raises(ValueError, match="not a retry policy"):
        RetryPolicy(**fields)  # type: ignore[arg-type]


def test_the_background_loop_delivers_a_notice_as_soon_as_it_is_sent(
    settings: Settings, clock: FakeClock
):
    class Signalling(Recording):
        def __init__(self) -> None:
            super().__init__()
            self.done = asyncio.Event()

        async def deliver(self, delivery: Delivery) -> None:
            await super().deliver(delivery)
            self.done.set()

    # A five-minute poll: only send() waking the loop can deliver within the test.
    config = settings.model_copy(update={"notify_interval_seconds": 300})

    async def scenario() -> None:
        db = Database(config.database_url)
        channel = Signalling()
        notifications = Notifications.from_settings(
            config, db, clock=clock, channels={"email": channel}
        )
        try:
            await notifications.start()
            (delivery_id,) = await notifications.send(_notice("a@example.com"))
            await asyncio.wait_for(channel.done.wait(), timeout=30)
            assert channel.delivered == [delivery_id]
        finally:
            await notifications.stop()
            await db.dispose()

    run(scenario())
