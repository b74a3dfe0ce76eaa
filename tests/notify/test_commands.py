"""``promoguard notify dead-letters`` and ``promoguard notify retry ID``."""

from __future__ import annotations

from typer.testing import CliRunner

from promoguard.cli import EXIT_INVALID, app
from promoguard.notify import DeliveryStatus, Dispatcher, RetryPolicy
from promoguard.notify.outbox import Outgoing, deliveries, enqueue
from promoguard.settings import Settings
from promoguard.store.db import Database

from .helpers import FakeClock, run

runner = CliRunner()


def _dead_letter(settings: Settings, clock: FakeClock) -> tuple[int, int]:
    """One dead SMS (no SMS channel, one attempt allowed) and one pending push; their ids."""

    async def scenario() -> tuple[int, int]:
        db = Database(settings.database_url)
        try:
            async with db.write() as session:
                (dead,) = await enqueue(
                    session,
                    items=[
                        Outgoing(
                            "incident:1:opened",
                            "sms",
                            "+8613800138000",
                            "incident.opened",
                            {"text": "x"},
                        )
                    ],
                    now=clock.now,
                )
            await Dispatcher(db, {}, clock=clock, policy=RetryPolicy(max_attempts=1)).run_once()
            async with db.write() as session:
                (pending,) = await enqueue(
                    session,
                    items=[
                        Outgoing(
                            "incident:1:opened",
                            "push",
                            "device-1",
                            "incident.opened",
                            {"text": "x"},
                        )
                    ],
                    now=clock.now,
                )
            return dead, pending
        finally:
            await db.dispose()

    return run(scenario())


def _env(settings: Settings) -> dict[str, str]:
    return {
        "PROMOGUARD_DATABASE_URL": settings.database_url,
        "PROMOGUARD_ENVIRONMENT": "test",
        "COLUMNS": "240",  # one table row per line
    }


def test_dead_letters_lists_the_failed_deliveries_with_their_last_error(
    settings: Settings, clock: FakeClock
):
    assert (
        "no dead letters"
        in runner.invoke(app, ["notify", "dead-letters"], env=_env(settings)).output
    )
    dead, _ = _dead_letter(settings, clock)
    result = runner.invoke(app, ["notify", "dead-letters"], env=_env(settings))
    assert result.exit_code == 0, result.output
    assert "1 dead letter(s)" in result.output
    (line,) = [row for row in result.output.splitlines() if "+8613800138000" in row]
    assert str(dead) in line.split()
    assert "sms" in line
    assert "incident.opened" in line
    assert "no sms channel is configured" in line
    assert "device-1" not in result.output


def test_retry_puts_a_dead_letter_back_to_pending_and_refuses_anything_else(
    settings: Settings, clock: FakeClock
):
    dead, pending = _dead_letter(settings, clock)
    result = runner.invoke(app, ["notify", "retry", str(dead)], env=_env(settings))
    assert result.exit_code == 0, result.output
    assert f"delivery {dead} (sms to +8613800138000) is pending again" in result.output

    async def status() -> list[tuple[int, str, int]]:
        db = Database(settings.database_url)
        try:
            async with db.read() as session:
                return [(d.id, d.status, d.attempts) for d in await deliveries(session)]
        finally:
            await db.dispose()

    assert run(status()) == [
        (dead, DeliveryStatus.PENDING, 0),
        (pending, DeliveryStatus.PENDING, 0),
    ]

    again = runner.invoke(app, ["notify", "retry", str(pending)], env=_env(settings))
    assert again.exit_code == EXIT_INVALID
    assert "delivery_not_dead" in again.output
    missing = runner.invoke(app, ["notify", "retry", "999999"], env=_env(settings))
    assert missing.exit_code == EXIT_INVALID
    assert "delivery_not_found" in missing.output
