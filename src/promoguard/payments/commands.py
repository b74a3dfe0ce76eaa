"""Command line for payments: ``payments pay``, ``payments reconcile`` and the simulated
provider (``payment-provider``).

``pay`` and ``reconcile`` work on the database named by ``PROMOGUARD_DATABASE_URL`` and the
provider at ``PROMOGUARD_PAYMENT_PROVIDER_URL``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from promoguard.money import format_minor
from promoguard.settings import Settings

__all__ = ["payment_provider_command", "payments_app"]

EXIT_MISMATCH = 1

payments_app = typer.Typer(
    help="Payouts: pay the open ones, reconcile with the provider.", no_args_is_help=True
)


def _settings() -> Settings:
    from promoguard.cli import _settings as load  # noqa: PLC0415 (one place reads the config)

    settings = load(Console(stderr=True, soft_wrap=True))
    if not settings.payment_provider_url:
        Console(stderr=True).print(
            "[red]error:[/] set PROMOGUARD_PAYMENT_PROVIDER_URL (e.g. a simulator started with "
            "`promoguard payment-provider`)"
        )
        raise typer.Exit(EXIT_MISMATCH)
    return settings


def _totals(totals: dict[str, int]) -> str:
    return ", ".join(format_minor(amount, currency) for currency, amount in sorted(totals.items()))


@payments_app.command("pay")
def pay_command(
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=256, help="provider calls at once [settings]")
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="wait for retries and pending refunds until all are final")
    ] = True,
) -> None:
    """Pay every open payout (planned, or submitted by a worker that stopped) exactly once."""
    from promoguard.payments.client import HttpPaymentProvider  # noqa: PLC0415
    from promoguard.payments.payer import Payer, PayPolicy  # noqa: PLC0415
    from promoguard.store.db import Database  # noqa: PLC0415

    settings = _settings()
    assert settings.payment_provider_url is not None
    console = Console()

    async def run() -> None:
        db = Database(settings.database_url)
        provider = HttpPaymentProvider(
            settings.payment_provider_url or "", timeout=settings.payment_timeout_seconds
        )
        payer = Payer(
            db,
            provider,
            policy=PayPolicy.from_settings(settings),
            concurrency=concurrency or settings.payment_concurrency,
        )
        try:
            with Progress(
                "payouts",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            ) as bar:
                task = bar.add_task("pay", total=None)
                report = await payer.pay_all(
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                    wait=wait,
                )
        finally:
            await provider.aclose()
            await db.dispose()
        table = Table("succeeded", "failed", "pending", "retried", "lost", "paid")
        table.add_row(
            str(report.succeeded),
            str(report.failed),
            str(report.pending),
            str(report.retried),
            str(report.lost),
            _totals(report.paid_amounts) or "-",
        )
        console.print(table)

    asyncio.run(run())


@payments_app.command("reconcile")
def reconcile_command(
    strict: Annotated[
        bool, typer.Option(help="refunds at the provider for keys we do not know are a mismatch")
    ] = False,
) -> None:
    """Compare payouts and ledger with the provider's records; exit 1 on any mismatch."""
    from promoguard.payments.client import HttpPaymentProvider  # noqa: PLC0415
    from promoguard.payments.reconcile import ReconciliationReport, reconcile  # noqa: PLC0415
    from promoguard.store.db import Database  # noqa: PLC0415

    settings = _settings()
    console = Console()

    async def run() -> ReconciliationReport:
        db = Database(settings.database_url)
        provider = HttpPaymentProvider(
            settings.payment_provider_url or "", timeout=settings.payment_timeout_seconds
        )
        try:
            return await reconcile(db, provider, strict=strict)
        finally:
            await provider.aclose()
            await db.dispose()

    report = asyncio.run(run())
    table = Table("check", "value", "ok", title="payout reconciliation", title_justify="left")
    mark = {True: "[green]✓[/]", False: "[red]✗[/]"}
    table.add_row(
        "planned = paid + failed + skipped + in flight",
        f"{report.planned} = {report.paid} + {report.failed} + {report.skipped} + "
        f"{report.in_flight}",
        mark[report.accounted],
    )
    table.add_row(
        "keys paid twice", str(len(report.keys_paid_twice)), mark[not report.keys_paid_twice]
    )
    totals_ok = report.ledger_totals == report.provider_totals
    table.add_row("ledger money out", _totals(report.ledger_totals) or "0", mark[totals_ok])
    table.add_row("provider refunded", _totals(report.provider_totals) or "0", mark[totals_ok])
    table.add_row("in flight at the provider", _totals(report.in_flight_provider_totals) or "0", "")
    table.add_row(
        "payouts that disagree", str(len(report.discrepancies)), mark[not report.discrepancies]
    )
    table.add_row(
        "refunds for keys we do not know",
        str(report.foreign_refunds),
        mark[not (strict and report.foreign_refunds)] if strict else "",
    )
    console.print(table)
    if report.keys_paid_twice or report.discrepancies:
        detail = Table("payout key", "status", "ledger", "provider", "problem")
        for key in report.keys_paid_twice:
            detail.add_row(key, "", "", "", "paid more than once")
        for item in report.discrepancies:
            detail.add_row(
                item.payout_key,
                item.status,
                str(item.ledger_amount),
                str(item.provider_amount),
                item.problem,
            )
        console.print(detail)
    if not report.ok:
        console.print("[red]reconciliation failed[/]")
        raise typer.Exit(EXIT_MISMATCH)
    console.print("[green]reconciled: no difference[/]")


def payment_provider_command(  # noqa: PLR0917 (Typer options)
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8092,
    db: Annotated[Path, typer.Option(help="the provider's own SQLite file (its records)")] = Path(
        "payment-provider.db"
    ),
    seed: Annotated[int | None, typer.Option(help="seed of the fault injection")] = None,
    latency_ms: Annotated[int, typer.Option(min=0, help="wait before every answer")] = 0,
    failure_rate: Annotated[
        float, typer.Option(min=0, max=1, help="share of requests answered 500")
    ] = 0.0,
    timeout_rate: Annotated[
        float,
        typer.Option(min=0, max=1, help="share of refunds held for --hang-ms, then applied"),
    ] = 0.0,
    hang_ms: Annotated[int, typer.Option(min=0, help="how long a timeout holds")] = 3000,
    pending_rate: Annotated[
        float, typer.Option(min=0, max=1, help="share of refunds created pending")
    ] = 0.0,
    confirm_after_ms: Annotated[
        int, typer.Option(min=0, help="a pending refund succeeds this long after creation")
    ] = 1000,
    callback_url: Annotated[
        str | None, typer.Option(help="where confirmations of pending refunds are POSTed")
    ] = None,
) -> None:
    """Run the simulated payment provider (Stripe-like refunds; PUT /v1/faults at run time).

    Point PROMOGUARD_PAYMENT_PROVIDER_URL at it.
    """
    from promoguard.payments.simulator import run_simulator  # noqa: PLC0415

    Console().print(f"simulated payment provider on http://{host}:{port}, records in {db}")
    run_simulator(
        host,
        port,
        db,
        seed=seed,
        faults={
            "latency_ms": latency_ms,
            "failure_rate": failure_rate,
            "timeout_rate": timeout_rate,
            "hang_ms": hang_ms,
            "pending_rate": pending_rate,
            "confirm_after_ms": confirm_after_ms,
            "callback_url": callback_url,
        },
    )
