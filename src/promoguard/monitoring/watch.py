"""The watch: each worker's detectors over its own live traffic, and the actions alerts take.

The order path, the claim route and the request middleware append signals to a bounded buffer
(:meth:`Watch.observe`: a ``deque.append``; when the buffer is full the oldest signal is dropped
and counted, so a burst can never slow checkout or grow memory). Every
``PROMOGUARD_MONITOR_INTERVAL_SECONDS`` (0.05 s) a task drains the buffer into the detectors
(:class:`~promoguard.monitoring.detectors.Monitor`) and evaluates the alert rules. Each new alert
is stored (``GET /v1/alerts``) and audited, then its actions run:

* ``pause`` first (every other action costs time the faulty version stays live): see below;
* ``notify``: the :class:`Notifier` (the service log; the incident's notices reach people);
* ``incident``: the :class:`IncidentSink` — the app's
  :class:`~promoguard.incidents.desk.IncidentDesk` opens or joins the incident;
* ``pause``, the kill switch: the campaign is paused if the alert's version is still the live
  one, with the alert as the reason on its timeline, and every worker is told at once (Redis)
  or within ``PROMOGUARD_RULES_REFRESH_SECONDS``.

What the detectors see goes through a :mod:`~promoguard.monitoring.bus`: with Redis configured
every worker's watch sees the whole shop's signals (one Redis stream) and exactly one worker acts
on each alert; without Redis each worker watches the traffic it serves (ratio detectors see a
fair sample of it; count thresholds apply to each worker's share).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sqlalchemy import select

from promoguard import audit
from promoguard.campaigns import service as campaigns
from promoguard.campaigns.live import LiveRules
from promoguard.campaigns.models import Campaign, CampaignStatus, CampaignVersion
from promoguard.loops import FailureLog, Periodic
from promoguard.metrics import ServiceMetrics
from promoguard.monitoring.alert_rules import Action, AlertRule
from promoguard.monitoring.bus import LocalBus, SignalBus
from promoguard.monitoring.detectors import Alert, Monitor
from promoguard.monitoring.models import AlertRecord
from promoguard.monitoring.route_traffic import RouteSums
from promoguard.monitoring.signals import Signal
from promoguard.monitoring.traffic import TrafficSums
from promoguard.store.db import Database

__all__ = ["IncidentSink", "LogNotifier", "Notifier", "RequestedIncidents", "Watch"]

log = logging.getLogger(__name__)


class Notifier(Protocol):
    """Tells people about an alert."""

    async def notify(self, alert: Alert) -> str:
        """Send it; returns what happened, for the alert's record."""


class IncidentSink(Protocol):
    """Opens (or joins) an incident for an alert: the seam the incidents module fills."""

    async def open(self, alert: Alert) -> str:
        """Open it; returns what happened, for the alert's record."""


class LogNotifier:
    """Notifications into the service log (warning level)."""

    async def notify(self, alert: Alert) -> str:
        """Log the alert."""
        log.warning(
            "ALERT %s [%s] %s: %s", alert.rule, alert.severity, alert.subject, alert.message
        )
        return "logged"


class RequestedIncidents:
    """Until incidents exist: remember that one was asked for."""

    def __init__(self) -> None:
        self.requested: list[Alert] = []

    async def open(self, alert: Alert) -> str:
        """Record the request."""
        self.requested.append(alert)
        return "requested"


