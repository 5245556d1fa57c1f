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

import gevent
from gunicorn.glogging import Logger
from gunicorn.util import parse_address
from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler, PyWSGIServer
from gunicorn.workers.gthread import ThreadWorker

from ecommerce import logs, metrics_dir
from ecommerce.config import DEPRECATED_NAMES, Settings

_settings = Settings.from_env()
_settings.validate_server()

bind = _settings.bind
# The worker model (measured: docs/BENCHMARKS.md and its History):
# one process per core, each serving its connections in greenlets (gevent) on
# one OS thread. A pay queues for the worker's pay combiner, whose one greenlet
# runs the queued pays as one transaction on one connection; adds and checkouts
# likewise queue for the worker's cart combiners (one for adds, one for cart
# reads); other reads use a pooled connection (DB_POOL_SIZE: a greenlet past it
# waits for one, at most DB_POOL_TIMEOUT_MS, then 503). psycopg2 waits for
# PostgreSQL through gevent's hub (ecommerce/cooperative.py). gevent sold more
# pays than gthread threads, whose request threads spent the difference
# switching and waiting for the GIL; one process per core keeps batches large
# (figures: docs/BENCHMARKS.md, docs/CAPACITY.md). GUNICORN_WORKER_CLASS=gthread
# gives the threaded model (GUNICORN_THREADS threads per worker) with the same
# guarantees.


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


_servers: list[_ClosableServer] = []  # this worker process's servers


def _stop_accepting() -> None:
    for server in _servers:
        server.close()


class _ClosableServer(PyWSGIServer):
    """gevent's WSGIServer as gunicorn's gevent_pywsgi worker runs it, remembered
    by its worker and safe to close twice."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _servers.append(self)

    def close(self) -> None:
        if not self.closed:
            super().close()


class _LeanHandler(PyWSGIHandler):
    """gevent's HTTP handler, as gunicorn's gevent worker behaves at its edges.

    gevent's pywsgi writes a response's head and body in one ``sendall`` and
    parses a request in fewer steps than gunicorn's own parser; what gunicorn's
    gevent worker did and pywsgi does not is added back here: the wait for a
    request's line and headers is bounded by ``keepalive`` (a silent keep-alive
    connection is closed), a trusted proxy's X-Forwarded-Proto sets the scheme
    (``forwarded_allow_ips``, ``secure_scheme_headers``), and with no access
    log configured nothing is formatted for one.
    """

    keepalive_s: float = 5.0
    access_log = False
    trusted_peers: frozenset[str] = frozenset({"127.0.0.1", "::1"})
    trust_every_peer = False
    secure_scheme_headers: tuple[tuple[str, str], ...] = ()

    def read_requestline(self):  # type: ignore[no-untyped-def]
        line = ""
        with gevent.Timeout(self.keepalive_s, False):
            line = super().read_requestline()
        return line  # "" closes the connection

    def read_request(self, raw_requestline):  # type: ignore[no-untyped-def]
        done = False
        with gevent.Timeout(self.keepalive_s, False):
            done = super().read_request(raw_requestline)
        return done  # False: 400, the connection closed

    def get_environ(self):  # type: ignore[no-untyped-def]
        environ = super().get_environ()
        for key, secure_value in self.secure_scheme_headers:
            value = environ.get(key)
            if value is not None and self._peer_trusted():
                environ["wsgi.url_scheme"] = "https" if value == secure_value else "http"
                break
        return environ

    def _peer_trusted(self) -> bool:
        peer = self.client_address[0] if isinstance(self.client_address, tuple) else ""
        return self.trust_every_peer or peer in self.trusted_peers

    def log_request(self) -> None:
        if self.access_log:
            super().log_request()


class DrainingGeventWorker(GeventPyWSGIWorker):
    """gevent: gunicorn's gevent_pywsgi worker, with the shop's edges
    (_LeanHandler) and a graceful stop that refuses new connections at once.

    gunicorn's gevent workers notice SIGTERM in their once-a-second loop and only
    then close their servers; until then they go on accepting. This worker
    closes them (stops accepting, closes its copies of the listeners) from a
    greenlet spawned by the signal, then drains as gunicorn does. Rebased from
    gunicorn's plain gevent worker onto gevent's pywsgi server: one ``sendall``
    per response and a leaner parser cost less CPU per request
    (docs/BENCHMARKS.md, "The lean request path").
    """

    server_class = _ClosableServer
    wsgi_handler = _LeanHandler

    def init_process(self) -> None:
        cfg = self.cfg
        _LeanHandler.keepalive_s = float(cfg.keepalive or 5)
        _LeanHandler.access_log = bool(cfg.accesslog)
        allowed = list(cfg.forwarded_allow_ips)
        _LeanHandler.trust_every_peer = "*" in allowed
        _LeanHandler.trusted_peers = frozenset(allowed)
        _LeanHandler.secure_scheme_headers = tuple(
            ("HTTP_" + name.upper().replace("-", "_"), value)
            for name, value in cfg.secure_scheme_headers.items()
        )
        super().init_process()

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        gevent.spawn(_stop_accepting)


_worker_class = _settings.worker_class
worker_class = {
    "gthread": DrainingThreadWorker,
    "gevent": DrainingGeventWorker,
    "gevent_pywsgi": DrainingGeventWorker,
}.get(_worker_class, _worker_class)
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
_made_metrics_dir = not _settings.metrics_dir
os.environ[metrics_dir.ENV] = _settings.metrics_dir or metrics_dir.make()


def on_starting(server) -> None:
    """Refuse a port already taken; empty the metrics directory; start the
    embedded PostgreSQL once, in the master, before workers fork."""
    if reuse_port:
        _refuse_a_taken_port(server)
    metrics_dir.empty(os.environ[metrics_dir.ENV])
    if not _settings.database_url:
        from ecommerce.embedded_db import embedded_database_url

        embedded_database_url(_settings.instance_path)


def when_ready(server) -> None:
    """Name each deprecated setting the environment still uses, once, in the
    master's log (docs/CONFIGURATION.md)."""
    for old in _settings.deprecated_names_set:
        new = DEPRECATED_NAMES[old]
        server.log.warning("%s is deprecated: set %s (which wins when both are set)", old, new)


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
    from ecommerce import cooperative

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
        metrics_dir.remove(os.environ[metrics_dir.ENV])
