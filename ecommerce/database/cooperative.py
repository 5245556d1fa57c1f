"""Every wait for PostgreSQL bounded on this side too, and cooperative in gevent.

psycopg2 calls a *wait callback* whenever it waits for the server: while it
connects and while a query runs. This module installs one per process (the
gunicorn config does it in each worker after the fork;
ecommerce/database/engine.py does it in any other process before its first
connection):

* In a gevent worker it hands the socket to gevent's hub until PostgreSQL
  answers, so one request waiting for the database never stops the worker's
  other requests (a C extension left alone would block its one OS thread).
* In every process the wait is bounded by a deadline kept here, not only by
  the server: making a connection may take ``connect_timeout_s``; one query may
  take ``silence_timeout_s`` (above statement_timeout, which bounds the server's
  own work). A server that accepts the TCP connection and never answers (a frozen
  primary, a half-open network path) then fails the wait with
  :class:`DatabaseSilent`; psycopg2 closes the connection (its state is
  unknown) and the request is answered 503 with Retry-After
  (ecommerce/services/transactions.py).
  libpq's own ``connect_timeout`` does not apply in this asynchronous mode, and
  statement_timeout needs a server that runs.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from typing import Any

import psycopg2
import psycopg2.extensions

_POLL_OK = psycopg2.extensions.POLL_OK
_POLL_READ = psycopg2.extensions.POLL_READ
_POLL_WRITE = psycopg2.extensions.POLL_WRITE


class DatabaseSilent(psycopg2.OperationalError):
    """The server did not answer within this side's bound; the connection is closed."""


# Waits for one file descriptor: (fd, seconds) -> True when ready, False on timeout.
Waiter = Callable[[int, float], bool]


def _poll_waiter(events: int) -> Waiter:
    def wait(fd: int, timeout_s: float) -> bool:
        poller = select.poll()
        poller.register(fd, events)
        return bool(poller.poll(max(0, int(timeout_s * 1000) + 1)))

    return wait


def _gevent_waiter(read: bool) -> Waiter:
    from gevent.socket import wait_read, wait_write

    wait_for = wait_read if read else wait_write

    def wait(fd: int, timeout_s: float) -> bool:
        try:
            wait_for(fd, timeout=timeout_s)
        except TimeoutError:
            return False
        return True

    return wait


def make_wait_callback(
    connect_timeout_s: float, silence_timeout_s: float, *, gevent: bool = False
) -> Callable[[Any], None]:
    """A psycopg2 wait callback with these bounds (through gevent's hub if asked)."""
    wait_read = _gevent_waiter(True) if gevent else _poll_waiter(select.POLLIN)
    wait_write = _gevent_waiter(False) if gevent else _poll_waiter(select.POLLOUT)

    def wait(conn: Any) -> None:
        connecting = conn.status == psycopg2.extensions.STATUS_SETUP
        bound = connect_timeout_s if connecting else silence_timeout_s
        deadline = time.monotonic() + bound
        while True:
            state = conn.poll()
            if state == _POLL_OK:
                return
            if state not in (_POLL_READ, _POLL_WRITE):
                raise psycopg2.OperationalError(f"unexpected state from poll(): {state!r}")
            waiter = wait_read if state == _POLL_READ else wait_write
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not waiter(conn.fileno(), remaining):
                if time.monotonic() < deadline:
                    continue  # woken early (a signal): wait for the rest
                what = "connect" if connecting else "answer"
                raise DatabaseSilent(f"the database did not {what} within {bound:g} s")

    return wait


_bounds = {"connect_timeout_s": 3.0}


def install(connect_timeout_s: float, silence_timeout_s: float, *, gevent: bool = False) -> None:
    """This process's wait callback (before any connection opens)."""
    _bounds["connect_timeout_s"] = connect_timeout_s
    psycopg2.extensions.set_wait_callback(
        make_wait_callback(connect_timeout_s, silence_timeout_s, gevent=gevent)
    )


def installed() -> bool:
    return psycopg2.extensions.get_wait_callback() is not None


def connect_timeout_s() -> float:
    """The bound on making a connection in this process."""
    return _bounds["connect_timeout_s"]
