"""The shop's gunicorn workers (ecommerce/gunicorn_conf.py picks one by
GUNICORN_WORKER_CLASS): gthread and gevent, each with a graceful stop that
refuses new connections at once; gevent writing each response whole.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

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

    Each response leaves in one ``sendall`` where gunicorn makes two (its head,
    then its body): see OneWriteSocket. gunicorn's own parser, keep-alive bound,
    request limits and error answers are untouched.
    """

    def run(self) -> None:
        # GeventWorker.run builds its servers from its module's StreamServer; in
        # this worker process (forked, never the master) they are ours.
        ggevent.StreamServer = _ClosableServer
        super().run()

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        gevent.spawn(_stop_accepting)

    def handle(self, listener, client, addr) -> None:
        super().handle(listener, OneWriteSocket(client), addr)

    def handle_request(self, listener_name, req, sock, addr):  # type: ignore[no-untyped-def]
        try:
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            with contextlib.suppress(OSError):  # a client gone: its next read says so
                sock.flush()


def _stop_accepting() -> None:
    for server in _servers:
        server.close()


class OneWriteSocket:
    """A gevent worker's client socket on which a response's head waits for the
    response's body, so that a whole answer leaves in one ``sendall``: gunicorn
    writes a head and then the body, two system calls and two trips through
    gevent's socket for every answer. Only a head that announces its length is
    held (a streamed answer's head goes at once); the worker flushes a held head
    when the request is done (an answer with no body). Everything else is the
    socket's own."""

    __slots__ = ("_head", "_sock")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._head: bytes | None = None

    def sendall(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif _is_sized_head(data):
            self._head = bytes(data)
            return
        self._sock.sendall(data)

    def flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._sock.sendall(head)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _is_sized_head(data: bytes) -> bool:
    """A whole response head (status line to the blank line) with a Content-Length."""
    return (
        data[:5] == b"HTTP/" and data[-4:] == b"\r\n\r\n" and b"\r\ncontent-length:" in data.lower()
    )
