"""The synchronous replication trap: a COMMIT whose wait for the standby is
cancelled (pg_cancel_backend: an operator, a tool) still commits on the primary,
with only a WARNING, and may be missing on the standby a failover promotes. The
shop must not acknowledge such an order: the pay is 503, its Idempotency-Key
replays are 503 too while the standby lacks it, and once the standby has it,
the same key answers the order. A real server, made to wait for a standby that
never confirms (synchronous_standby_names names one that does not exist).
Before the fix the cancelled pay answered 201; and so it did again, later,
where the role or the database sets client_min_messages above warning."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text

from ecommerce.errors import ServiceBusy
from ecommerce.services import cart, payment
from tests.concurrency.conftest import PrivateServer
from tests.helpers import assert_invariants, commit_item, shop_state

pytestmark = pytest.mark.slow  # a private PostgreSQL


#: Where the server is told to send the shop no warnings (any role may do it
#: for itself: ALTER ROLE ... SET, a session's PGOPTIONS); the cancelled wait's
#: WARNING then never reached the shop, and before the fix the pay was a 201.
QUIET = {
    "default": None,
    "role": "ALTER ROLE CURRENT_USER SET client_min_messages = error",
    "database": "ALTER DATABASE shop SET client_min_messages = error",
}


@pytest.mark.parametrize("quiet", list(QUIET))
def test_a_commit_the_standby_may_lack_is_never_acknowledged(
    private_server, storm_shop, pay_combining, quiet
):
    if QUIET[quiet]:
        with private_server.engine.connect().execution_options(
            isolation_level="AUTOCOMMIT"
        ) as conn:
            conn.execute(text(QUIET[quiet]))
    _never_acknowledged(private_server, storm_shop)


def test_a_commit_the_standby_may_lack_is_never_acknowledged_in_another_language(
    translated_server, storm_shop, pay_combining
):
    """The server speaks German (lc_messages, set for the database: only a
    superuser may set it, so the shop cannot pin it): its warning reads
    "storniere Warten auf synchrone Replikation". Before, the shop looked for
    the English text, and the pay was a 201."""
    _never_acknowledged(translated_server, storm_shop)


def _never_acknowledged(primary: PrivateServer, storm_shop) -> None:
    item = commit_item(primary.engine, "Hot", "1.00", 10)
    shop = storm_shop(4, database_url=primary.url)
    cart.add_to_cart(shop, "ann", item, 2)
    primary.configure("synchronous_standby_names", "ghost")

    def pay_with_its_commit_cancelled():
        results = []
        payer = threading.Thread(
            target=lambda: results.append(
                _outcome(lambda: payment.pay(shop, "ann", Decimal("2.00"), "k-1"))
            )
        )
        payer.start()
        primary.cancel_the_commit_waiting_for_the_standby()
        payer.join(30)
        assert not payer.is_alive()
        return results[0]

    first = pay_with_its_commit_cancelled()
    assert isinstance(first, ServiceBusy) and "Idempotency-Key" in first.message, first
    # Committed on this server: the order is there, yet it was not acknowledged.
    assert shop_state(primary.engine).orders == 1
    # The same key again: the replay waits for the standby too, and is cut short.
    again = pay_with_its_commit_cancelled()
    assert isinstance(again, ServiceBusy) and "Idempotency-Key" in again.message, again

    primary.configure("synchronous_standby_names", "")  # the standby has caught up
    order = payment.pay(shop, "ann", Decimal("2.00"), "k-1")
    assert order.replayed and order.user_id == "ann" and order.total == Decimal("2.00")
    after = shop_state(primary.engine)
    assert after.orders == 1 and after.stock[item] == 8
    assert_invariants(primary.engine)


def _outcome(call):
    try:
        return call()
    except ServiceBusy as busy:
        return busy


#: Debian's PostgreSQL 15 (the drill's) is built with its message translations;
#: the embedded server's binaries are not.
DEBIAN_PG = Path("/usr/lib/postgresql/15/bin")
TRANSLATED_LOCALE = "de_DE.utf8"


def _translation_available() -> bool:
    if not (DEBIAN_PG / "postgres").exists():
        return False
    if not Path("/usr/share/locale/de/LC_MESSAGES/postgres-15.mo").exists():
        return False
    found = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.split()
    return TRANSLATED_LOCALE in found


@pytest.fixture
def translated_server() -> Iterator[PrivateServer]:
    """A PostgreSQL of the test's own from Debian's packages, whose database
    "shop" answers in German (ALTER DATABASE ... SET lc_messages)."""
    if not _translation_available():
        pytest.skip(
            f"needs Debian's postgresql-15 and the {TRANSLATED_LOCALE} locale"
            " (apt: postgresql-15, locales; localedef -i de_DE -f UTF-8 de_DE.UTF-8)"
        )
    from sqlalchemy import create_engine

    from ecommerce.database import migrations
    from ecommerce.database.embedded import ensure_database
    from ecommerce.drill.procs import free_port

    # Under /tmp, not the test's own directory, which only its owner may enter.
    home = Path(tempfile.mkdtemp(prefix="translated-pg-"))
    data, port = home / "data", free_port()
    as_user: dict[str, object] = {}
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: Debian's service user
        entry = pwd.getpwnam("postgres")
        as_user = {"user": entry.pw_uid, "group": entry.pw_gid}
        os.chown(home, entry.pw_uid, entry.pw_gid)
    run = {"check": True, "capture_output": True, "cwd": "/", **as_user}
    subprocess.run([DEBIAN_PG / "initdb", "-D", data, "-A", "trust", "-U", "postgres"], **run)
    options = f"-p {port} -k '' -c listen_addresses=127.0.0.1"
    pg_ctl = [DEBIAN_PG / "pg_ctl", "-D", data, "-w"]
    subprocess.run([*pg_ctl, "-l", data / "log", "-o", options, "start"], **run)
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/shop"
    engine = None
    try:
        ensure_database(url)
        migrations.upgrade(url)
        engine = create_engine(url)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"ALTER DATABASE shop SET lc_messages = '{TRANSLATED_LOCALE}'"))
        yield PrivateServer(url, engine)
    finally:
        if engine is not None:
            engine.dispose()
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], **{**run, "check": False})
        shutil.rmtree(home, ignore_errors=True)
