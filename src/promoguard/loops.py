"""Background loops (sweeper, scheduler, monitoring) report failures without flooding the log."""

from __future__ import annotations

import logging

__all__ = ["FailureLog"]


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
