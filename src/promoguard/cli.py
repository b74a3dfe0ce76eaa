"""The ``promoguard`` command line.

Exit codes: 0 success, 1 the input was read but is invalid (a rule, a cart), 2 usage errors
(Typer's), 3 a file could not be read.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from promoguard import __version__, examples
from promoguard.campaigns import commands
from promoguard.docgen import docs_command
from promoguard.incidents.commands import incident_app
from promoguard.money import format_minor
from promoguard.notify.commands import notify_app
from promoguard.payments.commands import payment_provider_command, payments_app
from promoguard.plans.commands import remediation_app, worker_command
from promoguard.promotions.engine import RuleSet
from promoguard.promotions.model import Quote
from promoguard.promotions.rules import Rule, RuleSpecError, load_rules, rule_json_schema
from promoguard.settings import Settings

EXIT_INVALID = 1
EXIT_UNREADABLE = 3

app = typer.Typer(
    name="promoguard",
    help="E-commerce promotions that cannot quietly give the store away.",
    no_args_is_help=True,
    add_completion=False,
)


def _read(path: Path | None, bundled: str, err: Console) -> str:
    if path is None:
        return bundled
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        err.print(f"[red]error:[/] cannot read {path}: {exc.strerror}")
        raise typer.Exit(EXIT_UNREADABLE) from None


def _load_rules(text: str, source: str, err: Console) -> list[Rule]:
    try:
        return load_rules(text)
    except RuleSpecError as exc:
        err.print(f"[red]error:[/] {source} has {len(exc.errors)} invalid field(s):")
        for path, reason in exc.errors:
            err.print(f"  [bold]{path or '<root>'}[/]: {reason}")
        raise typer.Exit(EXIT_INVALID) from None


def _load_scenarios(text: str, source: str, err: Console) -> examples.ScenarioFile:
    try:
        return examples.ScenarioFile.model_validate_json(text)
    except ValidationError as exc:
        err.print(f"[red]error:[/] {source} is not a valid carts file:")
        for path, reason in RuleSpecError.from_validation(exc).errors:
            err.print(f"  [bold]{path or '<root>'}[/]: {reason}")
        raise typer.Exit(EXIT_INVALID) from None


def _quote_table(title: str, result: Quote) -> Table:
    fmt = result.fmt
    table = Table(title=title, title_justify="left", expand=False, show_footer=True)
    table.add_column("SKU", footer="total")
    table.add_column("qty", justify="right")
    table.add_column("list", justify="right", footer=fmt(result.list_total))
    table.add_column("discount", justify="right", footer=fmt(result.discount_total))
    table.add_column("pay", justify="right", footer=Text(fmt(result.total), style="bold"))
    table.add_column("discounts on the line (rule: amount)")
    for line in result.lines:
        shares = "\n".join(f"{d.rule_id}: {fmt(d.amount)}" for d in line.discounts)
        table.add_row(
            line.sku,
            str(line.quantity),
            fmt(line.list_amount),
            fmt(line.discount),
            fmt(line.final_amount),
            shares or "-",
        )
    return table


def _explain(console: Console, result: Quote) -> None:
    for note in result.explanation:
        mark = "[green]✓[/]" if note.applied else "[dim]✗[/]"
        console.print(f"  {mark} [bold]{note.rule_id}[/] v{note.rule_version}: {note.message}")
    for trip in result.trips:
        console.print(
            f"  [red]guard[/] {trip.limit} on {trip.rule_id}: asked {result.fmt(trip.requested)}, "
            f"gave {result.fmt(trip.granted)} ({trip.detail})"
        )


@app.command()
def price(
    rules: Annotated[
        Path | None, typer.Option(help="JSON array of rule specs [default: bundled 双11 set]")
    ] = None,
    carts: Annotated[
        Path | None, typer.Option(help="JSON carts file [default: bundled example carts]")
    ] = None,
    at: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z"],
            help="pricing instant with offset, e.g. 2026-11-11T20:05:00+08:00 "
            "[default: the carts file's 'at', else now]",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print quotes as JSON")] = False,
) -> None:
    """Price carts under rules and explain every discount (the bundled example by default)."""
    console, err = Console(), Console(stderr=True)
    rule_list = _load_rules(
        _read(rules, examples.campaigns_json(), err), str(rules or "bundled campaigns"), err
    )
    scenario_file = _load_scenarios(
        _read(carts, examples.scenarios_json(), err), str(carts or "bundled carts"), err
    )
    now = scenario_file.instant(at, datetime.now(UTC))
    ruleset = RuleSet(rule_list)
    results = [(s, ruleset.quote(s.cart, s.customer, now)) for s in scenario_file.scenarios]
    if as_json:
        payload = [{"name": s.name, "quote": q.as_dict()} for s, q in results]
        console.print_json(json.dumps(payload, ensure_ascii=False))
        return
    console.print(
        f"Pricing {len(results)} cart(s) under {len(ruleset)} rule(s) at {now.isoformat()}"
    )
    for scenario, result in results:
        console.print()
        console.print(_quote_table(f"{scenario.name} — customer {scenario.customer.id}", result))
        _explain(console, result)
    summary = Table(title="Summary", title_justify="left")
    for column in ("cart", "list", "discount", "pay", "guard trips"):
        summary.add_column(column, justify="left" if column == "cart" else "right")
    for scenario, result in results:
        summary.add_row(
            scenario.name,
            format_minor(result.list_total, result.currency),
            format_minor(result.discount_total, result.currency),
            format_minor(result.total, result.currency),
            str(len(result.trips)),
        )
    console.print()
    console.print(summary)


@app.command()
def validate(path: Annotated[Path, typer.Argument(help="JSON array of rule specs")]) -> None:
    """Check a rules file; print every invalid field with its path and exit 1 if any."""
    console, err = Console(), Console(stderr=True)
    rule_list = _load_rules(_read(path, "", err), str(path), err)
    console.print(f"[green]ok:[/] {len(rule_list)} rule(s) in {path}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of a rule spec (every kind, every field)."""
    Console().print_json(json.dumps(rule_json_schema(), ensure_ascii=False))


