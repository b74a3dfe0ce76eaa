"""Command line for the notification outbox: ``notify dead-letters`` and ``notify retry ID``.

Both work on the database named by ``PROMOGUARD_DATABASE_URL``. A retried delivery is back to
pending and due at once; the ``serve`` workers' dispatchers send it within
``PROMOGUARD_NOTIFY_INTERVAL_SECONDS``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from promoguard.errors import PromoguardError
from promoguard.settings import Settings

__all__ = ["notify_app"]

EXIT_INVALID = 1
T = TypeVar("T")

notify_app = typer.Typer(
    help="Notifications: the dead letters, and retrying one.", no_args_is_help=True
)


def _settings() -> Settings:
    from promoguard.cli import _settings as load  # noqa: PLC0415 (one place reads the config)

    return load(Console(stderr=True, soft_wrap=True))


def _on_database(settings: Settings, work: Callable[[Any], Awaitable[T]], *, write: bool) -> T:
    from promoguard.store.db import Database  # noqa: PLC0415

    async def run() -> T:
        db = Database(settings.database_url)
        try:
            async with db.write() if write else db.read() as session:
                return await work(session)
        finally:
            await db.dispose()

    try:
        return asyncio.run(run())
    except PromoguardError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[red]error ({exc.code}):[/] {exc.detail}")
        raise typer.Exit(EXIT_INVALID) from None


@notify_app.command("dead-letters")
def dead_letters_command(
    limit: Annotated[int, typer.Option(min=1, help="show at most this many")] = 100,
) -> None:
    """List the deliveries that failed every attempt (oldest first)."""
    from promoguard.notify.outbox import dead_letters  # noqa: PLC0415

    rows = _on_database(
        _settings(), lambda session: dead_letters(session, limit=limit), write=False
    )
    console = Console(soft_wrap=True)
    if not rows:
        console.print("no dead letters")
        return
    table = Table(title=f"{len(rows)} dead letter(s)", title_justify="left")
    for column in ("id", "channel", "target", "event", "attempts", "created", "last error"):
        table.add_column(column, justify="right" if column in {"id", "attempts"} else "left")
    for row in rows:
        table.add_row(
            str(row.id),
            row.channel,
            row.target,
            row.event,
            str(row.attempts),
            row.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            row.last_error or "",
        )
    console.print(table)


@notify_app.command("retry")
def retry_command(
    delivery_id: Annotated[int, typer.Argument(metavar="ID", help="the dead letter's id")],
) -> None:
    """Put a dead letter back to pending, due now, with a fresh set of attempts."""
    from promoguard.notify.outbox import retry_dead_letter  # noqa: PLC0415
    from promoguard.store.db import utcnow  # noqa: PLC0415

    row = _on_database(
        _settings(),
        lambda session: retry_dead_letter(session, delivery_id=delivery_id, now=utcnow()),
        write=True,
    )
    Console(soft_wrap=True).print(
        f"delivery {row.id} ({row.channel} to {row.target}) is pending again"
    )
