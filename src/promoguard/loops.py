"""Background loops (sweeper, scheduler, monitoring, incidents, notifications): a periodic task
that survives its failures, and a log of those failures that does not flood."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["FailureLog", "Periodic"]


class FailureLog:
    """Log a loop's failures: the first of a streak with its traceback, the repeats as one line
    each (a database that is down for a minute must not write sixty tracebacks), and the
    recovery."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self._streak = 0

    def failed(self, exc: BaseException) -> None:
        """Record one failure."""
        self._streak += 1
        if self._streak == 1:
            self._log.error("%s failed", self._what, exc_info=exc)
        else:
            self._log.warning(
                "%s failed again (%d in a row): %s: %s",
                self._what,
                self._streak,
                exc.__class__.__name__,
                exc,
            )

    def succeeded(self) -> None:
        """Record a run that worked (ends a streak)."""
        if self._streak:
            self._log.info("%s works again after %d failure(s)", self._what, self._streak)
            self._streak = 0


STOP_GRACE_SECONDS = 5.0
"""How long :meth:`Periodic.stop` lets a step under way finish before it cancels it."""


class Periodic:
    """Run ``step`` every ``interval`` seconds in a background task, until :meth:`stop`.

    Failures are logged through a :class:`FailureLog` and never end the loop. :meth:`wake`
    runs the next step now instead of at the end of the interval.

    :meth:`stop` lets a step under way finish (up to :data:`STOP_GRACE_SECONDS`) rather than
    cancel it: a step cancelled inside a SQLite write transaction can leave its connection
    behind with the write lock held (its rollback is cancelled too), and every other writer of
    that file then waits out the busy timeout.
    """

    def __init__(
        self,
        step: Callable[[], Awaitable[object]],
        interval: float,
        *,
        log: logging.Logger,
        what: str,
    ) -> None:
        self._step = step
        self._interval = interval
        self._failures = FailureLog(log, what)
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the loop has been started and not stopped."""
        return self._task is not None

    def wake(self) -> None:
        """Run the next step now."""
        self._wake.set()

    async def start(self) -> None:
        """Start the loop (again after :meth:`stop`); a no-op when it runs."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run())

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop the loop: no step starts any more, a step under way may finish within
        ``grace`` seconds, and is cancelled after that."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        _, pending = await asyncio.wait([task], timeout=grace)
        if pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self._step()
            except Exception as exc:
                self._failures.failed(exc)
            else:
                self._failures.succeeded()
