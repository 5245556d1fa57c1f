"""psycopg2 inside a gevent worker: every wait for the database goes through the hub.

gunicorn's gevent worker serves each connection in a greenlet on one OS thread,
so a request never waits for the GIL behind 30 other threads and a pay costs no
thread switches (docs/BENCHMARKS.md measured it). psycopg2 is a C extension:
left alone, a query would block that one thread, and with it every request of
the worker. With this wait callback psycopg2 sends the query, then hands the
socket to gevent's hub until PostgreSQL answers, while other greenlets run.

The database bounds every wait as before (lock_timeout, statement_timeout and
idle_in_transaction_session_timeout are set per transaction), so no timeout is
needed here. Installed by the gunicorn config in each gevent worker after the
fork (ecommerce/gunicorn_conf.py); the CLI and the tests never install it.
"""

from __future__ import annotations

from typing import Any

import psycopg2
import psycopg2.extensions
from gevent.socket import wait_read, wait_write


def wait_through_hub(conn: Any, timeout: float | None = None) -> None:
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        if state == psycopg2.extensions.POLL_READ:
            wait_read(conn.fileno(), timeout=timeout)
        elif state == psycopg2.extensions.POLL_WRITE:
            wait_write(conn.fileno(), timeout=timeout)
        else:
            raise psycopg2.OperationalError(f"unexpected state from poll(): {state!r}")


def install() -> None:
    """Make this process's psycopg2 wait through gevent (before any connection opens)."""
    psycopg2.extensions.set_wait_callback(wait_through_hub)
