"""gunicorn settings: ``gunicorn -c python:ecommerce.gunicorn_conf ecommerce.wsgi:app``.

Every value set from the environment comes from ecommerce.config.Settings, parsed
and checked once here, in the master (docs/CONFIGURATION.md): a bad value stops
the start with its message. The app is not preloaded: each worker imports it and
builds its own SQLAlchemy engine after the fork.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys

from gunicorn.glogging import Logger
from gunicorn.util import parse_address

from ecommerce.config import Settings
from ecommerce.observability import logs, metrics_dir
from ecommerce.workers import DrainingGeventWorker, DrainingThreadWorker

_settings = Settings.from_env()
_settings.validate_server()

bind = _settings.bind
# The worker model:
# one process per core, each serving its connections in greenlets (gevent) on
# one OS thread. A pay queues for the worker's pay combiner, whose one greenlet
# runs the queued pays as one transaction on one connection; adds and checkouts
# likewise queue for the worker's cart combiners (one for adds, one for cart
# reads); other reads use a pooled connection (DB_POOL_SIZE: a greenlet past it
# waits for one, at most DB_POOL_TIMEOUT_MS, then 503). psycopg2 waits for
# PostgreSQL through gevent's hub (ecommerce/database/cooperative.py). gevent sold more
# pays than gthread threads, whose request threads spent the difference
# switching and waiting for the GIL; one process per core keeps batches large
# (docs/CAPACITY.md). GUNICORN_WORKER_CLASS=gthread
# gives the threaded model (GUNICORN_THREADS threads per worker) with the same
# guarantees.


_worker_class = _settings.worker_class
worker_class = {"gthread": DrainingThreadWorker, "gevent": DrainingGeventWorker}.get(
    _worker_class, _worker_class
)
workers = _settings.workers
# gthread: request threads per worker. gevent ignores it (GUNICORN_THREADS only
# sizes the default pool there: Settings.threads).
threads = _settings.threads
# gevent: connections served at once per worker; beyond it they wait in the backlog.
worker_connections = _settings.worker_connections
preload_app = False
# The worker timeout sits above statement_timeout, which sits above
# lock_timeout (both checked by Settings.validate_server): the database gives up
# first and the client gets a 503.
timeout = _settings.worker_timeout_s
graceful_timeout = _settings.graceful_timeout_s
keepalive = 5
backlog = 2048
# Each worker listens on a socket of its own (SO_REUSEPORT), and the kernel
# spreads new connections over them. With one shared socket, the worker that
# woke first accepted a burst of connections alone, and since each worker
# combines only its own requests, a lopsided split cost pays/s
# (docs/BENCHMARKS.md). GUNICORN_REUSE_PORT=false gives the shared socket back;
# a bind without a fixed TCP port always uses it.
_address = parse_address(bind)
reuse_port = _settings.reuse_port and isinstance(_address, tuple) and int(_address[1]) != 0
# The control socket's default path is per user, not per instance: a second
# gunicorn (the simulator or a test next to `make run`) would take it over.
control_socket_disable = True
# Logs are JSON lines on stderr (ecommerce/observability/logs.py), gunicorn's own included.
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

# Prometheus multiprocess mode (ecommerce/observability/metrics.py): every worker writes its
# samples to files in one directory, GET /metrics adds them up. The directory
# is set here, in the master, before any worker imports prometheus_client; it
# is emptied at start (stale files would count twice), an exited worker's live
# gauges are dropped, and a directory made here is removed at exit.
_made_metrics_dir = not _settings.metrics_dir
_metrics_dir = _settings.metrics_dir or metrics_dir.make()
os.environ[metrics_dir.ENV] = _metrics_dir  # handed to the workers and prometheus-client


def on_starting(server) -> None:
    """Refuse a port already taken; empty the metrics directory; start the
    embedded PostgreSQL once, in the master, before workers fork."""
    if reuse_port:
        _refuse_a_taken_port(server)
    metrics_dir.empty(_metrics_dir)
    if not _settings.database_url:
        from ecommerce.database.embedded import embedded_database_url

        embedded_database_url(_settings.instance_path)


def _refuse_a_taken_port(server) -> None:
    """With SO_REUSEPORT the workers bind after the fork, and a second server of
    the same user on the same port would be let in beside the first, silently
    taking a share of its connections. A plain bind here (no SO_REUSEPORT) fails
    on a port that anything listens on: then this server does not start."""
    host, port = _address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        try:
            probe.bind((host, int(port)))
        except OSError as error:
            server.log.error("%s:%s is already in use (%s): not starting", host, port, error)
            sys.exit(1)


def post_fork(server, worker) -> None:
    """In each worker, before the app is loaded and any connection is opened:
    every wait for the database bounded, and through gevent's hub in a gevent
    worker (gevent, gevent_pywsgi, ...)."""
    from ecommerce.database import cooperative

    cooperative.install(
        _settings.db_connect_timeout_ms / 1000,
        _settings.db_silence_timeout_s,
        gevent=_worker_class.startswith("gevent"),
    )


def post_worker_init(worker) -> None:
    """The app is loaded in this worker: everything alive now (modules, the app,
    its routes and models) leaves the cyclic collector's reach. A full collection
    otherwise walks it all, and stalled a worker every few seconds under a storm
    (docs/BENCHMARKS.md); the objects are never freed anyway."""
    gc.collect()
    gc.freeze()


def worker_exit(server, worker) -> None:
    """In a gevent worker about to exit: flush and close the log handlers now and
    drop logging's weak references to them. At interpreter teardown those
    references call back into gevent's already cleared modules, and Python
    prints "Exception ignored in: _removeHandlerRef" on stderr, a line that
    breaks the JSON log."""
    if _worker_class.startswith("gevent"):
        logging.shutdown()
        logging._handlerList.clear()  # type: ignore[attr-defined]


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    if _made_metrics_dir:
        metrics_dir.remove(_metrics_dir)
