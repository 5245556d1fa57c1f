"""The shop's gunicorn workers (ecommerce/gunicorn_conf.py picks one by
GUNICORN_WORKER_CLASS): gthread and gevent, each with a graceful stop that
refuses new connections at once; gevent on gevent's pywsgi server, with the
edges gunicorn's own gevent worker had and a lean parse of request headers.
"""

from __future__ import annotations

import email.parser
import http.client
import re
from collections.abc import Iterator
from typing import Any

import gevent
from gevent.pywsgi import OldMessage  # type: ignore[attr-defined]
from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler, PyWSGIServer
from gunicorn.workers.gthread import ThreadWorker

# The bounds of http.client.parse_headers, which pywsgi reads a head with.
MAX_HEADER_LINE = 65536
MAX_HEADERS = 100
# A header line as the email parser reads a plain one: a name of visible
# characters but ":", then ":".
_PLAIN_LINE = re.compile(r"[\x21-\x39\x3b-\x7e]+:")


class LeanHeaders:
    """A request's headers with the part of pywsgi's message API its handler
    uses, for a head of plain ``Name: value`` lines (read_head)."""

    status = ""  # pywsgi refuses a head whose status is set
    __slots__ = ("_lines",)

    def __init__(self, lines: list[tuple[str, str, str]]) -> None:
        self._lines = lines  # (lower-case name, name, value), in arrival order

    def get(self, name: str, default: Any = None) -> Any:
        """The first value of ``name`` (any case), as email.message.Message.get."""
        wanted = name.lower()
        for lower, _, value in self._lines:
            if lower == wanted:
                return value
        return default

    getheader = get

    @property
    def typeheader(self) -> str | None:
        return self.get("content-type")

    def __delitem__(self, name: str) -> None:
        wanted = name.lower()
        self._lines = [line for line in self._lines if line[0] != wanted]

    @property
    def headers(self) -> Iterator[str]:
        for _, name, value in self._lines:
            yield f"{name}: {value}\r\n"

    def items(self) -> list[tuple[str, str]]:
        return [(name, value) for _, name, value in self._lines]

    def environ_items(self) -> Iterator[tuple[str, str]]:
        """The ``HTTP_*`` keys as pywsgi's handler makes them (a name with "_"
        is dropped; Content-Type and Content-Length have keys of their own)."""
        for _, name, value in self._lines:
            if "_" in name:
                continue
            key = name.replace("-", "_").upper()
            if key != "CONTENT_TYPE" and key != "CONTENT_LENGTH":
                yield "HTTP_" + key, value.strip()


def read_head(fp: Any) -> LeanHeaders | OldMessage:
    """A request's header lines read from ``fp`` within http.client's bounds.
    Plain lines are parsed here; any other head (a folded line, a line without a
    name, a stray CR) by the email parser, exactly as pywsgi parses every head.
    The email parser is most of what reading a head costs."""
    raw: list[bytes] = []
    while True:
        line = fp.readline(MAX_HEADER_LINE + 1)
        if len(line) > MAX_HEADER_LINE:
            refused = OldMessage()
            refused.status = "Line too long"  # as pywsgi's headers_factory answers it
            return refused
        raw.append(line)
        if len(raw) > MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
        if line in (b"\r\n", b"\n", b""):
            break
    text = b"".join(raw).decode("iso-8859-1")
    if text == "\r\n":
        return LeanHeaders([])
    lines: list[tuple[str, str, str]] = []
    plain = text.endswith("\r\n\r\n")
    for line in text[:-4].split("\r\n") if plain else ():
        if "\r" in line or "\n" in line or not _PLAIN_LINE.match(line):
            plain = False
            break
        name, _, value = line.partition(":")
        lines.append((name.lower(), name, value.lstrip(" \t")))
    if not plain:
        return email.parser.Parser(_class=OldMessage).parsestr(text)
    return LeanHeaders(lines)


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

    def _bounded(self, read: Any, *args: Any) -> Any:
        """``read(*args)``, or None once the connection has been silent for
        keepalive_s. A new timer each wait: a gevent Timeout started again after
        a cancel keeps counting from its first start."""
        with gevent.Timeout(self.keepalive_s, False):
            return read(*args)
        return None  # the timer expired (Timeout(..., False) ends the block quietly)

    def read_requestline(self):  # type: ignore[no-untyped-def]
        return self._bounded(super().read_requestline) or ""  # "" closes the connection

    def MessageClass(self, fp, *args):  # type: ignore[no-untyped-def]
        return read_head(fp)

    def _headers(self):  # type: ignore[no-untyped-def]
        if isinstance(self.headers, LeanHeaders):
            return self.headers.environ_items()
        return super()._headers()

    def read_request(self, raw_requestline):  # type: ignore[no-untyped-def]
        # False: 400, the connection closed
        return self._bounded(super().read_request, raw_requestline) or False

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
