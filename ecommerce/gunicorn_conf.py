"""gunicorn settings: ``gunicorn -c python:ecommerce.gunicorn_conf wsgi:app``.

Everything can be overridden from the environment (WEB_CONCURRENCY,
GUNICORN_THREADS, PORT, ...). The app is not preloaded: each worker imports it
and builds its own SQLAlchemy engine after the fork.
"""

from __future__ import annotations

import os

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
worker_class = os.environ.get("GUNICORN_WORKER_CLASS") or "gthread"
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
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")


def on_starting(server) -> None:
    """Start the embedded PostgreSQL once, in the master, before workers fork."""
    if not _settings.database_url:
        from ecommerce.embedded_db import embedded_database_url

        embedded_database_url(_settings.instance_path)