class Watch:
    """One worker's detectors, their input buffer and the loop that evaluates them."""

    def __init__(
        self,
        db: Database,
        live: LiveRules,
        rules: Sequence[AlertRule],
        *,
        interval: float = 0.05,
        buffer_size: int = 100_000,
        metrics: ServiceMetrics | None = None,
        notifier: Notifier | None = None,
        incidents: IncidentSink | None = None,
        bus: SignalBus | None = None,
        traffic_flush_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._live = live
        self.monitor = Monitor(rules)
        self._cooldowns = {rule.name: float(rule.cooldown_seconds) for rule in rules}
        self.bus: SignalBus = bus or LocalBus()
        self._bus_failures = FailureLog(log, "sharing monitoring signals")
        self.traffic = TrafficSums()
        """This worker's own orders (and guard trips) per campaign version and minute, flushed
        to the store."""
        self.routes = RouteSums()
        """The requests this worker answered per route and minute, flushed with the traffic."""
        self._traffic_every = traffic_flush_seconds
        self._traffic_at = float("-inf")
        self._traffic_failures = FailureLog(log, "flushing campaign traffic")
        self._buffer: deque[Signal] = deque(maxlen=buffer_size)
        self._trips: deque[tuple[float, Sequence[tuple[str, int]]]] = deque(maxlen=buffer_size)
        """Quotes' guard trips waiting to be counted (drained with the signals, so a flush in
        progress never loses one)."""
        self._size = buffer_size
        self.dropped = 0
        """Signals dropped because the buffer was full."""
        self._metrics = metrics
        self.notifier: Notifier = notifier or LogNotifier()
        self.incidents: IncidentSink = incidents or RequestedIncidents()
        self._clock = clock
        self._stamp: int | None = None
        self._loop = Periodic(self.tick, interval, log=log, what="monitoring")
        self.fired: list[Alert] = []
        """Every alert this worker raised (tests read it)."""

    def observe(self, signal: Signal) -> None:
        """Take a signal from a request path: an append, never a wait."""
        if len(self._buffer) == self._size:
            self.dropped += 1
        self._buffer.append(signal)

    async def start(self) -> None:
        """Evaluate every ``interval`` seconds until :meth:`stop`."""
        if not self._loop.running:
            try:
                await self.bus.start()
            except Exception:  # Redis down: the first exchange that reaches it starts the bus
                log.warning("monitoring: cannot start the signal bus", exc_info=True)
            await self._loop.start()

    async def stop(self) -> None:
        """Stop evaluating, and flush the traffic sums one last time."""
        if self._loop.running:
            await self._loop.stop()
            self._count([self._buffer.popleft() for _ in range(len(self._buffer))])
            await self.flush_traffic()

    async def tick(self) -> list[Alert]:
        """Drain the buffer through the bus into the detectors, evaluate, act on the new alerts
        this worker claims; returns every new alert found."""
        await self._refresh_profiles()
        buffer = self._buffer
        batch = [buffer.popleft() for _ in range(len(buffer))]
        self._count(batch)
        try:
            signals = await self.bus.exchange(batch)
        except Exception as exc:  # Redis down: watch this worker's own traffic meanwhile
            self._bus_failures.failed(exc)
            signals = batch
        else:
            self._bus_failures.succeeded()
        observe = self.monitor.observe
        for signal in signals:
            observe(signal)
        alerts = self.monitor.evaluate(self._clock())
        for alert in alerts:
            if await self._mine(alert):
                await self._act(alert)
        if self._clock() - self._traffic_at >= self._traffic_every:
            await self.flush_traffic()
        return alerts

    def _count(self, batch: list[Signal]) -> None:
        """Add this worker's own signals to the per-minute sums the store keeps."""
        self.traffic.add(batch)
        self.routes.add(batch)
        trips = self._trips
        for _ in range(len(trips)):
            self.traffic.tripped(*trips.popleft())

    def tripped(self, at: float, trips: Sequence[tuple[str, int]]) -> None:
        """Take a quote's guard trips (``(campaign_id, version)`` per trip): an append."""
        self._trips.append((at, trips))

    async def flush_traffic(self) -> None:
        """Add this worker's per-minute sums to the store (kept for the next try on failure)."""
        self._traffic_at = self._clock()
        if not len(self.traffic) and not len(self.routes):
            return
        try:
            async with self._db.write() as session:
                await self.traffic.flush(session)
                await self.routes.flush(session)
        except Exception as exc:
            self._traffic_failures.failed(exc)
        else:
            self.traffic.flushed()
            self.routes.flushed()
            self._traffic_failures.succeeded()

    async def _mine(self, alert: Alert) -> bool:
        """Whether this worker acts on the alert (with a shared bus, one worker does)."""
        try:
            return await self.bus.claim(alert, self._cooldowns.get(alert.rule, 0.0))
        except Exception:  # better two workers pausing (it is idempotent) than none
            log.warning("could not claim alert %s on the bus; acting on it", alert.rule)
            return True

    async def _refresh_profiles(self) -> None:
        """Load what monitoring expects of every live version when what is live changes: the
        campaign's expected profile (its first live version's simulation, or the one an
        operator adopted), else the live version's own simulation."""
        snapshot = await self._live.current()
        if snapshot.stamp == self._stamp:
            return
        async with self._db.read() as session:
            rows = await session.execute(
                select(
                    Campaign.id,
                    Campaign.live_version,
                    Campaign.expected_profile,
                    CampaignVersion.simulation,
                )
                .join(CampaignVersion, CampaignVersion.campaign_id == Campaign.id)
                .where(CampaignVersion.version == Campaign.live_version)
            )
            for campaign_id, version, expected, simulation in rows.all():
                own = (simulation or {}).get("profile") or None
                self.monitor.set_profile(campaign_id, version, expected or own)
        self._stamp = snapshot.stamp

    async def _act(self, alert: Alert) -> None:
        self.fired.append(alert)
        if self._metrics is not None:
            self._metrics.alert(alert.rule, alert.severity)
        outcome: dict[str, str] = {}
        # The kill switch first: every action after it costs time the faulty version is live.
        for action in sorted(alert.actions, key=lambda a: a != Action.PAUSE):
            try:
                outcome[action] = await self._do(action, alert)
            except Exception as exc:  # one failing action must not stop the others
                log.exception("alert action %s failed", action)
                outcome[action] = f"failed: {exc.__class__.__name__}"
        async with self._db.write() as session:
            session.add(_record(alert, outcome))
            audit.record(
                session,
                actor="monitor",
                action="alert.fired",
                subject_type="campaign" if alert.campaign_id else "alert",
                subject_id=alert.campaign_id or alert.subject,
                detail={**alert.as_dict(), "outcome": outcome},
            )

    async def _do(self, action: Action, alert: Alert) -> str:
        if action == Action.NOTIFY:
            return await self.notifier.notify(alert)
        if action == Action.INCIDENT:
            return await self.incidents.open(alert)
        return await self._pause(alert)

    async def _pause(self, alert: Alert) -> str:
        """The kill switch, when the alert's version is still the one live."""
        if alert.campaign_id is None:
            return "skipped: the alert names no campaign"
        if alert.version is not None:
            # Stop pricing with it in every worker now; the pause below makes it last.
            await self._live.kill(alert.campaign_id, alert.version)
        async with self._db.write() as session:
            # Locked: another worker's monitor or an operator's rollback may move it right now.
            campaign = await session.get(
                Campaign, alert.campaign_id, with_for_update=True, populate_existing=True
            )
            if campaign is None or campaign.status != CampaignStatus.LIVE:
                return "skipped: not live"
            if alert.version is not None and campaign.live_version != alert.version:
                return f"skipped: version {campaign.live_version} is live now"
            await campaigns.pause(
                session,
                campaign_id=alert.campaign_id,
                actor="monitor",
                reason=f"auto-pause by alert {alert.rule}: {alert.message}"[:500],
            )
        await self._live.announce()
        if self._metrics is not None:
            self._metrics.auto_pause(alert.campaign_id)
        log.warning("auto-paused %s v%s: %s", alert.campaign_id, alert.version, alert.message)
        return "paused"


def _record(alert: Alert, outcome: dict[str, str]) -> AlertRecord:
    info: dict[str, Any] = alert.as_dict()
    return AlertRecord(
        rule=alert.rule,
        detector=alert.detector,
        severity=alert.severity,
        subject=alert.subject[:200],
        campaign_id=alert.campaign_id,
        version=alert.version,
        value=str(info["value"])[:40],
        threshold=str(info["threshold"])[:40],
        message=alert.message[:500],
        actions=[str(a) for a in alert.actions],
        outcome=outcome,
    )
