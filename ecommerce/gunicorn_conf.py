"""gunicorn settings: ``gunicorn -c python:ecommerce.gunicorn_conf wsgi:app``.

Everything can be overridden from the environment (WEB_CONCURRENCY,
GUNICORN_THREADS, PORT, ...). The app is not preloaded: each worker imports it
and builds its own SQLAlchemy engine after the fork.
"""

from __future__ import annotations

import os

from gunicorn.glogging import Logger
from gunicorn.workers.gthread import ThreadWorker

from ecommerce import logs, metrics_dir
from ecommerce.config import Settings

_settings = Settings.from_env()

bind = os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{_settings.port}"
# gthread: each worker serves GUNICORN_THREADS requests at once. Pays do not hold
# a connection each: they queue for the worker's pay combiner, whose one thread
# runs them in batches on one connection; adds, checkouts and reads use the
# request thread's pooled connection (DB_POOL_SIZE defaults to threads + 1).
# Many threads per worker let batches form (a batch is what arrives while the
# previous one runs); one worker per core keeps the batches large and the GIL
# contention per process low. Measured on 2 cores, one hot item, 64 connections
# (docs/BENCHMARKS.md): 2 x 32 and 2 x 64 sold most, 4 x 8 and 8 x 8 less, and
# one process per core beat two.


class DrainingThreadWorker(ThreadWorker):
    """gthread, with a graceful stop that refuses new connections at once.

    On SIGTERM the master closes its listening sockets and gthread stops
    accepting, finishes the requests in flight (a combined-pay batch included)
    and only then closes its copies of the listeners; meanwhile the kernel would
    still complete new connections into the backlog and reset them at exit. This
    worker closes its listeners as soon as it stops accepting for good, so a
    client (or a balancer) is refused at once and retries elsewhere.
    """

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:
            for listener in self.sockets:
                listener.close()
            self.sockets = []


_worker_class = os.environ.get("GUNICORN_WORKER_CLASS") or "gthread"
worker_class = DrainingThreadWorker if _worker_class == "gthread" else _worker_class
workers = int(os.environ.get("WEB_CONCURRENCY") or (os.cpu_count() or 1))
threads = int(os.environ.get("GUNICORN_THREADS") or 32)
preload_app = False
# The worker timeout sits above statement_timeout (10 s), which sits above
# lock_timeout (3 s): the database gives up first and the client gets a 503.
timeout = int(os.environ.get("GUNICORN_TIMEOUT") or 30)
if timeout * 1000 <= _settings.statement_timeout_ms:
    raise ValueError("GUNICORN_TIMEOUT must be above STATEMENT_TIMEOUT_MS, or workers die first")
graceful_timeout = 20
keepalive = 5
backlog = 2048
# The control socket's default path is per user, not per instance: a second
# gunicorn (the simulator or a test next to `make run`) would take it over.
control_socket_disable = True
# Logs are JSON lines on stderr (ecommerce/logs.py), gunicorn's own included.
# The app writes one line per request itself, with its request id, user and
# error code (ecommerce/api/observe.py), so gunicorn's access log stays off.
accesslog = None
errorlog = "-"
loglevel = _settings.log_level


class JsonGunicornLogger(Logger):
    """gunicorn's logger with its lines in the app's JSON format."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(logs.JsonFormatter())


logger_class = JsonGunicornLogger

# Prometheus multiprocess mode (ecommerce/metrics.py): every worker writes its
# samples to files in one directory, GET /metrics adds them up. The directory
# is set here, in the master, before any worker imports prometheus_client; it
# is emptied at start (stale files would count twice), an exited worker's live
# gauges are dropped, and a directory made here is removed at exit.
_made_metrics_dir = not os.environ.get(metrics_dir.ENV)
os.environ[metrics_dir.ENV] = os.environ.get(metrics_dir.ENV) or metrics_dir.make()


def on_starting(server) -> None:
    """Empty the metrics directory; start the embedded PostgreSQL once, in the
    master, before workers fork."""
    metrics_dir.empty(os.environ[metrics_dir.ENV])
    if not _settings.database_url:
        from ecommerce.embedded_db import embedded_database_url

        embedded_database_url(_settings.instance_path)


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    if _made_metrics_dir:
        metrics_dir.remove(os.environ[metrics_dir.ENV])
