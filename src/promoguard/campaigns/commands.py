"""Command-line safe change: ``lint``, ``simulate``, ``catalogue load`` and ``campaigns``
(activate, rollout, rollback, pause, end) for operators at a terminal.

Commands that change a campaign write to the database named by ``PROMOGUARD_DATABASE_URL``
(the same rows the API writes, with the same audit entries, the actor being ``cli:<user>``) and
bump the live-rules stamp, so every ``serve`` worker picks the change up within
``PROMOGUARD_RULES_REFRESH_SECONDS``; with Redis configured they are also told at once.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from promoguard.errors import PromoguardError
from promoguard.promotions.catalogue import Catalogue
from promoguard.settings import Settings

__all__ = ["campaigns_app", "catalogue_app", "lint_command", "simulate_command"]

EXIT_INVALID = 1
EXIT_UNREADABLE = 3
T = TypeVar("T")

campaigns_app = typer.Typer(
    help="Campaign moves: activate, rollout, rollback, pause, end.", no_args_is_help=True
)
catalogue_app = typer.Typer(help="The catalogue lint and simulation use.", no_args_is_help=True)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in a bare container
        return "cli"


def _json_file(path: Path, err: Console) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        err.print(f"[red]error:[/] cannot read {path}: {exc.strerror}")
        raise typer.Exit(EXIT_UNREADABLE) from None
    except json.JSONDecodeError as exc:
        err.print(f"[red]error:[/] {path} is not JSON: {exc}")
        raise typer.Exit(EXIT_INVALID) from None


def _catalogue_file(path: Path | None, err: Console) -> Catalogue | None:
    from promoguard.campaigns.catalogue import parse_catalogue  # noqa: PLC0415

    if path is None:
        return None
    try:
        return parse_catalogue(_json_file(path, err))
    except PromoguardError as exc:
        _problem(err, exc)
        raise typer.Exit(EXIT_INVALID) from None


def _problem(err: Console, exc: PromoguardError) -> None:
    err.print(f"[red]error ({exc.code}):[/] {exc.detail}")
    for path, reason in exc.errors:
        err.print(f"  [bold]{path}[/]: {reason}")


def _percent(text: str | None) -> int | None:
    """A rollout percentage (``"1"``, ``"12.5"``) in basis points."""
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise typer.BadParameter(f"{text!r} is not a number") from None
    if not Decimal(0) <= value <= 100 or value != value.quantize(Decimal("0.01")):
        raise typer.BadParameter("a percentage from 0 to 100 with at most two decimals")
    return int(value * 100)


def _settings() -> Settings:
    from promoguard.cli import _settings as load  # noqa: PLC0415 (one place reads the config)

    return load(Console(stderr=True, soft_wrap=True))


def _on_database(settings: Settings, work: Callable[[Any], Awaitable[T]], *, write: bool) -> T:
    """Run ``work(session)`` in one transaction, then announce a change to every worker."""
    from promoguard.store.db import Database  # noqa: PLC0415

    async def run() -> T:
        db = Database(settings.database_url)
        try:
            async with db.write() if write else db.read() as session:
                result = await work(session)
            if write:
                await _announce(settings)
            return result
        finally:
            await db.dispose()

    try:
        return asyncio.run(run())
    except PromoguardError as exc:
        _problem(Console(stderr=True, soft_wrap=True), exc)
        raise typer.Exit(EXIT_INVALID) from None


async def _announce(settings: Settings) -> None:
    if not settings.redis_url:
        return
    from redis.asyncio import Redis  # noqa: PLC0415

    redis = Redis.from_url(settings.redis_url)
    try:
        await redis.publish(f"{settings.redis_prefix}rules", "changed")
    except Exception:  # the stamp still reaches every worker within the refresh interval
        Console(stderr=True, soft_wrap=True).print(
            "[yellow]warning:[/] could not announce on Redis"
        )
    finally:
        await redis.aclose()


def _show(campaign: Any, what: str) -> None:
    Console().print(
        f"{what}: campaign [bold]{campaign.id}[/] is {campaign.status}, live version "
        f"{campaign.live_version}, rollout {Decimal(campaign.rollout_bps) / 100}%"
    )


# -- lint -------------------------------------------------------------------------------------


def _findings_table(findings: list[Any]) -> Table:
    table = Table("rule", "code", "severity", "where", "what", "fix", title="lint findings")
    for f in findings:
        colour = "red" if f.severity == "error" else "yellow"
        table.add_row(
            f.rule_id, f.code, f"[{colour}]{f.severity}[/]", f.path or "-", f.message, f.hint
        )
    return table


def lint_command(
    path: Annotated[Path, typer.Argument(help="a rule spec or a JSON array of rule specs")],
    catalogue: Annotated[
        Path | None, typer.Option(help="catalogue JSON: enables the checks on real SKUs")
    ] = None,
    live: Annotated[
        Path | None, typer.Option(help="JSON array of the live rule specs to stack with")
    ] = None,
    at: Annotated[
        datetime | None, typer.Option(help="lint as of this time (ISO 8601 with offset)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the findings as JSON")] = False,
) -> None:
    """Question every rule in FILE before it goes live: exit 1 when lint finds an error."""
    from promoguard.promotions.lint import LintConfig, has_errors, lint_rules  # noqa: PLC0415
    from promoguard.promotions.rules import RuleSpecError, load_rules  # noqa: PLC0415

    console, err = Console(), Console(stderr=True, soft_wrap=True)
    if at is not None and at.tzinfo is None:
        raise typer.BadParameter("--at needs a UTC offset, e.g. 2026-11-11T00:30:00+08:00")
    data = _json_file(path, err)
    specs = data if isinstance(data, list) else [data]
    live_rules = []
    if live is not None:
        try:
            live_rules = load_rules(json.dumps(_json_file(live, err)))
        except RuleSpecError as exc:
            err.print(f"[red]error:[/] the --live file {live} has invalid rules:")
            for where, reason in exc.errors:
                err.print(f"  [bold]{where or '<root>'}[/]: {reason}")
            raise typer.Exit(EXIT_INVALID) from None
    shop = _catalogue_file(catalogue, err)
    settings = Settings()
    findings = lint_rules(
        specs,
        live=live_rules,
        catalogue=shop,
        now=at or datetime.now(UTC),
        config=LintConfig(
            max_share_of_threshold=Decimal(settings.lint_max_share_of_threshold),
            max_percent=Decimal(settings.lint_max_percent),
            max_discount_ratio=Decimal(settings.lint_max_discount_ratio),
            widen_factor=Decimal(settings.lint_widen_factor),
        ),
    )
    if as_json:
        console.print_json(json.dumps([f.as_dict() for f in findings]))
    elif findings:
        console.print(_findings_table(findings))
    errors = sum(f.severity == "error" for f in findings)
    summary = f"{len(specs)} rule(s): {errors} error(s), {len(findings) - errors} warning(s)"
    if shop is None:
        summary += " (no --catalogue: the checks on real SKUs were skipped)"
    err.print(summary)
    if has_errors(findings):
        raise typer.Exit(EXIT_INVALID)


# -- simulate ---------------------------------------------------------------------------------


def simulate_command(
    campaign_id: Annotated[str, typer.Argument(help="the campaign")],
    version: Annotated[int | None, typer.Option(help="the version; default the latest")] = None,
    expected_orders: Annotated[
        int | None, typer.Option(min=0, help="orders in the window; default from history")
    ] = None,
    rollout_percent: Annotated[
        str | None, typer.Option(help="simulate at this rollout percentage")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the whole report as JSON")] = False,
) -> None:
    """Re-price recorded carts with and without a version; forecast its budget burn."""
    from promoguard.campaigns import flows, service  # noqa: PLC0415

    settings = _settings()
    share = _percent(rollout_percent)

    async def work(session: Any) -> Any:
        number = (
            version or (await service.get_campaign(session, campaign_id=campaign_id)).latest_version
        )
        return await flows.simulate_version(
            session,
            settings=settings,
            campaign_id=campaign_id,
            version=number,
            now=datetime.now(UTC),
            rollout_bps=share,
            expected_orders=expected_orders,
        )

    report = _on_database(settings, work, write=True)
    console = Console()
    if report is None:
        Console(stderr=True, soft_wrap=True).print(
            "[red]error:[/] no recorded orders and no catalogue: run "
            "`promoguard catalogue load FILE` first"
        )
        raise typer.Exit(EXIT_INVALID)
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
    else:
        _print_report(console, report)
    if report.blocked:
        raise typer.Exit(EXIT_INVALID)


def _print_report(console: Console, report: Any) -> None:
    table = Table("", "live set", "live + candidate", title=f"simulation of {report.candidate_id}")
    for label, name in [
        ("carts", "carts"),
        ("discount (minor units)", "discount"),
        ("discount rate p50 (bp)", "rate_p50_bps"),
        ("discount rate p95 (bp)", "rate_p95_bps"),
        ("discount rate max (bp)", "rate_max_bps"),
        ("carts at a floor", "floor_hits"),
    ]:
        table.add_row(
            label, str(getattr(report.baseline, name)), str(getattr(report.with_candidate, name))
        )
    console.print(table)
    f = report.forecast
    verdict = "[red]exceeds the budget: going live is blocked[/]" if f.exceeds_budget else "fits"
    console.print(
        f"sample: {report.source}; forecast: {f.forecast_spend} minor units over "
        f"{f.expected_orders} orders (budget {f.budget}) — {verdict}"
    )


# -- catalogue --------------------------------------------------------------------------------


@catalogue_app.command("load")
def catalogue_load(
    path: Annotated[Path, typer.Argument(help="catalogue JSON (see docs)")],
) -> None:
    """Replace the stored catalogue with FILE."""
    from promoguard.campaigns.catalogue import put_catalogue  # noqa: PLC0415

    err = Console(stderr=True, soft_wrap=True)
    shop = _catalogue_file(path, err)
    assert shop is not None
    settings = _settings()

    async def work(session: Any) -> int:
        return await put_catalogue(session, catalogue=shop, actor=_actor())

    count = _on_database(settings, work, write=True)
    Console().print(f"catalogue loaded: {count} items, tiers {sorted(shop.member_tiers)}")


# -- campaigns --------------------------------------------------------------------------------


@campaigns_app.command("activate")
def activate(
    campaign_id: Annotated[str, typer.Argument(help="the campaign")],
    version: Annotated[int | None, typer.Option(help="default: the latest")] = None,
    rollout_percent: Annotated[str | None, typer.Option(help="share of customers")] = None,
    start_at: Annotated[
        datetime | None, typer.Option(help="go live at this time (ISO 8601 with offset)")
    ] = None,
) -> None:
    """Take an approved version live (or schedule it); resume a paused one."""
    from promoguard.campaigns import flows  # noqa: PLC0415

    settings = _settings()
    share = _percent(rollout_percent)
    if start_at is not None and start_at.tzinfo is None:
        raise typer.BadParameter("--start-at needs a UTC offset")

    async def work(session: Any) -> Any:
        return await flows.go_live(
            session,
            settings=settings,
            campaign_id=campaign_id,
            version=version,
            actor=_actor(),
            now=datetime.now(UTC),
            rollout_bps=share,
            start_at=start_at,
        )

    _show(_on_database(settings, work, write=True), "activated")


@campaigns_app.command("rollout")
def rollout(
    campaign_id: Annotated[str, typer.Argument(help="the campaign")],
    percent: Annotated[str, typer.Argument(help="share of customers, e.g. 1, 10, 100")],
    reason: Annotated[str, typer.Option(help="why, for the timeline")] = "",
) -> None:
    """Change the share of customers the live version prices for."""
    from promoguard.campaigns import service  # noqa: PLC0415

    settings = _settings()
    share = _percent(percent)
    assert share is not None

    async def work(session: Any) -> Any:
        return await service.set_rollout(
            session, campaign_id=campaign_id, rollout_bps=share, actor=_actor(), reason=reason
        )

    _show(_on_database(settings, work, write=True), "rollout changed")


def _move(name: str, campaign_id: str, reason: str) -> None:
    from promoguard.campaigns import service  # noqa: PLC0415

    settings = _settings()
    move = getattr(service, name)

    async def work(session: Any) -> Any:
        return await move(session, campaign_id=campaign_id, actor=_actor(), reason=reason)

    _show(_on_database(settings, work, write=True), name.replace("_", " "))


Reason = Annotated[str, typer.Option(help="why, for the timeline and the audit log")]


@campaigns_app.command("rollback")
def rollback(campaign_id: Annotated[str, typer.Argument()], reason: Reason) -> None:
    """Make the version live before the current one live again."""
    _move("rollback", campaign_id, reason)


@campaigns_app.command("pause")
def pause(campaign_id: Annotated[str, typer.Argument()], reason: Reason) -> None:
    """Stop pricing with a campaign now (the kill switch)."""
    _move("pause", campaign_id, reason)


@campaigns_app.command("end")
def end(campaign_id: Annotated[str, typer.Argument()], reason: Reason) -> None:
    """End a campaign for good."""
    _move("end", campaign_id, reason)