db_app = typer.Typer(help="The database: migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _settings(err: Console) -> Settings:
    try:
        return Settings()
    except SettingsError as exc:  # a variable that is not valid JSON where JSON is expected
        err.print(f"[red]error:[/] the configuration (PROMOGUARD_* variables) is invalid: {exc}")
        raise typer.Exit(EXIT_INVALID) from None
    except ValidationError as exc:
        err.print("[red]error:[/] the configuration (PROMOGUARD_* variables) is invalid:")
        for path, reason in RuleSpecError.from_validation(exc).errors:
            err.print(f"  [bold]{path or '<root>'}[/]: {reason}")
        raise typer.Exit(EXIT_INVALID) from None


def _upgrade(settings: Settings, console: Console, err: Console) -> None:
    from promoguard.store import migrate  # noqa: PLC0415 (Alembic loads only when needed)

    try:
        migrate.upgrade(settings.database_url)
    except Exception as exc:  # the database is unreachable or refuses: say so plainly
        err.print(f"[red]error:[/] cannot migrate {_redacted(settings.database_url)}: {exc}")
        raise typer.Exit(EXIT_UNREADABLE) from None
    console.print(
        f"database {_redacted(settings.database_url)} is at migration "
        f"{migrate.current_revision(settings.database_url)}"
    )


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    return make_url(url).render_as_string(hide_password=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration to PROMOGUARD_DATABASE_URL (default: ./promoguard.db)."""
    console, err = Console(), Console(stderr=True)
    _upgrade(_settings(err), console, err)


@db_app.command("revision")
def db_revision(
    message: Annotated[str, typer.Option("-m", "--message", help="what the migration does")],
) -> None:
    """Write a new migration from the models (for developers; the database must be at head)."""
    from alembic import command  # noqa: PLC0415

    from promoguard.store import migrate  # noqa: PLC0415

    settings = _settings(Console(stderr=True))
    command.revision(migrate.alembic_config(settings.database_url), message, autogenerate=True)


keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _run_keys(settings: Settings, work: Any) -> Any:
    import asyncio  # noqa: PLC0415

    from promoguard.store.db import Database  # noqa: PLC0415

    async def run() -> Any:
        db = Database(settings.database_url)
        try:
            async with db.write() as session:
                return await work(session)
        finally:
            await db.dispose()

    return asyncio.run(run())


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="storefront, operator, approver, auditor or admin")],
    department: Annotated[
        str | None, typer.Option(help="approvers only: marketing, engineering or product")
    ] = None,
    label: Annotated[str, typer.Option(help="what the key is for")] = "",
    owner: Annotated[
        str, typer.Option(help="the person holding it: nobody approves a version they wrote")
    ] = "",
    allow_ip: Annotated[
        list[str] | None, typer.Option(help="CIDR the key may call from (repeat); default any")
    ] = None,
) -> None:
    """Create an API key and print its secret: it is shown this once and never stored."""
    from promoguard.errors import PromoguardError  # noqa: PLC0415
    from promoguard.security.keys import Role, create_key  # noqa: PLC0415

    console, err = Console(), Console(stderr=True)
    settings = _settings(err)
    if role not in {r.value for r in Role}:
        err.print(f"[red]error:[/] --role must be one of {', '.join(r.value for r in Role)}")
        raise typer.Exit(EXIT_INVALID)
    _upgrade(settings, Console(quiet=True), err)
    try:
        key, secret = _run_keys(
            settings,
            lambda session: create_key(
                session,
                master=settings.secret_key,
                role=Role(role),
                created_by="cli",
                department=department,
                label=label,
                owner=owner,
                allowed_ips=allow_ip or [],
            ),
        )
    except PromoguardError as exc:
        err.print(f"[red]error:[/] {exc.detail}")
        raise typer.Exit(EXIT_INVALID) from None
    console.print(f"key id:  [bold]{key.id}[/]  role: {key.role}")
    console.print(f"secret:  [bold]{secret}[/]")
    console.print(
        "[yellow]The secret is shown once. Store it now; promoguard keeps only a hash.[/]"
    )


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (never their secrets)."""
    from promoguard.security.keys import list_keys  # noqa: PLC0415

    console, err = Console(), Console(stderr=True)
    settings = _settings(err)
    _upgrade(settings, Console(quiet=True), err)
    table = Table("key id", "role", "department", "label", "allowed IPs", "created", "revoked")
    for key in _run_keys(settings, list_keys):
        table.add_row(
            key.id,
            key.role,
            key.department or "",
            key.label,
            ", ".join(key.allowed_ips) or "any",
            key.created_at.isoformat(timespec="seconds"),
            key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="the key id, pk_...")]) -> None:
    """Revoke a key (workers stop accepting it within 5 seconds)."""
    from promoguard.errors import PromoguardError  # noqa: PLC0415
    from promoguard.security.keys import revoke_key  # noqa: PLC0415

    console, err = Console(), Console(stderr=True)
    settings = _settings(err)
    try:
        _run_keys(settings, lambda session: revoke_key(session, key_id=key_id, actor="cli"))
    except PromoguardError as exc:
        err.print(f"[red]error:[/] {exc.detail}")
        raise typer.Exit(EXIT_INVALID) from None
    console.print(f"revoked {key_id}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="worker processes")] = 1,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate (chain): serve HTTPS", exists=True)
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="PEM private key for --tls-cert", exists=True)
    ] = None,
) -> None:
    """Apply migrations, then serve the HTTP API (docs at /docs).

    Several workers share their metrics through prometheus-client's multiprocess mode: in
    PROMETHEUS_MULTIPROC_DIR (stale files removed at start), else in a temporary directory.
    """
    import uvicorn  # noqa: PLC0415

    from promoguard.metrics import multiprocess_dir  # noqa: PLC0415

    console, err = Console(), Console(stderr=True)
    if (tls_cert is None) != (tls_key is None):
        err.print("[red]error:[/] give both --tls-cert and --tls-key, or neither")
        raise typer.Exit(EXIT_INVALID)
    settings = _settings(err)
    _upgrade(settings, console, err)
    scheme = "https" if tls_cert else "http"
    console.print(f"serving on {scheme}://{host}:{port} (docs at /docs) with {workers} worker(s)")
    # Before uvicorn spawns the workers: they inherit the directory through the environment.
    with multiprocess_dir(workers) as metrics_dir:
        if metrics_dir is not None:
            console.print(f"metrics: multiprocess mode in {metrics_dir}")
        uvicorn.run(
            "promoguard.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            ssl_certfile=tls_cert,
            ssl_keyfile=tls_key,
        )


