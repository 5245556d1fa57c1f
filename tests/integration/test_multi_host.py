"""A multi-host DATABASE_URL (a failover pair): the shop connects to the first
host that takes the connection, each host bounded on its own, so a frozen host
listed first (the old primary, say) costs one connect bound, not every
connection. Before, the client-side connect bound covered the whole host list,
and libpq never got past a silent first host."""

from __future__ import annotations

import socket
from dataclasses import replace

from sqlalchemy import make_url, text

from ecommerce.config import Settings
from ecommerce.database.engine import Database
from tests.helpers import wait_for
from tests.system.test_silent_database import SilentServer


def _host_of(url: str) -> str:
    """The test database's host as a libpq host list entry (host:port, or a
    percent-encoded socket directory)."""
    parsed = make_url(url)
    host = parsed.host or parsed.query.get("host")
    assert isinstance(host, str)
    if host.startswith("/"):
        host = host.replace("/", "%2F")
    return f"{host}:{parsed.port or 5432}"


def _tries(silent: SilentServer) -> int:
    """How many connections the silent server took before now: a probe of our
    own, accepted after any earlier connection, then the count without it."""
    probe = socket.create_connection(("127.0.0.1", silent.port))
    wait_for(
        lambda: probe.getsockname() in {c.getpeername() for c in list(silent.held)},
        10,
        "for the silent server to accept the probe",
    )
    probe.close()
    return len(silent.held) - 1


def test_a_silent_first_host_is_passed_over(settings: Settings, database_url: str):
    silent = SilentServer()
    parsed = make_url(database_url)
    user = parsed.username or "postgres"
    url = (
        f"postgresql://{user}@127.0.0.1:{silent.port},{_host_of(database_url)}/{parsed.database}"
        "?target_session_attrs=read-write"
    )
    db = Database(replace(settings, database_url=url, db_connect_timeout_ms=1000))
    try:
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT NOT pg_is_in_recovery()")).scalar_one()
        # The host that answered is tried first from then on: no bound paid again.
        db.engine.dispose()
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
        assert _tries(silent) == 1, "the silent host was tried once, then passed over"
    finally:
        db.dispose()
        silent.close()


def test_lists_of_the_same_hosts_on_other_ports_are_remembered_apart(
    settings: Settings, database_url: str
):
    """The host that answered last is remembered per list of hosts *and ports*.
    Before the fix it was remembered per list of host names: after a list whose
    second entry answered, another list naming the same hosts (other ports)
    started at its second entry too and never tried its first one (here a
    silent server on 127.0.0.1: tried 0 times)."""
    parsed = make_url(database_url)
    user = parsed.username or "postgres"
    real = _host_of(database_url)
    first, second = SilentServer(), SilentServer()
    databases = [
        Database(
            replace(
                settings,
                database_url=f"postgresql://{user}@127.0.0.1:{silent.port},{real}/"
                f"{parsed.database}?target_session_attrs=read-write",
                db_connect_timeout_ms=1000,
            )
        )
        for silent in (first, second)
    ]
    try:
        for db in databases:  # the first list's second entry answers, then the second's
            with db.engine.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar_one() == 1
        assert _tries(second) == 1, "the second list's silent first host was never tried"
    finally:
        for db in databases:
            db.dispose()
        first.close()
        second.close()
