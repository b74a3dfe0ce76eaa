"""Prometheus metrics: one registry per application, exposed in the text format.

Every metric is registered in a ``CollectorRegistry`` handed to its owner, never in
``prometheus_client``'s global default registry, so two apps in one process (tests) do not
collide. With several worker processes each process has its own registry; a later change adds
prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` and a
``MultiProcessCollector`` in ``new_registry``) for that.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from starlette.responses import Response

__all__ = ["metrics_response", "new_registry"]


def new_registry() -> CollectorRegistry:
    """A fresh registry for one application's metrics."""
    return CollectorRegistry()


def metrics_response(registry: CollectorRegistry) -> Response:
    """The registry's metrics in the Prometheus text format, as a response for ``/metrics``."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)