@app.command()
def sweep(
    at: Annotated[
        datetime | None,
        typer.Option(help="sweep as if it were this time (ISO 8601 with offset); default now"),
    ] = None,
) -> None:
    """Expire unpaid orders past the reservation time and groups past their time limit, and
    delete traffic sums older than PROMOGUARD_TRAFFIC_RETENTION_DAYS, now.

    Every `serve` worker also does this every PROMOGUARD_SWEEP_INTERVAL_SECONDS.
    """
    import asyncio  # noqa: PLC0415
    from datetime import timedelta  # noqa: PLC0415

    from redis.asyncio import Redis  # noqa: PLC0415

    from promoguard.campaigns.live import LiveRules  # noqa: PLC0415
    from promoguard.monitoring.retention import prune_old_traffic  # noqa: PLC0415
    from promoguard.orders.service import Checkout  # noqa: PLC0415
    from promoguard.promotions.engine import PricingPolicy  # noqa: PLC0415
    from promoguard.store.counters import RedisCounters, SqlCounters  # noqa: PLC0415
    from promoguard.store.db import Database  # noqa: PLC0415

    console, err = Console(), Console(stderr=True)
    settings = _settings(err)
    when = at or datetime.now(UTC)
    if when.tzinfo is None:
        err.print("[red]error:[/] --at needs a UTC offset, e.g. 2026-11-11T00:30:00+08:00")
        raise typer.Exit(EXIT_INVALID)

    async def run() -> dict[str, int]:
        db = Database(settings.database_url)
        redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        try:
            checkout = Checkout(
                db,
                LiveRules(db, PricingPolicy(), settings.rules_refresh_seconds),
                secret=settings.secret_key,
                quote_ttl=timedelta(seconds=settings.quote_ttl_seconds),
                counters=(RedisCounters(redis, settings.redis_prefix) if redis else SqlCounters()),
                reservation_ttl=timedelta(seconds=settings.reservation_ttl_seconds),
            )
            report = await checkout.sweep(when)
            return report | await prune_old_traffic(db, when, settings.traffic_retention_days)
        finally:
            if redis is not None:
                await redis.aclose()
            await db.dispose()

    report = asyncio.run(run())
    table = Table("swept", "count", title=f"sweep at {when.isoformat()}")
    for name, count in report.items():
        table.add_row(name.replace("_", " "), str(count))
    console.print(table)


