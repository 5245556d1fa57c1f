"""The shop's gunicorn workers (ecommerce/gunicorn_conf.py picks one by
GUNICORN_WORKER_CLASS): gthread and gevent, each with a graceful stop that
refuses new connections at once.
"""

from __future__ import annotations

import gevent
import gunicorn.workers.ggevent as ggevent
from gevent.server import StreamServer
from gunicorn.workers.ggevent import GeventWorker
from gunicorn.workers.gthread import ThreadWorker


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


class _ClosableServer(StreamServer):
    """gevent's StreamServer, remembered by its worker and safe to close twice."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _servers.append(self)

    def close(self) -> None:
        if not self.closed:
            super().close()


_servers: list[_ClosableServer] = []  # this worker process's servers


class DrainingGeventWorker(GeventWorker):
    """gevent, with the same graceful stop: new connections refused at once.

    gunicorn's gevent worker notices SIGTERM in its once-a-second loop and only
    then closes its servers; until then it goes on accepting. This worker closes
    them (stops accepting, closes its copies of the listeners) from a greenlet
    spawned by the signal, then drains as gunicorn does.
    """

    def run(self) -> None:
        # GeventWorker.run builds its servers from its module's StreamServer; in
        # this worker process (forked, never the master) they are ours.
        ggevent.StreamServer = _ClosableServer
        super().run()

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        gevent.spawn(_stop_accepting)


def _stop_accepting() -> None:
    for server in _servers:
        server.close()
