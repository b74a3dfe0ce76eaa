"""``promoguard incident``: list, open, acknowledge and report incidents from a terminal.

The commands work on the database named by ``PROMOGUARD_DATABASE_URL`` (the rows the API
writes, with the same timeline and audit entries; the actor is ``cli:<user>``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from promoguard.campaigns.commands import _actor, _on_database, _settings
from promoguard.incidents.models import Severity

__all__ = ["incident_app"]

incident_app = typer.Typer(
    help="Incidents: list, open, acknowledge, post-mortem report.", no_args_is_help=True
)


def _policy() -> Any:
    from promoguard.incidents.grading import IncidentPolicy  # noqa: PLC0415

    return IncidentPolicy.model_validate(_settings().incident_policy)


@incident_app.command("list")
def list_command(
    status: Annotated[str | None, typer.Option(help="only this state")] = None,
) -> None:
    """The newest incidents with their severity, state and next deadline."""
    from sqlalchemy import select  # noqa: PLC0415

    from promoguard.incidents.models import Incident  # noqa: PLC0415

    async def work(session: Any) -> list[Any]:
        query = select(Incident).order_by(Incident.id.desc()).limit(50)
        if status:
            query = query.where(Incident.status == status)
        return list((await session.scalars(query)).all())

    table = Table("id", "severity", "status", "title", "ack by", "respond by", "level")
    for i in _on_database(_settings(), work, write=False):
        table.add_row(
            str(i.id),
            i.severity,
            i.status,
            i.title,
            i.ack_due_at.isoformat(timespec="minutes"),
            i.respond_due_at.isoformat(timespec="minutes"),
            str(i.escalation_level + 1),
        )
    Console().print(table)


@incident_app.command("open")
def open_command(
    title: Annotated[str, typer.Argument(help="what is wrong, in a line")],
    severity: Annotated[Severity, typer.Option(help="at least this bad")] = Severity.P3,
    version: Annotated[
        list[str] | None, typer.Option(help="campaign:version involved (repeatable)")
    ] = None,
) -> None:
    """Open an incident by hand."""
    from promoguard.incidents import service  # noqa: PLC0415

    versions: list[tuple[str, int]] = []
    for ref in version or []:
        campaign, _, number = ref.rpartition(":")
        if not campaign or not number.isdigit():
            Console(stderr=True).print(f"[red]error:[/] {ref!r} is not campaign:version")
            raise typer.Exit(1)
        versions.append((campaign, int(number)))
    policy = _policy()

    async def work(session: Any) -> tuple[int, str]:
        incident = await service.open_incident(
            session,
            title=title,
            actor=_actor(),
            now=datetime.now(UTC),
            policy=policy,
            versions=versions,
            floor=severity,
        )
        return incident.id, incident.severity

    opened, graded = _on_database(_settings(), work, write=True)
    Console().print(f"opened incident {opened} ({graded})")


@incident_app.command("ack")
def ack_command(
    incident_id: Annotated[int, typer.Argument()],
    message: Annotated[str, typer.Option(help="for the timeline")] = "",
) -> None:
    """Acknowledge an incident (stops its acknowledge clock)."""
    from promoguard.incidents import service  # noqa: PLC0415

    async def work(session: Any) -> None:
        found = await service.get(session, incident_id, lock=True)
        await service.acknowledge(
            session, found, actor=_actor(), now=datetime.now(UTC), message=message
        )

    _on_database(_settings(), work, write=True)
    Console().print(f"incident {incident_id} acknowledged")


@incident_app.command("report")
def report_command(
    incident_id: Annotated[int, typer.Argument()],
    format: Annotated[str, typer.Option("--format", help="markdown or html")] = "markdown",
    out: Annotated[Path | None, typer.Option(help="write here instead of printing")] = None,
) -> None:
    """The post-mortem: summary, timeline, impact in numbers, root cause, action items, and
    which lint check or alert rule would have caught it earlier."""
    from promoguard.incidents import report, service  # noqa: PLC0415

    if format not in report.FORMATS:
        Console(stderr=True).print(f"[red]error:[/] --format is one of {', '.join(report.FORMATS)}")
        raise typer.Exit(1)

    async def work(session: Any) -> dict[str, Any]:
        return await report.gather(session, await service.get(session, incident_id))

    text = report.render(_on_database(_settings(), work, write=False), format)  # type: ignore[arg-type]
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        Console(stderr=True).print(f"wrote {out}")
