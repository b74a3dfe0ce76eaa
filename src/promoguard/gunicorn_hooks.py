"""gunicorn server hooks for the scaled-out service (``deploy/gunicorn.conf.py``).

Under gunicorn the workers are forked by one master, so Prometheus multiprocess mode is set up
there, once, the way ``promoguard serve --workers N`` does it (:func:`promoguard.metrics.
multiprocess_dir`: a configured ``PROMETHEUS_MULTIPROC_DIR`` is created and its stale files
removed; without one, several workers get a temporary directory removed on exit). gunicorn adds
what uvicorn's own supervisor cannot: ``child_exit``, where a dead worker is marked dead so the
``livemax`` gauges (breaker state) forget it.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

__all__ = ["MetricsHooks"]


class MetricsHooks:
    """The gunicorn hooks that keep one set of metrics for all of a server's workers.

    One instance per gunicorn master (made in the configuration file); its methods are the hooks
    of the same names.
    """

    def __init__(self) -> None:
        self._stack = ExitStack()
        self.directory: Path | None = None

    def on_starting(self, server: Any) -> None:
        """Before the first fork: prepare the metrics directory the workers inherit."""
        from promoguard.metrics import multiprocess_dir  # noqa: PLC0415 (only in the master)

        self.directory = self._stack.enter_context(multiprocess_dir(int(server.cfg.workers)))
        if self.directory is not None:
            server.log.info("metrics: multiprocess mode in %s", self.directory)

    def post_fork(self, server: Any, worker: Any) -> None:  # noqa: ARG002 (gunicorn's signature)
        """In a new worker: write metrics to files when the master set a directory.

        prometheus-client decides between in-memory and file-backed values when it is first
        imported. The master imported it (``on_starting``) before a temporary directory was put
        in the environment, and a forked worker inherits that decision: make it again here.
        """
        from prometheus_client import values  # noqa: PLC0415

        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]

    def child_exit(self, server: Any, worker: Any) -> None:  # noqa: ARG002 (gunicorn's signature)
        """In the master, once a worker has exited (or was killed): its live gauges are dropped;
        its counters stay in the sums, so totals never go backwards."""
        if self.directory is None:
            return
        from prometheus_client import multiprocess  # noqa: PLC0415

        multiprocess.mark_process_dead(worker.pid, str(self.directory))  # type: ignore[no-untyped-call]

    def on_exit(self, server: Any) -> None:  # noqa: ARG002 (gunicorn's signature)
        """When the master stops: remove the temporary directory, if one was made."""
        self._stack.close()
