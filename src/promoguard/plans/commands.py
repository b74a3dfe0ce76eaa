"""``promoguard remediation`` (plan, approve, execute, show) and ``promoguard worker``.

``remediation plan INCIDENT`` finds, re-prices and classifies the incident's affected orders with
a progress bar and stores the draft; ``approve PLAN`` decides it (as ``cli:<user>``: the author
may not approve their own plan); ``execute PLAN`` queues it and with ``--wait`` follows it with a
progress bar, or with ``--here`` runs it in this process; ``worker`` processes the queue (and
first re-queues the plans a dead worker left executing).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from promoguard.campaigns.commands import _actor, _on_database, _settings
from promoguard.money import format_minor

__all__ = ["remediation_app", "worker_command"]

remediation_app = typer.Typer(
    help="Remediation plans: draft, approve, execute, show.", no_args_is_help=True
)


def _bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )


def _show(plan: Any, progress: dict[str, Any]) -> None:
    console = Console()
    console.print(
        f"plan {plan.id} for incident {plan.incident_id}: [bold]{plan.status}[/] "
        f"({plan.items_total} items, {format_minor(plan.refund_total)} to refund)"
    )
    table = Table("action", "items", "refund", "coupons")
    for action, total in plan.summary.get("by_action", {}).items():
        if total["count"]:
            table.add_row(
                action,
                str(total["count"]),
                format_minor(total["refund"]),
                format_minor(total["coupons"]),
            )
    console.print(table)
    items = progress["items"]
    console.print(
        f"items: {items['done']} done, {items['failed']} failed, {items['skipped']} skipped, "
        f"{items['planned']} planned; paid {format_minor(progress['paid'])}"
    )


@remediation_app.command("plan")
def plan_command(incident_id: Annotated[int, typer.Argument()]) -> None:
    """Draft the remediation plan of an incident (find, re-price, classify)."""
    from promoguard.incidents import service as incidents  # noqa: PLC0415
    from promoguard.plans import service  # noqa: PLC0415
    from promoguard.remediation.policy import RemediationPolicy  # noqa: PLC0415

    settings = _settings()
    policy = RemediationPolicy.model_validate(settings.remediation_policy)

    async def work(session: Any) -> tuple[Any, dict[str, Any]]:
        incident = await incidents.get(session, incident_id)
        with _bar() as bar:
            task = bar.add_task("re-pricing affected orders", total=None)

            def step(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            draft = await service.draft_plan(
                session,
                incident,
                policy,
                max_discount_ratio=settings.max_discount_ratio,
                progress=step,
            )
        plan = await service.save_draft(session, draft, actor=_actor(), now=datetime.now(UTC))
        return plan, await service.progress(session, plan)

    plan, progress = _on_database(settings, work, write=True)
    _show(plan, progress)


@remediation_app.command("approve")
def approve_command(
    plan_id: Annotated[int, typer.Argument()],
    reject: Annotated[bool, typer.Option("--reject", help="reject instead")] = False,
    reason: Annotated[str, typer.Option(help="why, for the incident's timeline")] = "",
) -> None:
    """Approve (or --reject) a draft plan."""
    from promoguard.plans import service  # noqa: PLC0415

    async def work(session: Any) -> str:
        plan = await service.get_plan(session, plan_id, lock=True)
        await service.decide(
            session,
            plan,
            approve=not reject,
            actor=_actor(),
            owner=None,
            reason=reason,
            now=datetime.now(UTC),
        )
        return str(plan.status)

    Console().print(f"plan {plan_id} {_on_database(_settings(), work, write=True)}")


@remediation_app.command("show")
def show_command(plan_id: Annotated[int, typer.Argument()]) -> None:
    """A plan's totals and progress."""
    from promoguard.plans import service  # noqa: PLC0415

    async def work(session: Any) -> tuple[Any, dict[str, Any]]:
        plan = await service.get_plan(session, plan_id)
        return plan, await service.progress(session, plan)

    _show(*_on_database(_settings(), work, write=False))


@remediation_app.command("execute")
def execute_command(
    plan_id: Annotated[int, typer.Argument()],
    wait: Annotated[bool, typer.Option(help="follow the queued job with a progress bar")] = False,
    here: Annotated[
        bool, typer.Option(help="run it in this process instead of queueing it")
    ] = False,
) -> None:
    """Execute an approved plan: queued for `promoguard worker`, or --here."""
    from promoguard.plans import service  # noqa: PLC0415
    from promoguard.plans.jobs import PlanQueue, run_plan  # noqa: PLC0415

    settings = _settings()
    if here:
        with _bar() as bar:
            task = bar.add_task("paying", total=None)

            def step(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            asyncio.run(run_plan(settings, plan_id, progress=step))
    else:
        PlanQueue(settings).enqueue(plan_id)
        Console(stderr=True).print(f"plan {plan_id} queued for `promoguard worker`")

    async def look(session: Any) -> tuple[Any, dict[str, Any]]:
        plan = await service.get_plan(session, plan_id)
        return plan, await service.progress(session, plan)

    if wait and not here:
        with _bar() as bar:
            task = bar.add_task("items", total=None)
            while True:
                plan, progress = _on_database(settings, look, write=False)
                finished = progress["total"] - progress["items"]["planned"]
                bar.update(task, completed=finished, total=progress["total"])
                if plan.status in ("done", "rejected"):
                    break
                time.sleep(0.5)
    _show(*_on_database(settings, look, write=False))


def worker_command(
    workers: Annotated[int, typer.Option(min=1, max=64, help="worker threads")] = 2,
) -> None:
    """Process the job queue (remediation plans) until interrupted."""
    from promoguard.plans.jobs import PlanQueue  # noqa: PLC0415

    queue = PlanQueue(_settings())
    resumed = queue.resume()
    if resumed:
        Console(stderr=True).print(f"resuming plans left executing: {resumed}")
    queue.run_consumer(workers)
