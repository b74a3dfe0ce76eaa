"""gunicorn configuration of one promoguard API server (see docs/scale-out.md).

Run the migrations once per deployment, then start this on every machine::

    promoguard db upgrade
    gunicorn -c deploy/gunicorn.conf.py

Every setting the service reads comes from the ``PROMOGUARD_*`` environment (the same file on
every machine: ``deploy/scale-out.env.example``). This file reads three more:

``PROMOGUARD_BIND``
    ``host:port`` to listen on, several separated by commas (default ``0.0.0.0:8000``: the
    load balancer reaches the machine; use ``127.0.0.1:8000`` behind a local reverse proxy).
``PROMOGUARD_WORKERS``
    worker processes (default ``WEB_CONCURRENCY``, else one per CPU core).
``PROMOGUARD_GRACEFUL_TIMEOUT``
    seconds a stopping worker gets to finish its requests and flush (default 30).

Command-line options given to gunicorn override these.
"""

import os

from promoguard.gunicorn_hooks import MetricsHooks

wsgi_app = "promoguard.app:create_app()"
# uvicorn's worker for gunicorn: uvloop and httptools, and the app's lifespan (live rules, the
# sweeper, the watch) run in every worker. Its successor is the uvicorn-worker package's
# "uvicorn_worker.UvicornWorker", the same class.
worker_class = "uvicorn.workers.UvicornWorker"

bind = os.environ.get("PROMOGUARD_BIND", "0.0.0.0:8000").split(",")
workers = int(
    os.environ.get("PROMOGUARD_WORKERS") or os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 1
)

# A worker whose event loop has not reported for this long is killed and replaced.
timeout = 30
# SIGTERM (a deploy, a scale-in): stop accepting, finish what is in flight, run the lifespan's
# shutdown (the watch flushes its traffic sums, connections close), then exit; killed after this.
graceful_timeout = int(os.environ.get("PROMOGUARD_GRACEFUL_TIMEOUT", "30"))
# Idle keep-alive connections are kept longer than a load balancer's usual 60 s idle timeout,
# so the balancer, not the worker, closes them (no request lost on a connection closing).
keepalive = 75

# The app is loaded in each worker after the fork: every worker opens its own database pool and
# Redis connections in its lifespan, and nothing is shared across a fork.
preload_app = False

loglevel = os.environ.get("PROMOGUARD_LOG_LEVEL", "warning")
accesslog = None

# Prometheus multiprocess mode, as `promoguard serve --workers N` sets it up, plus marking
# dead workers dead (PROMETHEUS_MULTIPROC_DIR: one directory per server, see deploy/README.md).
_metrics = MetricsHooks()
on_starting = _metrics.on_starting
post_fork = _metrics.post_fork
child_exit = _metrics.child_exit
on_exit = _metrics.on_exit