@app.command("member-service")
def member_service(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8091,
    tiers: Annotated[
        Path | None,
        typer.Option(help='JSON {"tiers": {customer: tier}, "stock": {sku: n}}', exists=True),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the fault injection")] = None,
) -> None:
    """Run the reference member-tier and inventory service (for the demo, tests and trials).

    Point PROMOGUARD_MEMBER_TIERS_URL and PROMOGUARD_INVENTORY_URL at it. PUT /v1/faults
    injects delays, errors or an outage.
    """
    from promoguard.members.reference import run_reference  # noqa: PLC0415

    Console().print(f"reference member-tier and inventory service on http://{host}:{port}")
    run_reference(host, port, tiers, seed=seed)


app.command("lint")(commands.lint_command)
app.command("simulate")(commands.simulate_command)
app.add_typer(commands.campaigns_app, name="campaigns")
app.add_typer(commands.catalogue_app, name="catalogue")
app.add_typer(notify_app, name="notify")
app.add_typer(incident_app, name="incident")
app.add_typer(remediation_app, name="remediation")
app.command("worker")(worker_command)
app.command("payment-provider")(payment_provider_command)
app.add_typer(payments_app, name="payments")
app.command("docs")(docs_command)


def _version(value: bool) -> None:
    if value:
        Console().print(f"promoguard {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="show the version")
    ] = False,
) -> None:
    """E-commerce promotions that cannot quietly give the store away."""


def main() -> Any:
    """Console-script entry point."""
    return app()


@app.command("demo")
def demo_command(
    seed: Annotated[int, typer.Option(help="the same seed, the same sale")] = 11,
    fast: Annotated[bool, typer.Option(help="a smaller sale: about a minute")] = False,
    port: Annotated[int, typer.Option(help="the service's port")] = 8000,
    workdir: Annotated[
        Path, typer.Option(help="where the databases, logs, keys and post-mortem go")
    ] = Path("promoguard-demo"),
    exit_after: Annotated[
        bool, typer.Option("--exit", help="stop the service at the end instead of waiting")
    ] = False,
) -> None:
    """A Singles' Day that goes wrong and is put right, end to end, on this machine."""
    from promoguard.demo import Demo, run_demo  # noqa: PLC0415

    demo = Demo(seed=seed, fast=fast, port=port, workdir=workdir)
    result = run_demo(demo, stay=not exit_after)
    typer.echo(json.dumps(result.as_dict(), ensure_ascii=False))
